"""Which default should `llm-course finetune` use? Head only, LoRA (rank, learning rate) and full fine-tuning of MiniLM,
each given the same CPU time, on the course's three data sets (BBC topics, tweet sentiment, customer-service intents).

Every run goes through `finetune_csv`, the function behind `llm-course finetune`, on CSV files written from the
course's splits (`split_data(valid=0.1, test=0.2, seed=0)`, a seeded sample of the training part). The budget is CPU
time (`time.process_time`) of the training loop: the budget `1x` on a data set is what today's default (LoRA r=8,
lr 5e-4, 2 epochs, batch 16) costs there; `0.5x` and `2x` are half and double. A short calibration run per data set,
method and rank measures its CPU seconds per step (median of the steps after warm-up); each run then gets
`budget / seconds per step` steps (so LoRA at `1x` trains exactly 2 epochs) and its real training CPU time is recorded.
Held-out accuracy and macro-F1 come with bootstrap 95% intervals (`llm_course.uncertainty.bootstrap_ci`); at each
budget the best recipe is compared with today's default by a paired bootstrap on the same test texts.

The default rule (`recommended` in the JSON, what tests/test_cli_defaults.py holds the CLI to): keep today's default
unless, at the `1x` budget, another recipe beats it on some data set with a paired interval above 0 and is itself
never beaten that way; among those, the one that changes the fewest settings (method, rank, lr), then the one with the
smallest worst gap to the best.

Resumable: each finished configuration is merged into bench/results/recipe.json at once (calibrations too), and a
configuration already there is skipped, so an interrupted run loses at most the one in progress. Run with one thread
(CPU time per step is then the work itself, not spinning):

    OMP_NUM_THREADS=1 nice -n 5 python bench/recipe.py                   # every data set, recipe, budget 1x
    OMP_NUM_THREADS=1 python bench/recipe.py --budgets 0.5 2 --recipes default head   # add budgets, resumable
    python bench/recipe.py --report                                       # the tables and verdicts, no training
"""
import argparse, csv, functools, json, os, shutil, sys, tempfile, time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"): os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np

RESULTS = Path(__file__).parent / "results" / "recipe.json"
DEFAULT = "default"   # today's `llm-course finetune` default
RECIPES = {   # name -> finetune_csv settings (rank: add_peft_lora's r; lora_alpha stays 16)
    "head": dict(method="head", lr=2e-3),
    DEFAULT: dict(method="lora", rank=8, lr=5e-4),
    "lora-r8-lr2e-3": dict(method="lora", rank=8, lr=2e-3),
    "lora-r32-lr2e-3": dict(method="lora", rank=32, lr=2e-3),
    "full-lr5e-5": dict(method="full", lr=5e-5),
    "full-lr1e-4": dict(method="full", lr=1e-4),
}
SIZES = {"bbc": (200, 300), "tweets": (600, 600), "intents": (1000, 1000)}   # (train, test) texts at most
BATCH, MAX_LENGTH, EPOCHS_1X = 16, 128, 2


def load_json(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def merge(path: Path, keys: tuple, value) -> None:
    "Put `value` at `keys` in the JSON file, re-reading it first and replacing it atomically."
    d = load_json(path); node = d
    for k in keys[:-1]: node = node.setdefault(k, {})
    node[keys[-1]] = value
    tmp = path.with_suffix(".json.tmp"); tmp.write_text(json.dumps(d, indent=1)); os.replace(tmp, path)


def data(name: str):
    from llm_course.data import load_bbc, load_intents, load_tweets, split_data
    d = {"bbc": load_bbc, "tweets": load_tweets, "intents": load_intents}[name]()
    tr, _, te = split_data(d, valid=0.1, test=0.2, seed=0)
    n_train, n_test = SIZES[name]
    return tr.sample(min(n_train, len(tr)), seed=0), te.sample(min(n_test, len(te)), seed=0)


def write_csv(path: Path, d) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["text", "label"])
        w.writerows((t, d.label_names[y]) for t, y in zip(d.texts, d.labels))
    return path


class StepClock:
    "A `fit` callback recording process CPU time at the start and after every optimizer step."
    def on_train_begin(self, state): self.t = [time.process_time()]
    def on_step_end(self, state): self.t.append(time.process_time())


def train(train_csv: Path, out: Path, steps: int, method: str, lr: float, rank: int | None = None):
    "finetune_csv with a CPU clock on its training loop (and the LoRA rank patched in); returns its result, the clock."
    import llm_course.classifier as H   # finetune_csv and the fit / add_peft_lora it calls
    clock, real_fit, real_lora = StepClock(), H.fit, H.add_peft_lora
    H.fit = lambda *a, callbacks=(), **k: real_fit(*a, callbacks=[*callbacks, clock], **k)
    if rank: H.add_peft_lora = functools.partial(real_lora, r=rank)
    try:
        r = H.finetune_csv(train_csv, None, out, method=method, lr=lr, max_steps=steps, batch_size=BATCH,
                           max_length=MAX_LENGTH, progress=False)
    finally: H.fit, H.add_peft_lora = real_fit, real_lora
    return r, clock.t


