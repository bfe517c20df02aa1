"""Generation speed of our GPT with and without the KV cache (`llm_course.generation.generate`).

Batch 1, greedy decoding, a 8-token prompt, the GPT at the `cpu` profile's size (the shipped `gpt` checkpoint when
present, else the same architecture with random weights: speed does not depend on the weights). The two modes are
timed in alternation, several rounds, and the median is kept, so machine noise hits both alike. Both modes produce
the same tokens (checked here too). Target: the cache >= 3x faster at 256 new tokens.

With block_size 64, the window is full after 64 tokens: from then on `generate` re-reads the last 32 tokens every 32
steps (see the lesson), and the no-cache run never recomputes more than 64 tokens, which caps the gain. The same
width and depth with a context long enough for all 256 tokens (random weights) shows the gain without that cap.

    OMP_NUM_THREADS=1 python bench/generation.py             # 64, 128, 256 new tokens, 5 rounds
    python bench/generation.py --quick                        # 64 new tokens, 2 rounds
    python bench/generation.py --sweep 16,32,64,128,256,512   # also lesson 05's curve: speed-up against context length

`--sweep` runs `llm_course.generation.kv_cache_speedups` (the function notebook 05b plots) with `--rounds` runs per
setting.
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch

from llm_course.core import get_profile, set_seed
from llm_course.generation import generate, kv_cache_speedups
from llm_course.pretraining import list_checkpoints, load_checkpoint_model
from llm_course.transformer import GPT, GPTConfig


def models_under_test(long_block: int):
    "The cpu-profile GPT (block_size 64), and the same width and depth with a longer context (random weights)."
    if "gpt" in list_checkpoints(): yield load_checkpoint_model("gpt"), "shipped checkpoint `gpt`"
    else:
        set_seed(0); yield GPT(GPTConfig.from_profile(get_profile("cpu"))).eval(), "random weights, cpu-profile sizes"
    if long_block:
        set_seed(0)
        yield (
            GPT(GPTConfig.from_profile(get_profile("cpu"), block_size=long_block)).eval(),
            f"random weights, cpu-profile sizes but block_size {long_block}",
        )


def seconds(model, prompt, n, use_cache):
    "Wall and CPU seconds of one generation (CPU time is the steadier figure on a shared machine with 1 thread)."
    t0, c0 = time.perf_counter(), time.process_time()
    out = generate(model, prompt, n, temperature=0, use_cache=use_cache)
    return (time.perf_counter() - t0, time.process_time() - c0), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 new tokens, 2 rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--long-block",
        type=int,
        default=320,
        help="also time this context length (0: skip); 320 holds 8 + 256 tokens without a window shift",
    )
    ap.add_argument(
        "--sweep", default="", help="comma-separated context lengths for the speed-up curve of lesson 05 (empty: skip)"
    )
    args = ap.parse_args(argv)
    lengths, rounds = ([64], 2) if args.quick else ([64, 128, 256], args.rounds)
    rows, models = [], []
    for model, source in models_under_test(0 if args.quick else args.long_block):
        c = model.config
        models.append(
            dict(
                n_layer=c.n_layer,
                n_head=c.n_head,
                n_embd=c.n_embd,
                block_size=c.block_size,
                vocab_size=c.vocab_size,
                source=source,
            )
        )
        prompt = torch.randint(5, c.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
        seconds(model, prompt, 16, True); seconds(model, prompt, 16, False)          # warm-up
        for n in lengths:
            times, cpu, outs = {True: [], False: []}, {True: [], False: []}, {}
            for _ in range(rounds):
                for use_cache in (True, False):
                    (w, c_), outs[use_cache] = seconds(model, prompt, n, use_cache)
                    times[use_cache].append(w); cpu[use_cache].append(c_)
            med = {k: statistics.median(times[k]) for k in (True, False)}
            medc = {k: statistics.median(cpu[k]) for k in (True, False)}
            rows.append(
                dict(
                    block_size=c.block_size,
                    source=source,
                    new_tokens=n,
                    cache_tok_s=n / med[True],
                    no_cache_tok_s=n / med[False],
                    speedup=med[False] / med[True],
                    cache_tok_cpu_s=n / medc[True],
                    no_cache_tok_cpu_s=n / medc[False],
                    speedup_cpu=medc[False] / medc[True],
                    same_tokens=torch.equal(outs[True], outs[False]),
                    cache_s=times[True],
                    no_cache_s=times[False],
                    cache_cpu_s=cpu[True],
                    no_cache_cpu_s=cpu[False],
                )
            )
    c = models[0]
    print(
        f"GPT {c['n_layer']} layers x {c['n_embd']}, {c['n_head']} heads, vocab {c['vocab_size']}; batch 1, greedy, "
        "8-token prompt, "
        f"{torch.get_num_threads()} thread(s), median of {rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| model | new tokens | no cache (tok per CPU s) | KV cache (tok per CPU s) | speed-up (CPU time) | speed-up "
        "(wall) | same tokens |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| block_size {r['block_size']} ({r['source']}) | {r['new_tokens']} | {r['no_cache_tok_cpu_s']:,.0f} | "
            f"{r['cache_tok_cpu_s']:,.0f} | "
            f"{r['speedup_cpu']:.2f}x | {r['speedup']:.2f}x | {r['same_tokens']} |"
        )
    sweep = []
    if args.sweep:
        sweep = kv_cache_speedups(
            GPTConfig.from_profile(get_profile("cpu")),
            [int(t) for t in args.sweep.split(",")],
            reps=rounds,
            device=torch.device("cpu"),
        )
        print("| context (tokens generated) | KV cache (tok/s) | no cache (tok/s) | speed-up |\n|---|---|---|---|")
        for r in sweep:
            print(f"| {r['context']} | {r['cache_tok_s']:,.0f} | {r['no_cache_tok_s']:,.0f} | {r['speedup']:.2f}x |")
    out = dict(
        bench="generation",
        models=models,
        context_sweep=sweep,
        threads=torch.get_num_threads(),
        rounds=rounds,
        torch=torch.__version__,
        machine=f"{platform.machine()} {os.cpu_count()} cpus",
        load_avg=os.getloadavg(),
        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        rows=rows,
    )
    path = Path(__file__).parent / "results" / "generation.json"
    path.parent.mkdir(exist_ok=True); path.write_text(json.dumps(out, indent=1))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
