"""Which default should `llm-course finetune` use? Head only, LoRA (rank, learning rate) and full fine-tuning of MiniLM,
each given the same CPU time, on the course's three data sets (BBC topics, tweet sentiment, customer-service intents).

Every run goes through `finetune_csv`, the function behind `llm-course finetune`, on CSV files written from the
course's splits. Two short calibration runs (2 and 6 steps) measure each recipe's CPU seconds per step; the real run gets
`budget / seconds per step` steps. Test macro-F1 with a bootstrap 95% interval (2,000 resamples); the best recipe per
data set, and the recipe whose worst gap to the best is smallest (the safest default), are printed.

    OMP_NUM_THREADS=2 python bench/recipe.py                   # 120 CPU-s per run, 3 data sets x 5 recipes
    python bench/recipe.py --budget 20 --datasets intents      # quick look

Results: bench/results/recipe.json. CPU time (process_time) is used, so a loaded machine stretches the wall time but
not the budget.
"""
import argparse, csv, json, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import numpy as np

from llm_course.data import load_bbc, load_intents, load_tweets, split_data
from llm_course.heads import finetune_csv, load_classifier
from llm_course.evaluation import f1_score

RECIPES = {   # name -> finetune_csv settings
    "head only": dict(method="head", lr=2e-3),
    "LoRA r=8, lr 5e-4 (today's default)": dict(method="lora", lr=5e-4),
    "LoRA r=8, lr 2e-3": dict(method="lora", lr=2e-3),
    "full, lr 5e-5": dict(method="full", lr=5e-5),
    "full, lr 1e-4": dict(method="full", lr=1e-4),
}


def data(name: str, n_train: int, n_test: int):
    d = {"bbc": load_bbc, "tweets": load_tweets, "intents": load_intents}[name]()
    tr, _, te = split_data(d, valid=0.1, test=0.2, seed=0)
    return tr.sample(min(n_train, len(tr)), seed=0), te.sample(min(n_test, len(te)), seed=0)


def write(path: Path, d) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["text", "label"])
        w.writerows((t, d.label_names[y]) for t, y in zip(d.texts, d.labels))
    return path


def run(train_csv, test, out, steps, settings):
    r = finetune_csv(train_csv, None, out, max_steps=steps, batch_size=16, max_length=128, progress=False, **settings)
    cpu = r["seconds"]   # wall seconds of the training loop itself
    pred = load_classifier(out).predict(test.texts)
    k = len(test.label_names)
    y, p = np.array(test.labels), np.array(pred.ids)
    f1 = lambda a, b: f1_score(a, b, labels=list(range(k)), average="macro", zero_division=0)
    lo, hi = _ci(f1, y, p)
    return dict(steps=r["steps"], train_s=round(cpu, 1), trainable=r["trainable"], macro_f1=round(f1(y, p), 4),
                ci=[round(lo, 4), round(hi, 4)])


def _ci(f1, y, p, n=2000):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), (n, len(y)))
    vals = np.array([f1(y[i], p[i]) for i in idx])
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=120, help="CPU seconds of training per run")
    ap.add_argument("--datasets", nargs="*", default=["bbc", "tweets", "intents"])
    ap.add_argument("--n-train", type=int, default=1000); ap.add_argument("--n-test", type=int, default=600)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ds in args.datasets:
            train, test = data(ds, args.n_train, args.n_test)
            train_csv = write(tmp / f"{ds}.csv", train)
            results[ds] = {}
            for name, settings in RECIPES.items():
                cpu = []
                for n in (2, 6):   # the difference of two runs: CPU seconds per step without loading and saving
                    c0 = time.process_time()
                    finetune_csv(train_csv, None, tmp / f"calib{n}", max_steps=n, batch_size=16, max_length=128,
                                 progress=False, **settings)
                    cpu.append(time.process_time() - c0)
                per_step = max((cpu[1] - cpu[0]) / 4, 1e-3)
                steps = max(3, int(args.budget / per_step))
                r = run(train_csv, test, tmp / f"{ds}-{len(results[ds])}", steps, settings)
                results[ds][name] = r
                print(f"{ds:8} {name:38} {r['steps']:5d} steps {r['train_s']:6.1f} s training  macro-F1 {r['macro_f1']:.3f} "
                      f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", flush=True)
    gaps = {n: max(max(v["macro_f1"] for v in results[d].values()) - results[d][n]["macro_f1"] for d in results)
            for n in RECIPES}
    safest = min(gaps, key=gaps.get)
    print("\nworst gap to the best recipe, over the data sets:")
    for n, g in sorted(gaps.items(), key=lambda x: x[1]): print(f"  {n:38} {g:+.3f}")
    print(f"safest default at {args.budget:g} CPU-s per run: {safest}")
    out = Path(__file__).parent / "results" / "recipe.json"
    out.write_text(json.dumps(dict(budget_cpu_s=args.budget, n_train=args.n_train, n_test=args.n_test, results=results,
                                   worst_gap=gaps, safest=safest, load=os.getloadavg()[0],
                                   date=time.strftime("%Y-%m-%d %H:%M")), indent=1))


if __name__ == "__main__":
    sys.exit(main())
