"""The checkers of lessons 07-08 (llm_course.exercise_sets.adaptation): right answers written differently from the
reference pass, each usual mistake is recognised and named, a do-nothing answer earns 0 without crashing them, and the
references agree with scikit-learn and peft."""
import math, re

import numpy as np
import torch

from llm_course.core import get_profile
from llm_course.exercises import EXERCISES, get_exercise
import llm_course.exercise_sets.adaptation as A
import llm_course.exercise_sets.evaluation as E

LESSONS = ("07", "08")

from exercise_checks import assert_named, assert_zero, first, run, stub  # noqa: E402
def zero(*args, **kwargs): return 0


def test_the_set_registers_its_exercises():
    mine = [e for e in EXERCISES.values() if e.lesson in ("07", "08")]
    assert all(sum(e.lesson == l for e in mine) >= 3 for l in ("07", "08"))
    assert {e.kind for e in mine} == {"build", "predict", "ablate", "debug"}
    assert [e.name for e in mine if e.scales] == ["rank_sweep"]
    for e in mine: assert re.match(rf"{e.lesson}[a-z]?_", e.section) and e.notebook in ("ex07_evaluation", "ex08_lora")


# lesson 07
def macro_f1(y_true, y_pred):
    "Written differently: from a confusion matrix."
    labels = sorted(set(y_true) | set(y_pred), key=str)
    ix = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred): cm[ix[t], ix[p]] += 1
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)))

def test_macro_f1():
    assert run("macro_f1", macro_f1, seed=4).ok
    for mistake, wrong in get_exercise("macro_f1").mistakes.items(): assert_named("macro_f1", wrong, mistake)
    for lazy in (stub, first, zero): assert_zero("macro_f1", lazy)

def expected_calibration_error(probs, y_true, n_bins=15):
    "Written differently: np.digitize on the right-closed bin edges, a weighted sum in one go."
    probs = np.asarray(probs, float)
    conf, correct = probs.max(1), (probs.argmax(1) == np.asarray(y_true)).astype(float)
    b = np.clip(np.digitize(conf, np.linspace(0, 1, n_bins + 1)[1:-1], right=True), 0, n_bins - 1)
    gap = np.abs(np.bincount(b, correct, n_bins) - np.bincount(b, conf, n_bins))
    return float(gap.sum() / len(conf))

def test_expected_calibration_error():
    assert run("expected_calibration_error", expected_calibration_error, seed=1).ok
    for mistake, wrong in get_exercise("expected_calibration_error").mistakes.items():
        assert_named("expected_calibration_error", wrong, mistake)
    for lazy in (stub, first, zero): assert_zero("expected_calibration_error", lazy)

def test_bootstrap_width():
    w = E._boot_width()
    assert 0.06 < w < 0.08, w                                       # 2 * 1.96 * sqrt(.85 * .15 / 400) = 0.070
    assert run("bootstrap_width", 2 * 1.96 * math.sqrt(0.85 * 0.15 / 400)).ok and run("bootstrap_width", 0.07).ok
    for mistake, wrong in get_exercise("bootstrap_width").mistakes.items():
        assert_named("bootstrap_width", wrong(), mistake)
    assert_named("bootstrap_width", 0.0357, "1.96 standard errors")   # the half-width, typed by hand
    for lazy in (0, ..., "wide"): assert_zero("bootstrap_width", lazy)

def diff_interval(y_true, pred_a, pred_b, n_boot=2000, seed=0):
    "Written differently: vectorised over the resamples, the per-example difference of correctness."
    rng = np.random.default_rng(seed + 7)
    d = (pred_a == y_true).astype(float) - (pred_b == y_true)
    idx = rng.integers(0, len(d), (n_boot, len(d)))
    return tuple(np.quantile(d[idx].mean(1), [0.025, 0.975]))

def unpaired_95(y_true, pred_a, pred_b, n_boot=2000, seed=0):
    rng, n = np.random.default_rng(seed), len(y_true)
    diffs = [(pred_a[i] == y_true[i]).mean() - (pred_b[j] == y_true[j]).mean()
             for i, j in ((rng.integers(0, n, n), rng.integers(0, n, n)) for _ in range(n_boot))]
    return tuple(np.percentile(diffs, [2.5, 97.5]))

def paired_90(y_true, pred_a, pred_b, n_boot=2000, seed=0):
    lo, hi = diff_interval(y_true, pred_a, pred_b, n_boot, seed)
    d = (pred_a == y_true).astype(float) - (pred_b == y_true)
    idx = np.random.default_rng(seed + 7).integers(0, len(d), (n_boot, len(d)))
    return tuple(np.quantile(d[idx].mean(1), [0.05, 0.95]))

def test_diff_interval():
    assert run("diff_interval", diff_interval, seed=2).ok
    assert_named("diff_interval", E._diff_planted, "independent resamples")
    assert_named("diff_interval", unpaired_95, "resampled independently")
    assert_named("diff_interval", paired_90, "90% interval")
    for lazy in (stub, first, zero, lambda *a, **k: (0.0, 0.0)): assert_zero("diff_interval", lazy)


