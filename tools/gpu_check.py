"""The course's GPU check: every lesson at the `gpu` profile (cells tagged `#| gpu` included), then the training-step
benchmark on CUDA (bf16, MFU against the card's peak), within a time budget; executed notebooks and a JSON summary.

    ./course gpu-check                          # on a CUDA machine: all lessons, budget 540 s, results in gpu-check/
    ./course gpu-check --lessons 04 05 06       # some lessons only
    ./course gpu-check --dry-run                # on any machine: the same steps at the ci profile on the CPU (tested)

Training lessons run first (04, 05, 06, 08, 10, 12), then the others. Each lesson runs in its own process
(`llm-course run NN --profile gpu --save OUT/NN.ipynb`) with the time left as its limit; lessons the budget cannot
reach are listed as skipped, so a partial run still says what it covered. OUT/summary.json holds the device, the
versions, each lesson's status and seconds (and the end of its error), and the benchmark's figures.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINING_FIRST = ["04", "05", "06", "08", "08a", "10", "12"]


def lessons(nbs: Path) -> list[str]:
    "Lesson numbers in running order: the training lessons first, then the rest (00-12, 11a, ...)."
    found = sorted(p.name.split("_")[0] for p in nbs.glob("[0-9][0-9]*_*.ipynb") if int(p.name[:2]) < 90)
    return [n for n in TRAINING_FIRST if n in found] + [n for n in found if n not in TRAINING_FIRST]


def device_info() -> dict:
    import torch
    info = dict(torch=torch.__version__, python=platform.python_version(), cuda=torch.cuda.is_available())
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1), cuda_version=torch.version.cuda)
    else: info["device"] = platform.processor() or platform.machine()
    return info


def run(cmd: list[str], timeout: float, env: dict) -> tuple[str, float, str]:
    "Status ('ok', 'failed', 'timeout'), seconds and the end of the output of one command."
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), env=env, cwd=ROOT)
        status, out = ("ok" if r.returncode == 0 else "failed"), r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        status, out = (
            "timeout",
            (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""),
        )
    return status, round(time.monotonic() - t0, 1), out[-1500:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "gpu-check"), help="folder for executed notebooks and summary.json")
    ap.add_argument("--lessons", nargs="*", help="lesson numbers (default: all)")
    ap.add_argument("--budget", type=float, default=540, help="seconds for everything (default 540: 9 minutes)")
    ap.add_argument("--dry-run", action="store_true", help="ci profile on the CPU: check the script itself anywhere")
    args = ap.parse_args(argv)
    info = device_info()
    if not info["cuda"] and not args.dry_run:
        print("gpu-check: no CUDA device (torch.cuda.is_available() is False). Install the CUDA build of torch "
              "(README, 'On a GPU'), or run with --dry-run to check the script on the CPU.", file=sys.stderr)
        return 2
    profile = "ci" if args.dry_run else "gpu"
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LLM_COURSE_PROFILE=profile, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    t_end = time.monotonic() + args.budget
    todo = args.lessons or lessons(ROOT / "nbs")
    results = []
    for n in todo:
        left = t_end - time.monotonic()
        if left < 20:
            results.append(dict(lesson=n, status="skipped (budget)", seconds=0.0)); continue
        cmd = [sys.executable, "-c", "import sys; from llm_course.cli import main; sys.exit(main())",
               "run", n, "--profile", profile, "--save", str(out / f"{n}.ipynb")]
        status, secs, tail = run(cmd, left - 10, env)
        row = dict(lesson=n, status=status, seconds=secs)
        if status != "ok": row["error"] = tail
        results.append(row)
        print(f"lesson {n:4} {status:8} {secs:7.1f} s", flush=True)
    bench = dict(status="skipped (budget)")
    left = t_end - time.monotonic()
    if left > 20:
        cmd = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--out", str(out / "train_step.json")]
        cmd += ["--quick"] if args.dry_run else ["--device", "cuda", "--bf16"]
        status, secs, tail = run(cmd, left, env)
        bench = dict(status=status, seconds=secs, output=tail)
        if (out / "train_step.json").is_file(): bench["results"] = json.loads((out / "train_step.json").read_text())
        print(f"bench/train_step {status} in {secs:.1f} s", flush=True)
    summary = dict(profile=profile, dry_run=args.dry_run, budget_s=args.budget, date=time.strftime("%Y-%m-%d %H:%M"),
                   **info, lessons=results, train_step=bench,
                   passed=sum(r["status"] == "ok" for r in results), failed=[r["lesson"] for r in results
                                                                            if r["status"] in ("failed", "timeout")])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{summary['passed']} of {len(results)} lessons ran; failed: {summary['failed'] or 'none'}; "
          f"summary in {out / 'summary.json'}")
    return 0 if not summary["failed"] and bench["status"] in ("ok", "skipped (budget)") else 1


if __name__ == "__main__":
    sys.exit(main())
