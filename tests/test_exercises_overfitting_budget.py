"""The checkers of lessons 06a and 09a (llm_course.exercise_sets.overfitting, .labels_or_prompts): right answers written
differently from the reference pass (the lesson's own functions among them, where the checker verifies properties),
the planted and usual mistakes are named on several seeds, and the feedback of the property checks says what to fix."""
import importlib, json, random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_course.exercises import EXERCISES, get_exercise
from exercise_checks import assert_named, run

ROOT = Path(__file__).resolve().parents[1]
MINE = {"06a": "ex06a_overfitting", "09a": "ex09a_labels_or_prompts"}


def lesson_headings(stem):
    nb = json.loads((ROOT / "nbs" / f"{stem}.ipynb").read_text())
    return {line.lstrip("#").strip() for c in nb["cells"] if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")}


def test_three_exercises_per_lesson_each_practising_a_heading_of_it():
    for lesson, notebook in MINE.items():
        mine = [e for e in EXERCISES.values() if e.lesson == lesson]
        assert len(mine) >= 3 and {e.notebook for e in mine} == {notebook}, [e.name for e in mine]
        for e in mine:
            stem, section = e.section.split(": ", 1)
            assert stem.startswith(lesson) and section in lesson_headings(stem), (e.name, e.section)
            for f in e.forbidden:
                mod, _, fn = f.partition(":")
                assert callable(getattr(importlib.import_module(mod), fn)), f


# random inputs
@pytest.mark.parametrize("name", ["labelled_sets", "gap_closed", "labels_pay_off", "break_even_queries"])
def test_mistakes_are_named_on_other_seeds(name):
    e = get_exercise(name)
    for seed in (1, 2, 7):
        for mistake, wrong in e.mistakes.items(): assert_named(name, wrong, mistake, seed=seed)


# lesson 06a
def fgm_losses(model, inputs, labels, epsilon):
    "Written differently: torch.autograd.grad, and the attacked loss through F.embedding with E + r (E never moves)."
    E = model[0].weight
    loss_with = lambda W: F.cross_entropy(model[2](F.embedding(inputs, W).flatten(1)), labels)
    clean = loss_with(E)
    (g,) = torch.autograd.grad(clean, E)
    r = epsilon * g / g.norm() if g.norm() > 0 else torch.zeros_like(g)
    return clean.item(), loss_with(E.detach() + r).item(), E.detach().clone()


def test_fgm_losses():
    assert run("fgm_losses", fgm_losses, seed=3).ok
    r = assert_named("fgm_losses", lambda m, x, y, eps: fgm_losses(m, x, y, eps)[:2] + (m[0].weight.detach() + 1,),
                     "item 2 of the result")
    assert r.points < r.max_points


def test_early_stopping_planted_bug_and_a_rewrite():
    ns = {}
    exec(get_exercise("early_stopping").task.split("```python\n")[1].split("```")[0], ns)
    assert_named("early_stopping", ns["early_stopping"], "the function as given")
    def mine(steps, losses, patience):          # written differently: indices, the best by argmin over the seen part
        for i in range(len(losses)):
            seen = losses[:i + 1]
            best = int(np.argmin(seen))
            if i - best >= patience: return steps[i], steps[best]
        return steps[-1], steps[int(np.argmin(losses))]
    assert run("early_stopping", mine, seed=4).ok


def test_gap_closed_agrees_with_the_lesson_and_explains_pairing():
    from llm_course.regularization import gap_closed
    def lesson(*args, n_boot=1000, seed=0):
        ci = gap_closed(*args, n_boot=n_boot, seed=seed)
        return ci.estimate, ci.low, ci.high
    assert run("gap_closed", lesson, seed=5).ok
    def own_rng(a, b, c, d, n_boot=1000, seed=0):  # written differently: Python's random, the same draws for both runs
        rnd, shares = random.Random(seed), []
        for _ in range(n_boot):
            i = [rnd.randrange(len(a)) for _ in a]; j = [rnd.randrange(len(b)) for _ in b]
            shares.append(1 - (d[j].mean() - c[i].mean()) / (b[j].mean() - a[i].mean()))
        return 1 - (d.mean() - c.mean()) / (b.mean() - a.mean()), *np.quantile(shares, [0.025, 0.975])
    assert run("gap_closed", own_rng, seed=5).ok
    unpaired = list(get_exercise("gap_closed").mistakes.values())[-1]
    r = assert_named("gap_closed", lambda *a, **k: unpaired(*a, **{**k, "seed": k["seed"] + 1}),
                     "resampled independently")
    assert "This is what a usual mistake gives" not in r.text()       # named by the property check, not by equality
    assert_named("gap_closed", lambda a, b, c, d, **k: (float(1 - d.mean() / b.mean()), 0.0, 1.0),
                 "only the test losses are compared")


# lesson 09a
def test_labelled_sets_the_lesson_passes_and_feedback():
    from llm_course.data import TextData
    from llm_course.label_budget import labelled_sets
    def lesson(labels, budgets, seed=0):
        pool = TextData([str(i) for i in range(len(labels))], labels, [str(c) for c in range(max(labels) + 1)])
        sets = labelled_sets(pool, budgets, seed, with_all=False)
        return [sorted(int(t) for t in sets[n].texts) for n in budgets]
    for seed in range(4): assert run("labelled_sets", lesson, seed=seed).ok
    def first_of_each_class(labels, budgets, seed=0):   # stratified and nested, but not random
        ans = list(get_exercise("labelled_sets").mistakes.values())[0](labels, budgets, seed)
        by = {c: [i for i, l in enumerate(labels) if l == c] for c in set(labels)}
        return [sorted(i for c, idx in by.items() for i in idx[:sum(labels[j] == c for j in s)]) for s in ans]
    assert_named("labelled_sets", first_of_each_class, "draw them at random")
    fresh = list(get_exercise("labelled_sets").mistakes.values())[0]
    assert_named("labelled_sets", lambda l, b, seed=0: fresh(l, b, seed + 1), "must be nested")
    assert_named("labelled_sets", lambda l, b, seed=0: [[0] * n for n in b], "distinct indices")


def test_labels_pay_off_and_break_even_written_differently():
    def pays(scores, prompting, trained):
        by = {}
        for s in scores: by.setdefault(s["budget"], []).append(s)
        for b, rows in sorted(by.items()):
            top = sorted((s for s in rows if s["method"] in prompting), key=lambda s: -s["f1"])[0]["high"]
            wins = sorted((s["low"], s["method"]) for s in rows if s["method"] in trained and s["low"] > top)
            if wins: return [b, wins[-1][1]]
        return None
    assert run("labels_pay_off", pays, seed=6).ok
    def even(T, c_t, P, c_p):                     # written differently: search, doubling then bisecting
        cost = lambda q: (T + q * c_t) - (P + q * c_p)
        if cost(0) <= 0: return 0
        if c_p <= c_t: return None
        hi = 1
        while cost(hi) > 0: hi *= 2
        lo = hi // 2
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if cost(mid) > 0 else (lo, mid)
        return hi
    assert run("break_even_queries", even, seed=6).ok