def stamp() -> dict: return dict(load=round(os.getloadavg()[0], 1), date=time.strftime("%Y-%m-%d %H:%M"))


def calibrate(ds: str, train_csv: Path, tmp: Path, method: str, rank: int | None, steps: int = 6) -> float:
    "CPU seconds per step of `method` on `ds`: the median of the steps after the first two, from a short run."
    key = f"{method}-r{rank}" if rank else method
    done = load_json().get("calibration", {}).get(ds, {}).get(key)
    if done: return done["cpu_s_per_step"]
    _, t = train(train_csv, tmp / f"calib-{key}", steps, method, 1e-4, rank)
    per_step = float(np.median(np.diff(t)[2:]))
    merge(RESULTS, ("calibration", ds, key), dict(cpu_s_per_step=round(per_step, 4), steps=steps, **stamp()))
    return per_step


def macro_f1(k: int):
    from llm_course.evaluation import f1_score
    return lambda t, p: f1_score(t, p, labels=list(range(k)), average="macro", zero_division=0)


def evaluate(out: Path, test) -> dict:
    "Accuracy and macro-F1 on `test` with bootstrap 95% intervals, and the predictions (for paired comparisons)."
    from llm_course.classifier import load_classifier
    from llm_course.evaluation import accuracy_score
    from llm_course.uncertainty import bootstrap_ci
    names = load_classifier(out).predict(test.texts, batch_size=64).labels   # the saved model orders classes by name
    pred, y = np.array([test.label_names.index(n) for n in names]), np.array(test.labels)
    acc, mf1 = bootstrap_ci(accuracy_score, y, pred), bootstrap_ci(macro_f1(len(test.label_names)), y, pred)
    r4 = lambda x: round(x, 4)
    return dict(accuracy=r4(acc.estimate), accuracy_ci=[r4(acc.low), r4(acc.high)], macro_f1=r4(mf1.estimate),
                macro_f1_ci=[r4(mf1.low), r4(mf1.high)], pred=pred.tolist())


def check_setup(ds: str, n_train: int, n_test: int) -> None:
    "Refuse to merge runs measured with other settings into the same file."
    d = load_json()
    setup = dict(batch_size=BATCH, max_length=MAX_LENGTH, epochs_1x=EPOCHS_1X, split="valid 0.1, test 0.2, seed 0")
    if d.get("setup", setup) != setup:
        sys.exit(f"{RESULTS} was measured with other settings ({d['setup']}); move it away to start a new measurement.")
    seen = d.get("data", {}).get(ds)
    if seen and (seen["n_train"], seen["n_test"]) != (n_train, n_test) and d.get("results", {}).get(ds):
        sys.exit(f"{ds} was measured with {seen['n_train']} / {seen['n_test']} texts, not {n_train} / {n_test}: "
                 f"keep SIZES, or move {RESULTS} away to start a new measurement.")
    merge(RESULTS, ("setup",), setup)