# lesson 08
def test_lora_trainable():
    n = A._peft_trainable()
    r = A.LORA_COUNT_CONFIG["r"]
    assert n == 6 * r * (3 * 768 + 2 * 1920) + r * 768  # q, v, attention output, intermediate, output; the pooler
    assert run("lora_trainable", n).ok and run("lora_trainable", float(n)).ok
    for mistake, wrong in get_exercise("lora_trainable").mistakes.items():
        assert_named("lora_trainable", wrong(), mistake)
    r1 = run("lora_trainable", n + 1)
    assert not r1.ok and "r * (d_in + d_out)" in r1.text()
    for lazy in (0, ..., None): assert_zero("lora_trainable", lazy)

def merged_weight(weight, lora_A, lora_B, lora_alpha):
    "Written differently: addmm with beta and alpha."
    return torch.addmm(weight, lora_B, lora_A, alpha=lora_alpha / lora_A.shape[0])

def test_merged_weight():
    assert run("merged_weight", merged_weight, seed=6).ok
    for mistake, wrong in get_exercise("merged_weight").mistakes.items(): assert_named("merged_weight", wrong, mistake)
    def in_place(weight, lora_A, lora_B, lora_alpha):
        weight += lora_B @ lora_A * (lora_alpha / lora_A.shape[0]); return weight
    assert_named("merged_weight", in_place, "changed one of its inputs in place")
    for lazy in (stub, first, zero): assert_zero("merged_weight", lazy)

def test_merged_weight_matches_peft():
    "The reference's merge equals peft's merge_and_unload on the same weights."
    from peft import LoraConfig, get_peft_model
    case = A._merge_cases(0)[0]
    W, lA, lB, alpha = case.args
    net = torch.nn.Sequential(torch.nn.Linear(W.shape[1], W.shape[0], bias=False))
    with torch.no_grad(): net[0].weight.copy_(W)
    pm = get_peft_model(net, LoraConfig(r=lA.shape[0], lora_alpha=alpha, target_modules=["0"]))
    layer = pm.base_model.model[0]
    with torch.no_grad(): layer.lora_A["default"].weight.copy_(lA); layer.lora_B["default"].weight.copy_(lB)
    merged = pm.merge_and_unload()[0].weight
    torch.testing.assert_close(A._merge_ref(*case.args), merged, atol=1e-5, rtol=1e-5)

def test_rank_sweep():
    table = A._rank_table(get_profile().name)
    ranks = {k: v for k, v in table.items() if k != "base"}
    best = min(ranks, key=ranks.get)
    assert run("rank_sweep", {"table": {k: round(v, 3) for k, v in table.items()}, "conclusion": best}).ok
    assert all(v < table["base"] for v in ranks.values()), table       # every adapter learns something about tweets
    worse = [k for k in ranks if ranks[k] > min(ranks.values()) + 0.01]
    if worse: assert_named("rank_sweep", {"table": table, "conclusion": worse[0]}, "does not support")
    assert_named("rank_sweep", {"table": {**table, "base": table["base"] - 1}, "conclusion": best}, "re-run")
    assert_named("rank_sweep", {"table": table, "conclusion": "base"}, "should be one of")
    for lazy in ({"table": {}, "conclusion": ""}, 0, None): assert_zero("rank_sweep", lazy)

def lesson_headings(lesson_stem):
    import json, pathlib
    nb = json.loads((pathlib.Path(__file__).parent.parent / "nbs" / f"{lesson_stem}.ipynb").read_text())
    return {line.lstrip("#").strip() for c in nb["cells"] if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")}

def test_sections_are_headings_of_their_lessons():
    "Each exercise names a section that exists in its lesson notebook (a renamed section fails here)."
    for e in EXERCISES.values():
        if e.lesson in LESSONS:
            stem, section = e.section.split(": ", 1)
            assert section in lesson_headings(stem), (e.name, e.section)


def init_lora(d_in, d_out, r, generator=None):
    "Written differently: nn.init on an empty tensor, with the generator."
    A = torch.empty(r, d_in)
    torch.nn.init.uniform_(A, -d_in ** -0.5, d_in ** -0.5, generator=generator)
    return A, torch.zeros(d_out, r)

def test_init_lora():
    assert run("init_lora", init_lora, seed=3).ok
    for mistake, wrong in get_exercise("init_lora").mistakes.items(): assert_named("init_lora", wrong, mistake)
    def swapped(d_in, d_out, r, generator=None): return torch.zeros(r, d_in), torch.randn(d_out, r, generator=generator)
    assert_named("init_lora", swapped, "the other way round")

    def gaussian(d_in, d_out, r, generator=None):
        return torch.randn(r, d_in, generator=generator), torch.zeros(d_out, r)
    assert_named("init_lora", gaussian, "nn.Linear's weights")
    for lazy in (stub, first, zero): assert_zero("init_lora", lazy)
