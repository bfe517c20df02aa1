"""How long does each lesson take at a profile, the first time (empty cache) and after (warm cache)?

For each lesson: `llm-course run NN --profile P` in a fresh process with `LLM_COURSE_CACHE` pointing at an empty
temporary folder (cold: every conversion, tokenizer and checkpoint the lesson needs is built), then the same run
again with that folder kept (warm). Wall and CPU seconds of the child process are recorded, with the 1-minute load
average before and after each run: on a shared machine compare warm/cold within one lesson's row, and read the
absolute seconds as an upper bound when the load was above the core count. On a busy machine, measure with one thread
at top priority (`OMP_NUM_THREADS=1 nice -n -19`, as root, with the kernel's autogroup scheduling off so that nice
counts across sessions): the run then gets one whole core, its wall time is close to its CPU time, and a lesson that
takes at most 300 s on one thread takes at most that on a two-core laptop. Results are merged into
bench/results/lessons_cold_warm.json, one entry per lesson and profile (`NN@cpu`: one thread; a run with more threads,
or with OMP_NUM_THREADS unset, is kept apart as `NN@cpu@threads=N`), so lessons can be measured one at a time:

    python bench/lessons_cold_warm.py 05 09               # two lessons at cpu
    python bench/lessons_cold_warm.py --all --timeout 900   # every lesson (takes long)
    python bench/lessons_cold_warm.py --cold-only 06         # only the first run (keeps a recorded warm row)
    python bench/lessons_cold_warm.py --show                 # the table of what was recorded
    python bench/lessons_cold_warm.py --warm-cache DIR 06    # only a warm run, on a cache a cpu run already filled

Several instances may run at once (one per core): each merges its rows into the results file under a lock.
"""
import argparse, datetime, fcntl, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "lessons_cold_warm.json"
sys.path.insert(0, str(ROOT / "tools"))
from workspace import lesson_paths  # noqa: E402


def run_once(lesson: str, profile: str, cache: Path, timeout: int) -> dict:
    "One lesson run in a fresh process: wall and CPU seconds, exit status, load before and after."
    env = {**os.environ, "LLM_COURSE_CACHE": str(cache), "LLM_COURSE_PROFILE": profile, "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(Path(sys.executable).parent / "llm-course"), "run", lesson, "--profile", profile]
    load0, c0 = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        status, tail = r.returncode, (r.stdout + r.stderr)[-600:]
    except subprocess.TimeoutExpired:
        status, tail = "timeout", f"stopped after {timeout} s"
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 1), "cpu_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1),
            "status": status, "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1),
            **({"tail": tail} if status != 0 else {})}


def measure(lesson: str, profile: str, timeout: int, warm: bool = True, warm_cache: Path | None = None) -> dict:
    "Cold (empty cache) then, unless `warm` is False, warm (same cache) run; with `warm_cache` only a warm run there."
    if warm_cache is not None: cold, warm = None, run_once(lesson, profile, warm_cache, timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="llm_course_cold_") as cache:
            cold = run_once(lesson, profile, Path(cache), timeout)
            warm = run_once(lesson, profile, Path(cache), timeout) if warm and cold["status"] == 0 else None
    return {"cold": cold, "warm": warm, "cores": os.cpu_count(),
            "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "machine": platform.processor() or platform.machine(), "date": datetime.date.today().isoformat(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip()}


def row_key(lesson: str, profile: str) -> str:
    "The results' key: `lesson@profile` for one thread, with `@threads=N` appended for any other setting."
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return f"{lesson}@{profile}" + ("" if threads == "1" else f"@threads={threads}")


def record(key: str, row: dict) -> dict:
    "Merge one row into the results file under an exclusive lock (re-read first: another instance may have written)."
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        old = results.get(key, {})
        if row["cold"] is None: row["cold"], row["cold_commit"] = old["cold"], old.get("cold_commit", old["commit"])
        elif row["warm"] is None and old.get("warm"):
            row["warm"], row["warm_commit"] = old["warm"], old.get("warm_commit", old.get("commit"))
        results[key] = row
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def show(results: dict) -> str:
    "The recorded runs as a markdown table."
    rows = ["| lesson | profile | threads | cold wall s | warm wall s | cold CPU s | warm CPU s | load (cold run) "
            "| status | date |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(results):
        r = results[key]; lesson, profile = key.split("@")[:2]; c, w = r["cold"], r["warm"] or {}
        rows.append(f"| {lesson} | {profile} | {r.get('threads', '-')} | {c['wall_s']:.0f} | {w.get('wall_s', '-')} | "
                    f"{c['cpu_s']:.0f} | "
                    f"{w.get('cpu_s', '-')} | {c['load_before']}-{c['load_after']} | "
                    f"{c['status']}/{w.get('status', '-')} | {r['date']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lessons", nargs="*", help="lesson numbers or names (e.g. 05 09_prompting)")
    ap.add_argument("--all", action="store_true", help="every lesson")
    ap.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"])
    ap.add_argument("--timeout", type=int, default=1200, help="seconds before one run is stopped (recorded as timeout)")
    ap.add_argument("--cold-only", action="store_true", help="skip the warm run (a previous warm row is kept)")
    ap.add_argument("--warm-cache", type=Path, default=None,
                    help="only a warm run, with this cache (one a run at this profile filled); the cold row is kept")
    ap.add_argument("--show", action="store_true", help="print the recorded table and exit")
    a = ap.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if a.show or not (a.lessons or a.all):
        print(show(results)); return 0
    names = [p.stem for p in lesson_paths(ROOT / "nbs")]
    todo = names if a.all else [next((n for n in names if n == x or n.split("_")[0] == x), x) for x in a.lessons]
    bad = [x for x in todo if x not in names]
    if bad: ap.error(f"unknown lesson(s) {bad}; lessons: {', '.join(names)}")
    if a.warm_cache is not None:
        if not a.warm_cache.is_dir(): ap.error(f"--warm-cache {a.warm_cache} is not a folder: give a filled cache")
        missing = [x for x in todo if row_key(x, a.profile) not in results]
        if missing: ap.error(f"no cold row recorded for {missing}: run them without --warm-cache first")
    for name in todo:
        print(f"[bench] {name} at {a.profile}: {'warm on ' + str(a.warm_cache) if a.warm_cache else 'cold, then warm'}"
              " ...", file=sys.stderr, flush=True)
        r = measure(name, a.profile, a.timeout, warm=not a.cold_only, warm_cache=a.warm_cache)
        if a.warm_cache is not None: r["warm_cache"] = str(a.warm_cache)
        results = record(row_key(name, a.profile), r)   # after each lesson: resumable
        print(f"[bench] {name}: cold {r['cold']['wall_s']} s ({r['cold']['status']}), warm "
              f"{r['warm']['wall_s'] if r['warm'] else '-'} s, load {r['cold']['load_before']}", file=sys.stderr)
    print(show(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
