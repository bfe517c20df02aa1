"""Train the course checkpoints, a small GPT and a small BERT-style encoder, reproducibly and save them into the package.

    OMP_NUM_THREADS=2 python scripts/make_checkpoints.py            # both, cpu profile, seed 0 -> llm_course/checkpoints/
    python scripts/make_checkpoints.py --only gpt --profile ci --out /tmp/ckpts   # a quick try

Each checkpoint folder gets model.safetensors, config.json, tokenizer.json and metadata.json; the metadata records the
validation loss measured at the end of training on the held-out articles (joined by <|endoftext|>, as in training; for the
encoder every scored position is masked), which tests/test_pretraining.py recomputes.
Load them with `llm_course.pretraining.load_checkpoint_model(name)`.
"""
import argparse, json, os, platform, time
from pathlib import Path

import torch

from llm_course.core import get_profile, set_seed
from llm_course.pretraining import CHECKPOINTS_DIR, KINDS, heldout_data, pretrain, save_model_checkpoint, token_nll

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="run profile for the sizes (default: cpu, the shipped checkpoints)")
    ap.add_argument("--seed", type=int, default=0, help="seeds weights, data order and validation masks")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the profile's max_steps)")
    ap.add_argument("--only", choices=KINDS, action="append", help="build only this model (repeatable)")
    ap.add_argument("--out", type=Path, default=CHECKPOINTS_DIR, help=f"parent folder (default: {CHECKPOINTS_DIR})")
    args = ap.parse_args(argv)
    p = get_profile(args.profile)
    valid_chars = p.corpus_chars // 10
    for kind in args.only or KINDS:
        t0 = time.perf_counter()
        run = pretrain(kind, p, max_steps=args.steps, seed=args.seed, valid_chars=valid_chars, device=torch.device("cpu"))
        seconds = time.perf_counter() - t0
        nll, n = token_nll(run.model, heldout_data(run.model, valid_chars, args.seed, tokenizer=run.tokenizer))
        meta = dict(name=kind, model_class=type(run.model).__name__, profile=p.name, steps=run.history.steps[-1], seed=args.seed,
                    valid_loss=nll / n, valid_tokens=n, valid_chars=valid_chars,
                    valid_text="pretraining_ids(tokenizer, valid_chars, 'valid'): held-out articles joined by <|endoftext|>",
                    objective="causal LM (next token)" if kind == "gpt" else "masked LM (15% chosen, 80/10/10)",
                    valid_masks=None if kind == "gpt" else "every scored position [MASK] (fixed by the seed)",
                    num_params=sum(p_.numel() for p_ in run.model.parameters()), train_chars=p.corpus_chars, batch_size=p.batch_size,
                    lr=p.lr, train_seconds=round(seconds, 1), threads=torch.get_num_threads(), torch=torch.__version__,
                    machine=f"{platform.machine()} {os.cpu_count()} cpus", built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    valid_curve=[[e["step"], round(e["loss"], 5)] for e in run.history.evals])
        path = save_model_checkpoint(run.model, run.tokenizer, args.out / kind, meta)
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(f"{kind}: {meta['steps']} steps in {seconds:.0f} s, valid loss {meta['valid_loss']:.4f} on {n:,} tokens -> {path} ({size:.1f} MB)", flush=True)

if __name__ == "__main__":
    main()
