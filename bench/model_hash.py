"""What does checking a saved classifier's SHA-256 hashes cost? `load_classifier` with and without the check, one run.

Saves a classifier on all-MiniLM-L6-v2 (about 90 MB of safetensors plus the head and tokenizer files) with
`save_classifier`, which writes `manifest.json` (size and SHA-256 of every file), then alternates two kinds of load
in this process: `load_classifier` as shipped (it calls `verify_model_files` first) and the same load with the check
replaced by a no-op (the reference, 1.00x), each alone and followed by a prediction of 8 texts (transformers maps the
safetensors lazily, so a bare load reads few of the weights; the first prediction reads them all). It also times
`verify_model_files` alone and `check_model_dir` (what
`llm-course predict` and `serve` run before loading: header checks plus the same hashes). The files are in the page
cache after the first round, as they are for a model loaded twice; a model read from a cold disk pays the read once
either way. Process CPU seconds are reported next to wall seconds: on a shared machine compare CPU, and the ratios
within this run.

    OMP_NUM_THREADS=1 python bench/model_hash.py              # 5 rounds
    OMP_NUM_THREADS=1 python bench/model_hash.py --rounds 9
"""
import argparse, datetime, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

from llm_course import assets, classifier, heads   # assets first: it sets the hub's offline switches
from llm_course.cli import check_model_dir


def timed(fn) -> tuple[float, float]:
    "Wall and process CPU seconds of one call."
    t0, c0 = time.perf_counter(), time.process_time(); fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of each load")
    a = ap.parse_args(argv)
    import transformers; transformers.logging.disable_progress_bar()
    real, texts = classifier.verify_model_files, ["a short text to classify"] * 8
    times = {k: [] for k in ("load, no check", "load with the check", "load + predict 8 texts, no check",
                             "load + predict 8 texts, with the check", "verify_model_files alone", "check_model_dir")}
    with tempfile.TemporaryDirectory() as tmp:
        clf = heads.SequenceClassifier(assets.load_minilm(), 3, label_names=["a", "b", "c"])
        path = classifier.save_classifier(clf, assets.load_minilm_tokenizer(), Path(tmp) / "clf")
        size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
        classifier.load_classifier(path)   # warm-up: imports, page cache
        for _ in range(a.rounds):
            classifier.verify_model_files = lambda p: True
            try:
                times["load, no check"].append(timed(lambda: classifier.load_classifier(path)))
                times["load + predict 8 texts, no check"].append(
                    timed(lambda: classifier.load_classifier(path).predict(texts))
                )
            finally: classifier.verify_model_files = real
            times["load with the check"].append(timed(lambda: classifier.load_classifier(path)))
            times["load + predict 8 texts, with the check"].append(
                timed(lambda: classifier.load_classifier(path).predict(texts))
            )
            times["verify_model_files alone"].append(timed(lambda: real(path)))
            times["check_model_dir"].append(timed(lambda: check_model_dir(path)))
    ref = statistics.median(c for _, c in times["load, no check"])
    rows = {
        k: dict(
            wall_s=round(statistics.median(w for w, _ in v), 3),
            cpu_s=round(statistics.median(c for _, c in v), 3),
            vs_load_cpu=round(statistics.median(c for _, c in v) / ref, 2),
        )
        for k, v in times.items()
    }
    cpu = {k: r["cpu_s"] for k, r in rows.items()}
    added = dict(
        load=round(cpu["load with the check"] / cpu["load, no check"], 2),
        load_and_predict=round(
            cpu["load + predict 8 texts, with the check"] / cpu["load + predict 8 texts, no check"], 2
        ),
    )
    res = dict(
        rows=rows,
        with_over_without_cpu=added,
        folder_mb=round(size_mb, 1),
        rounds=a.rounds,
        threads=os.environ.get("OMP_NUM_THREADS", "default"),
        load_avg=round(os.getloadavg()[0], 1),
        cores=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        date=datetime.date.today().isoformat(),
    )
    print(f"saved classifier on MiniLM: {size_mb:.1f} MB; medians of {a.rounds} rounds; load average {res['load_avg']}")
    print("| step | wall s | CPU s | CPU / load without the check |\n|---|---:|---:|---:|")
    for k, r in rows.items(): print(f"| {k} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['vs_load_cpu']:.2f}x |")
    print(f"with the check / without, CPU: load {added['load']:.2f}x; load + predict {added['load_and_predict']:.2f}x "
          "(a load maps the weights lazily; the first predict reads them)")
    out = Path(__file__).parent / "results" / "model_hash.json"
    out.parent.mkdir(exist_ok=True); out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