def run_all(datasets, budgets, recipes):
    RESULTS.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ds in datasets:
            train_data, test = data(ds)
            check_setup(ds, len(train_data), len(test))
            merge(RESULTS, ("data", ds), dict(n_train=len(train_data), n_test=len(test), labels=test.label_names,
                                               y_test=list(map(int, test.labels))))
            train_csv = write_csv(tmp / f"{ds}.csv", train_data)
            epoch_steps = -(-len(train_data) // BATCH)
            cost_1x = EPOCHS_1X * epoch_steps * calibrate(ds, train_csv, tmp, "lora", RECIPES[DEFAULT]["rank"])
            for b in budgets:
                for name in recipes:
                    if str(b) in load_json().get("results", {}).get(ds, {}).get(name, {}): continue
                    s = RECIPES[name]
                    steps = max(1, round(b * cost_1x / calibrate(ds, train_csv, tmp, s["method"], s.get("rank"))))
                    c0 = time.process_time()
                    r, t = train(train_csv, tmp / "model", steps, **s)
                    res = dict(budget_cpu_s=round(b * cost_1x, 1), steps=r["steps"],
                               epochs=round(r["steps"] / epoch_steps, 2),
                               train_cpu_s=round(t[-1] - t[0], 1), trainable=r["trainable"],
                               **evaluate(tmp / "model", test), run_cpu_s=round(time.process_time() - c0, 1), **stamp())
                    shutil.rmtree(tmp / "model")
                    merge(RESULTS, ("results", ds, name, str(b)), res)
                    print(f"{ds:8} {b:>4}x {name:16} {res['steps']:4d} steps {res['train_cpu_s']:6.1f} CPU-s (budget "
                          f"{res['budget_cpu_s']:.1f})  accuracy {res['accuracy']:.3f}  macro-F1 {res['macro_f1']:.3f} "
                          f"[{res['macro_f1_ci'][0]:.3f}, {res['macro_f1_ci'][1]:.3f}]", flush=True)


def paired(d: dict, ds: str, a: str, b: str, budget: str):
    "Paired bootstrap of macro-F1(a) - macro-F1(b) on the same test texts."
    from llm_course.uncertainty import paired_bootstrap
    res, y = d["results"][ds], d["data"][ds]["y_test"]
    return paired_bootstrap(macro_f1(len(d["data"][ds]["labels"])), y, res[a][budget]["pred"], res[b][budget]["pred"])


def verdict(d: dict, budget: str = "1") -> dict:
    "At `budget`: per data set the best recipe and every recipe minus the default (paired); the recommended default."
    sets = [ds for ds, r in d.get("results", {}).items() if budget in r.get(DEFAULT, {})]
    best, minus_default, beats, gaps = {}, {}, {}, {}
    for ds in sets:
        res = {n: v[budget] for n, v in d["results"][ds].items() if budget in v}
        top = max(res, key=lambda n: res[n]["macro_f1"])
        best[ds] = dict(recipe=top, macro_f1=res[top]["macro_f1"])
        minus_default[ds] = {n: str(paired(d, ds, n, DEFAULT, budget)) for n in res if n != DEFAULT}
        for n in res:
            gaps[n] = max(gaps.get(n, 0), res[top]["macro_f1"] - res[n]["macro_f1"])
            for m in res:   # n beats m when the paired interval of n - m lies above 0
                if res[n]["macro_f1"] > res[m]["macro_f1"] and paired(d, ds, n, m, budget).low > 0:
                    beats.setdefault(n, set()).add((ds, m))
    beaten = {m for n in beats for _, m in beats[n]}
    better = [n for n in beats if any(m == DEFAULT for _, m in beats[n]) and n not in beaten
              and all(budget in d["results"][ds].get(n, {}) for ds in sets)]
    changed = lambda n: sum(RECIPES[n].get(k) != RECIPES[DEFAULT].get(k) for k in ("method", "rank", "lr"))
    rec = min(better, key=lambda n: (changed(n), gaps[n])) if better else DEFAULT
    epochs = round(float(np.median([d["results"][ds][rec][budget]["epochs"] for ds in sets])))   # 2 for LoRA at 1x
    dates = [v[budget]["date"] for ds in sets for v in d["results"][ds].values() if budget in v]
    return dict(budget=budget, datasets=sets, best=best, minus_default=minus_default,
                worst_gap={n: round(g, 4) for n, g in gaps.items()}, beaten=sorted(beaten), recommended=rec,
                settings={**RECIPES[rec], "rank": RECIPES[rec].get("rank"), "epochs": max(1, epochs)},
                date=max(dates)[:10])


def report(d: dict) -> str:
    "Markdown tables: every run with its intervals, then per budget each recipe minus the default (paired)."
    lines, ci = [], lambda v, k: f"{v[k]:.3f} [{v[k + '_ci'][0]:.3f}, {v[k + '_ci'][1]:.3f}]"
    for ds, by_recipe in d.get("results", {}).items():
        n = d["data"][ds]
        lines += [f"\n{ds}: {n['n_train']} training texts, {n['n_test']} test texts, {len(n['labels'])} classes",
                  "| recipe | budget | CPU-s (budget) | steps | epochs | accuracy [95% CI] | macro-F1 [95% CI] |",
                  "|---|---|---|---|---|---|---|"]
        for name in RECIPES:
            for b, r in sorted(by_recipe.get(name, {}).items(), key=lambda x: float(x[0])):
                lines.append(f"| {name} | {b}x | {r['train_cpu_s']:.1f} ({r['budget_cpu_s']:.1f}) | {r['steps']} | "
                             f"{r['epochs']} | {ci(r, 'accuracy')} | {ci(r, 'macro_f1')} |")
    for b in sorted({b for r in d.get("results", {}).values() for v in r.values() for b in v}, key=float):
        v = verdict(d, b)
        lines += [f"\nbudget {b}x, macro-F1 minus the default's (paired bootstrap, 95% CI):",
                  "| recipe | " + " | ".join(v["datasets"]) + " |", "|---|" + "---|" * len(v["datasets"])]
        lines += [f"| {name} | " + " | ".join(v["minus_default"][ds].get(name, "-") for ds in v["datasets"]) + " |"
                  for name in RECIPES if name != DEFAULT]
        lines += [f"best at {b}x on {ds}: {w['recipe']} (macro-F1 {w['macro_f1']:.3f})" for ds, w in v["best"].items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--budgets", nargs="*", type=float, default=[1.0], help="multiples of the default's CPU time")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--report", action="store_true", help="print the tables and verdicts of the saved results only")
    args = ap.parse_args(argv)
    if not args.report: run_all(args.datasets, [int(b) if b == int(b) else b for b in args.budgets], args.recipes)
    d = load_json()
    print(report(d))
    if "1" in {b for r in d.get("results", {}).values() for v in r.values() for b in v}:
        v = verdict(d)
        merge(RESULTS, ("verdict",), v)
        print(f"recommended default at the 1x budget: {v['recommended']} {v['settings']}")


if __name__ == "__main__":
    sys.exit(main())
