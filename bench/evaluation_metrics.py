"""Speed of llm_course.evaluation's from-scratch metrics against scikit-learn's, measured in the same run.

Why it matters: `bootstrap_ci` and `paired_bootstrap` call a metric 1,000-2,000 times, so a metric's per-call cost
sets how long a confidence interval takes at the gpu profile (10,000 test examples).
Run: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/evaluation_metrics.py
"""
import json, os, time, timeit, warnings
from pathlib import Path

import numpy as np
import sklearn.metrics as skm

from llm_course import evaluation as ev
from llm_course import uncertainty


def median_ms(fn, number: int, repeat: int = 5) -> float:
    return float(np.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e3)


def main():
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    rows = []
    for n in [500, 10_000]:
        y = rng.integers(0, 5, n); p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, n))
        labels = list(range(5))
        number = 200 if n <= 500 else 40
        pairs = {
            "confusion_matrix": (
                lambda: ev.confusion_matrix(y, p, labels=labels),
                lambda: skm.confusion_matrix(y, p, labels=labels),
            ),
            "f1_score macro": (
                lambda: ev.f1_score(y, p, labels=labels, average="macro", zero_division=0),
                lambda: skm.f1_score(y, p, labels=labels, average="macro", zero_division=0),
            ),
            "precision_recall_fscore_support": (
                lambda: ev.precision_recall_fscore_support(y, p, labels=labels, zero_division=0),
                lambda: skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0),
            ),
            "classification_report": (
                lambda: ev.classification_report(y, p, labels=labels, zero_division=0),
                lambda: skm.classification_report(y, p, labels=labels, zero_division=0),
            ),
            "accuracy_score": (lambda: ev.accuracy_score(y, p), lambda: skm.accuracy_score(y, p)),
        }
        for name, (ours, ref) in pairs.items():
            a, b = median_ms(ours, number), median_ms(ref, number)
            rows.append(dict(n=n, what=name, ours_ms=round(a, 4), sklearn_ms=round(b, 4), ratio=round(a / b, 3)))
    # a whole bootstrap interval at the gpu profile's test size, against 1,000 scikit-learn calls
    n = 10_000
    y = rng.integers(0, 5, n); p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, n))
    t = time.perf_counter()
    uncertainty.bootstrap_ci(lambda a, b: ev.f1_score(a, b, labels=range(5), zero_division=0), y, p, n_boot=1000)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    r = np.random.default_rng(0)
    for _ in range(1000):
        i = r.integers(0, n, n); skm.f1_score(y[i], p[i], labels=range(5), average="macro", zero_division=0)
    ref = time.perf_counter() - t
    rows.append(
        dict(
            n=n,
            what="bootstrap_ci macro-F1, 1000 resamples",
            ours_ms=round(ours * 1e3, 1),
            sklearn_ms=round(ref * 1e3, 1),
            ratio=round(ours / ref, 3),
        )
    )
    print(f"{'n':>6}  {'what':<45} {'ours ms':>10} {'sklearn ms':>11} {'ours/sklearn':>13}")
    for row in rows:
        print(f"{row['n']:>6}  {row['what']:<45} {row['ours_ms']:>10} {row['sklearn_ms']:>11} {row['ratio']:>13}")
    out = Path(__file__).parent / "results" / "evaluation_metrics.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(dict(rows=rows, load=os.getloadavg(), threads=os.environ.get("OMP_NUM_THREADS")), indent=1)
    )
    print(f"saved {out}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
