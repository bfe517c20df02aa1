"""Wall time for the cpu-profile pretraining run to reach the validation loss its shipped checkpoint states.

Runs `llm_course.pretraining.pretrain(kind, get_profile("cpu"), seed=<the checkpoint's seed>)`, the same run as
scripts/make_checkpoints.py, evaluates the held-out loss every `--eval-every` steps and stops as soon as it is within
0.002 of (or below) the loss in llm_course/checkpoints/<kind>/metadata.json. Also reports when it first came within 0.5,
0.2,
0.1 and 0.05 nats of that loss, as a fraction of the time to reach it (ratios within one run). Training time
excludes evaluation: the time of one evaluation, measured at the end, times the number of evaluations, is subtracted.

    OMP_NUM_THREADS=2 python bench/pretrain_time.py               # gpt (several minutes)
    OMP_NUM_THREADS=2 python bench/pretrain_time.py --kind encoder
"""
import argparse, json, os, platform, time
from pathlib import Path

import torch

from llm_course.core import get_profile
from llm_course.pretraining import load_checkpoint_model, pretrain, valid_loss
from llm_course.training import Callback

MARGINS = (0.5, 0.2, 0.1, 0.05, 0.0)
# "reached" means within this of the stated loss: thread counts change float rounding (tests use the same tolerance)
TOL = 2e-3


class StopAtLoss(Callback):
    "Record (step, seconds, loss) at each evaluation; stop once the loss is <= target."
    def __init__(self, target): self.target, self.rows, self.t0 = target, [], None
    def on_train_begin(self, state): self.t0 = time.perf_counter()
    def on_eval(self, state, metrics):
        self.rows.append(dict(step=state.step, wall_s=time.perf_counter() - self.t0, loss=metrics["loss"]))
        print(
            f"step {state.step}: valid loss {metrics['loss']:.4f} after {self.rows[-1]['wall_s']:.0f} s (wall, "
            "evaluations included)",
            flush=True,
        )
        if metrics["loss"] <= self.target + TOL: state.stop = "reached the stated validation loss"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("gpt", "encoder"), default="gpt")
    ap.add_argument("--eval-every", type=int, default=50)
    args = ap.parse_args(argv)
    shipped = load_checkpoint_model(args.kind)
    meta, p = shipped.metadata, get_profile(shipped.metadata["profile"])
    target = meta["valid_loss"]
    stop = StopAtLoss(target)
    t0 = time.perf_counter()
    run = pretrain(
        args.kind,
        p,
        max_steps=meta["steps"],
        seed=meta["seed"],
        valid_chars=meta["valid_chars"],
        progress=False,
        device=torch.device("cpu"),
        eval_every=args.eval_every,
        callbacks=[stop],
    )
    total = time.perf_counter() - t0
    te = time.perf_counter(); valid_loss(run.model, run.valid_data, p.batch_size); eval_s = time.perf_counter() - te
    for i, r in enumerate(stop.rows): r["train_s"] = r["wall_s"] - (i + 1) * eval_s   # evaluation i+1 ended at wall_s
    reached = [r for r in stop.rows if r["loss"] <= target + TOL]
    end = reached[0] if reached else None
    print(
        f"{args.kind} at the `{p.name}` profile ({meta['num_params']:,} parameters, batch {p.batch_size} x "
        f"{p.block_size} tokens), "
        f"seed {meta['seed']}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"target: the stated validation loss {target:.4f} (after {meta['steps']} steps; the checkpoint run took "
        f"{meta['train_seconds']:.0f} s "
        f"with evaluations every {p.eval_every} steps)"
    )
    print("| within | step | train s | fraction of time to target |\n|---|---|---|---|")
    rows = []
    for m in MARGINS:
        hit = next((r for r in stop.rows if r["loss"] <= target + max(m, TOL)), None)
        if hit is None: print(f"| {m:.2f} | not reached | | |"); continue
        frac = hit["train_s"] / end["train_s"] if end else float("nan")
        rows.append(dict(margin=m, step=hit["step"], train_s=hit["train_s"], loss=hit["loss"], fraction=frac))
        print(f"| {m:.2f} | {hit['step']} | {hit['train_s']:.0f} | {frac:.2f} |")
    if end:
        print(
            f"reached {end['loss']:.4f} (within {TOL} of {target:.4f}) at step {end['step']} after "
            f"{end['train_s']:.0f} s of training "
            f"({end['step'] * p.batch_size * p.block_size / end['train_s']:,.0f} tokens/s; "
            f"one evaluation {eval_s:.1f} s)"
        )
    else: print(f"did not reach {target:.4f} in {meta['steps']} steps (last {stop.rows[-1]['loss']:.4f})")
    out = dict(
        bench="pretrain_time",
        kind=args.kind,
        profile=p.name,
        seed=meta["seed"],
        target=target,
        reached=bool(end),
        steps_to_target=end and end["step"],
        train_s_to_target=end and end["train_s"],
        wall_s_total=total,
        eval_s=eval_s,
        eval_every=args.eval_every,
        milestones=rows,
        curve=stop.rows,
        threads=torch.get_num_threads(),
        load_avg=os.getloadavg(),
        torch=torch.__version__,
        machine=f"{platform.machine()} {os.cpu_count()} cpus",
        when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    path = Path(__file__).parent / "results" / f"pretrain_time{'' if args.kind == 'gpt' else '_' + args.kind}.json"
    path.parent.mkdir(exist_ok=True); path.write_text(json.dumps(out, indent=1))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
