"""How much does `llm_course.training.fit` cost over a bare PyTorch loop? Tokens per second, same model and data.

Both loops train the same tiny GPT-2 (same initial weights) on the same byte-level BBC batches (the same `Batches`
iterator, so data loading is equal), with AdamW, warm-up + cosine and gradient clipping at 1.0. `fit` runs as a
lesson runs it: tqdm progress bar, loss/lr/grad-norm history, NaN check, Ctrl-C guard, RNG snapshot per step;
evaluation and checkpoints are off. The bare loop does forward, backward, clip, step, schedule, zero_grad and
nothing else (not even `loss.item()`). Rounds alternate bare/fit so that load from other processes hits both alike;
time is the process's CPU time (one thread, so other processes on a shared machine disturb it far less than the
wall clock), and the ratio reported is best-of-rounds fit tok/s / best-of-rounds bare tok/s (target >= 0.95 on the
GPT-2 sizes), with the per-round ratios and the wall-clock ratios alongside to show the noise. A first row with a
one-layer linear model (a step of about a
millisecond) shows the loop's fixed cost per step in microseconds.

    OMP_NUM_THREADS=1 python bench/loop_overhead.py            # ci and cpu profile sizes
    OMP_NUM_THREADS=1 python bench/loop_overhead.py --quick    # fewer steps
"""
import argparse, itertools, json, os, platform, statistics, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
import transformers
from torch import nn

from llm_course.core import get_profile
from llm_course.training import (Batches, TrainConfig, byte_lm_data, compute_loss, fit, make_optimizer, make_scheduler,
                                 read_corpus)
from llm_course.testing import tiny_gpt2


def epochs(loader):
    "The loader's batches, epoch after epoch."
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def bare_loop(model, loader, cfg):
    "The reference: what a minimal hand-written PyTorch loop does per step."
    opt = make_optimizer(model, cfg); sched = make_scheduler(opt, cfg)
    batches = epochs(loader)
    model.train()
    for _ in range(cfg.max_steps):
        loss = compute_loss(model, next(batches))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)


class Linear(nn.Module):
    "The smallest model: a step costs about a millisecond, so the loop's fixed cost per step shows."
    def __init__(self): super().__init__(); self.lin = nn.Linear(8, 8)
    def forward(self, x, y): return None, ((self.lin(x) - y) ** 2).mean()


def bench_size(name, make_model, data, batch_size, tokens_per_step, steps, rounds, lr=1e-3):
    cfg = TrainConfig(
        lr=lr, max_steps=steps, warmup_steps=steps // 10, batch_size=batch_size, progress=True, plot=False, seed=0
    )
    init = make_model().state_dict()
    def fresh():
        m = make_model(); m.load_state_dict(init); return m
    runs = {"bare": lambda: bare_loop(fresh(), Batches(data, batch_size, seed=0), cfg),
            "fit": lambda: fit(fresh(), Batches(data, batch_size, seed=0), config=cfg)}
    warm = TrainConfig(**{**cfg.__dict__, "max_steps": 3, "warmup_steps": 0, "progress": False})
    bare_loop(fresh(), Batches(data, batch_size, seed=0), warm); fit(fresh(), data, config=warm)   # warm-up
    cpu, wall = {k: [] for k in runs}, {k: [] for k in runs}
    for r in range(rounds):                                              # alternate, so background load hits both
        for k in (("bare", "fit") if r % 2 == 0 else ("fit", "bare")):
            w0, c0 = time.perf_counter(), time.process_time()
            runs[k]()
            cpu[k].append(time.process_time() - c0); wall[k].append(time.perf_counter() - w0)
    best = {k: min(v) for k, v in cpu.items()}                           # least disturbed run of each
    paired = [b / f for b, f in zip(cpu["bare"], cpu["fit"])]            # = fit tok/s / bare tok/s, per round
    tokens = steps * tokens_per_step
    return dict(
        size=name,
        steps=steps,
        rounds=rounds,
        tokens_per_step=tokens_per_step,
        bare_ms_per_step=1e3 * best["bare"] / steps,
        fit_ms_per_step=1e3 * best["fit"] / steps,
        overhead_us_per_step=1e6 * (best["fit"] - best["bare"]) / steps,
        bare_tok_s=tokens / best["bare"],
        fit_tok_s=tokens / best["fit"],
        ratio=best["bare"] / best["fit"],
        ratio_paired_median=statistics.median(paired),
        ratio_paired_min=min(paired),
        ratio_paired_max=max(paired),
        ratio_wall_best=min(wall["bare"]) / min(wall["fit"]),
        ratio_wall_paired_median=statistics.median(b / f for b, f in zip(wall["bare"], wall["fit"])),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "loop_overhead.json"))
    args = ap.parse_args()
    q = args.quick
    text = read_corpus(300_000)
    torch.manual_seed(0)
    lin_data = [(torch.randn(8), torch.randn(8)) for _ in range(4096)]
    rows = [bench_size("linear 8x8", Linear, lin_data, 16, 16, 100 if q else 200, 4 if q else 20)]
    for pname, steps, rounds in [("ci", 20 if q else 40, 4 if q else 20), ("cpu", 4 if q else 6, 4 if q else 8)]:
        p = get_profile(pname)
        make = lambda p=p: tiny_gpt2(p.block_size, p.n_layer, p.n_head, p.n_embd, seed=0)
        rows.append(bench_size(f"GPT-2 {p.n_layer}x{p.n_embd} ({pname})", make, byte_lm_data(text, p.block_size),
                               p.batch_size, p.batch_size * p.block_size, steps, rounds, lr=p.lr))
        rows[-1]["batch"] = f"{p.batch_size} x {p.block_size}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores, load average {load}"
    )
    print("CPU time of this process (1 thread), best of the rounds; wall-clock ratios in the last column")
    print(
        f"{'model':<24} {'bare ms/step':>13} {'fit ms/step':>12} {'fit - bare':>11} {'bare tok/s':>11} "
        f"{'fit tok/s':>10} "
        f"{'fit / bare':>10} {'per round: median (min-max)':>29} {'wall: best, median':>19}"
    )
    for r in rows:
        print(
            f"{r['size']:<24} {r['bare_ms_per_step']:>13.2f} {r['fit_ms_per_step']:>12.2f} "
            f"{r['overhead_us_per_step']:>8.0f} us "
            f"{r['bare_tok_s']:>11,.0f} {r['fit_tok_s']:>10,.0f} {r['ratio']:>9.3f}x "
            f"{r['ratio_paired_median']:>13.3f} ({r['ratio_paired_min']:.3f}-{r['ratio_paired_max']:.3f}) "
            f"{r['ratio_wall_best']:>10.3f}, {r['ratio_wall_paired_median']:.3f}"
        )
    ok = all(r["ratio"] >= 0.95 for r in rows[1:])
    print("target fit >= 0.95x bare on the GPT-2 sizes (best-of-rounds ratio):", "met" if ok else "NOT met")
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                bench="loop_overhead",
                torch=torch.__version__,
                transformers=transformers.__version__,
                threads=torch.get_num_threads(),
                cores=os.cpu_count(),
                load_average=load,
                python=platform.python_version(),
                quick=q,
                target=0.95,
                met=ok,
                rows=rows,
            ),
            indent=1,
        )
    )
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main())
