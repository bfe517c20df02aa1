"""The checkers of lessons 09-12 (llm_course.exercise_sets.applied, .efficiency, .applications, .multimodal): every
usual mistake is recognised and named, a correct answer written differently from the reference passes, doing nothing
earns 0 without crashing the checker, the references agree with the libraries, and the exercise notebooks carry valid
nbgrader metadata."""
import importlib, json, math, re
from pathlib import Path

import numpy as np
import pytest
import torch

from transformers.models.clip.modeling_clip import image_text_contrastive_loss as hf_clip_loss   # imported here:
# an import inside a checked function would count against its time limit
from llm_course.exercise_notebooks import exercise_notebook_problems
from llm_course.exercises import get_exercise, list_exercises
from llm_course.exercise_sets import applied as A, efficiency as EF, applications as AP, multimodal as MM, common as C

ROOT = Path(__file__).resolve().parents[1]
MINE = [e for e in list_exercises() if e.lesson in ("09", "10", "11", "12")]
FUNCTIONS = [e for e in MINE if e.wants_function]
SEED = 11


def test_three_or_more_per_lesson_and_every_kind():
    for lesson in ("09", "10", "11", "12"):
        assert sum(e.lesson == lesson for e in MINE) >= 3, lesson
    assert {e.kind for e in MINE} == {"build", "predict", "ablate", "debug"}
    for lesson in ("09", "10", "11", "12"):
        assert {e.kind for e in MINE if e.lesson == lesson} == {"build", "predict", "ablate", "debug"}, lesson
    assert sorted(e.name for e in MINE if e.scales) == ["accumulation_sweep", "temperature_sweep"]
    assert {e.lesson for e in MINE if e.scales} == {"10", "12"}


def _headings(lesson_nb: str) -> list[str]:
    cells = json.loads((ROOT / "nbs" / f"{lesson_nb}.ipynb").read_text())["cells"]
    return [l.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
            for l in "".join(c["source"]).splitlines() if l.startswith("#")]


@pytest.mark.parametrize("ex", MINE, ids=lambda e: e.name)
def test_section_is_a_heading_of_its_lesson(ex):
    nb, _, sections = ex.section.partition(": ")
    assert nb.startswith(ex.lesson + "_")
    heads = _headings(nb)
    for s in sections.split("; "):
        s = re.sub(r"\s*\(.*\)$", "", s)
        assert s in heads, (s, heads)


@pytest.mark.parametrize("ex", MINE, ids=lambda e: e.name)
def test_cases_are_deterministic_given_the_seed(ex):
    a, b = ex.cases(SEED), ex.cases(SEED)
    assert [c.label for c in a] == [c.label for c in b]
    for x, y in zip(a, b):
        for u, v in zip(x.args, y.args):
            if isinstance(u, torch.Tensor): assert torch.equal(u, v)
            elif isinstance(u, np.ndarray): assert np.array_equal(u, v)
            elif isinstance(u, list) and u and isinstance(u[0], torch.Tensor):
                assert all(torch.equal(p, q) for p, q in zip(u, v))
            else: assert u == v


@pytest.mark.parametrize("name", ["calibrate", "word_logprob", "absmax_quantize", "clip_scaled_grads", "ndcg_at_k",
                                  "oos_threshold", "clip_loss"])
def test_fresh_inputs_each_seed(name):
    ex = get_exercise(name)
    one, two = ex.cases(1), ex.cases(2)
    assert any(not np.array_equal(np.asarray(a.args[0] if not isinstance(a.args[0], list) else a.args[0][0]),
                                  np.asarray(b.args[0] if not isinstance(b.args[0], list) else b.args[0][0]))
               for a, b in zip(one, two))


@pytest.mark.parametrize("ex", [e for e in MINE if e.mistakes], ids=lambda e: e.name)
def test_every_usual_mistake_is_recognised_and_named(ex):
    for mistake, wrong in ex.mistakes.items():
        answer = wrong if ex.wants_function else wrong()
        res = ex.run(answer, seed=SEED)
        assert not res.ok, mistake
        assert mistake in res.text(), (mistake, res.text())


BUGGY = {"word_logprob": A.WORD_LOGPROB_BUGGY, "clip_scaled_grads": EF.CLIP_SCALED_BUGGY,
         "oos_threshold": AP.THRESHOLD_BUGGY, "zero_shot_logits": MM.ZERO_SHOT_BUGGY}


def test_every_debug_exercise_has_its_planted_bug():
    assert sorted(BUGGY) == sorted(e.name for e in MINE if e.kind == "debug")


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_the_planted_bug_earns_nothing_and_is_named(name):
    buggy = {}
    exec(BUGGY[name], {"torch": torch, "np": np}, buggy)
    res = get_exercise(name).run(buggy[name], seed=SEED)
    assert res.points == 0 and "planted bug" in res.text(), res.text()


# correct answers written differently from the references
def _calibrate_logspace(probs, p_cf):
    return torch.softmax(torch.tensor(np.log(probs) - np.log(p_cf)), 1).numpy()

def _word_logprob_loop(logits, word_ids):
    T, m, total = logits.shape[0], len(word_ids), 0.0
    for i, tok in enumerate(word_ids):
        row = logits[T - m - 1 + i]
        total += float(row[tok] - torch.logsumexp(row, 0))
    return total

def _absmax_loop(w, bits=8):
    qmax = 2 ** (bits - 1) - 1
    rows = [(r.abs().max() / qmax).clamp_min(torch.finfo(torch.float32).eps) for r in w]
    scale = torch.stack(rows)[:, None]
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale

def _clip_grads_torch(grads, scale, max_norm):
    ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(ps, grads): p.grad = g / scale
    torch.nn.utils.clip_grad_norm_(ps, max_norm)
    return [p.grad for p in ps]

def _ndcg_loop(relevance, scores, k):
    out = []
    for rel, s in zip(relevance, scores):
        gain = lambda r: sum(x / math.log2(i + 2) for i, x in enumerate(r[:k]))
        ideal = gain(sorted(rel, reverse=True))
        out.append(gain([rel[i] for i in sorted(range(len(s)), key=lambda i: -s[i])]) / ideal if ideal else 0.0)
    return sum(out) / len(out)

def _threshold_midpoint(scores, keep=0.95):
    s = np.sort(np.unique(scores))
    n_drop = int(np.floor(len(scores) * (1 - keep) + 1e-9))
    t = np.sort(scores)[n_drop]
    j = int(np.searchsorted(s, t))
    return float((s[j - 1] + t) / 2) if j else float(t)

def _clip_loss_hf(logits):
    return hf_clip_loss(logits.T)          # HF takes logits_per_text

def _zero_shot_by_norms(image_embeds, prompt_embeds):
    mean = prompt_embeds.mean(1)
    return (image_embeds @ mean.T) / mean.norm(dim=-1)

OTHER_WAY = {
    "zero_shot_logits": _zero_shot_by_norms,
    "calibrate": _calibrate_logspace,
    "word_logprob": _word_logprob_loop,
    "absmax_quantize": _absmax_loop,
    "clip_scaled_grads": _clip_grads_torch,
    "ndcg_at_k": _ndcg_loop,
    "oos_threshold": _threshold_midpoint,
    "clip_loss": _clip_loss_hf,
}


@pytest.mark.parametrize("name", sorted(OTHER_WAY))
@pytest.mark.parametrize("seed", [0, 12345])
def test_a_correct_answer_written_another_way_passes(name, seed):
    res = get_exercise(name).run(OTHER_WAY[name], seed=seed)
    assert res.ok, res.text()


def _stubs(ex):
    def stub(*a, **k): raise NotImplementedError()
    first = lambda *a, **k: a[0]
    zeros = lambda *a, **k: (
        torch.zeros_like(a[0])
        if isinstance(a[0], torch.Tensor)
        else [torch.zeros_like(g) for g in a[0]]
        if isinstance(a[0], list) and isinstance(a[0][0], torch.Tensor)
        else np.zeros_like(a[0])
        if isinstance(a[0], np.ndarray)
        else 0.0
    )
    return {"the stub": stub, "the input unchanged": first, "zeros": zeros, "0": lambda *a, **k: 0,
            "None": lambda *a, **k: None, "a string": lambda *a, **k: "?"}


@pytest.mark.parametrize("ex", FUNCTIONS, ids=lambda e: e.name)
def test_doing_nothing_earns_zero_and_never_crashes(ex):
    for what, fn in _stubs(ex).items():
        res = ex.run(fn, seed=SEED)
        assert res.points == 0 and not res.ok, (what, res.text())
        assert res.text()


VALUES = {
    "scope_sweep": lambda: {"table": AP._scope_table(), "conclusion": AP.SCOPE_CONCLUSIONS[0]},
    "norm_sweep": lambda: {
        "table": A._norm_table(),
        "conclusion": max(
            ("sum", "mean"), key=lambda n: A._norm_table()[f"{n}, 0-shot"] + A._norm_table()[f"{n}, 1-shot"]
        ),
    },
    "prompt_choice": lambda: {p: max(s, key=s.get) for p, s in A.prompt_pair_scores().items()},
    "adamw_memory_mb": lambda: 16 * EF.smollm2_parameters()["unique"] / 1e6 * 1.01,
    "random_ranking": lambda: {k: v * 1.05 for k, v in AP.random_ranking_expectation().items()},
    "loss_floor": lambda: round(MM._floor_truth(), 2),
    "accumulation_sweep": lambda: {
        "table": {k: v + 0.005 for k, v in EF.accumulation_table().items()},
        "conclusion": EF._accumulation_conclusion(EF.accumulation_table()),
    },
    "temperature_sweep": lambda: {
        "table": dict(MM.clip_temperature_table()),
        "conclusion": min(MM.clip_temperature_table(), key=MM.clip_temperature_table().get),
    },
}


@pytest.mark.parametrize("ex", [e for e in MINE if not e.wants_function], ids=lambda e: e.name)
def test_values_right_within_tolerance_pass_and_doing_nothing_earns_zero(ex):
    res = ex.run(VALUES[ex.name](), seed=SEED)
    assert res.ok, res.text()
    for nothing in (..., None, 0, 0.0, "", {}, [], {"table": {}, "conclusion": None}, "A", float("nan")):
        res = ex.run(nothing, seed=SEED)
        assert res.points == 0 and not res.ok, (nothing, res.text())
    assert "not done" in ex.run(..., seed=SEED).text()


def test_predictions_far_off_fail_with_the_gap():
    res = get_exercise("adamw_memory_mb").run(16 * EF.smollm2_parameters()["unique"] / 1e6 * 1.05)
    assert not res.ok and "off the measured" in res.text(), res.text()
    res = get_exercise("loss_floor").run(MM._floor_truth() + 0.05)
    assert not res.ok


def test_ablation_tables_and_conclusions_are_checked_one_by_one():
    ex, t = get_exercise("accumulation_sweep"), EF.accumulation_table()
    good = {"table": dict(t), "conclusion": EF._accumulation_conclusion(t)}
    off = {**good, "table": {**t, "small": t["small"] + 0.1}}
    res = ex.run(off)
    assert res.passed == res.total - 1 and "'small'" in res.text(), res.text()
    wrong = next(c for c in EF.ACCUMULATION_CONCLUSIONS if c != good["conclusion"])
    res = ex.run({**good, "conclusion": wrong})
    assert res.passed == res.total - 1 and "say" in res.text(), res.text()
    ex, t = get_exercise("temperature_sweep"), MM.clip_temperature_table()
    best = max(t, key=t.get)
    res = ex.run({"table": dict(t), "conclusion": best})
    assert (res.ok) == (t[best] <= min(t.values()) + 0.01)


def test_the_ci_bars_are_out_of_reach_untrained():
    from llm_course.core import get_profile, set_seed
    from llm_course.pretraining import LMBlocks, pretraining_ids, valid_loss
    from llm_course.data import load_corpus
    from llm_course.tokenization import corpus_tokenizer
    from llm_course.transformer import GPT, GPTConfig
    from llm_course.multimodal import TRAIN_TEMPLATES, accuracy_on, class_prompts, make_clip, split_digits
    p = get_profile()
    tok = corpus_tokenizer(load_corpus(p.corpus_chars), p.vocab_size)
    valid = LMBlocks(pretraining_ids(tok, p.corpus_chars // 10, split="valid"), p.block_size)
    set_seed(0)
    untrained = valid_loss(GPT(GPTConfig.from_profile(p, vocab_size=tok.vocab_size)).eval(), valid, 32)
    assert untrained > EF.accumulation_bar(p) > EF.accumulation_table()["big"], untrained
    set_seed(0)
    acc = accuracy_on(make_clip("cnn", "bytes", profile=p, device="cpu"), split_digits(profile=p)["test"],
                      class_prompts(TRAIN_TEMPLATES))
    assert acc < MM.CLIP_BAR[p.name] <= MM.clip_temperature_table()["learned"], acc


def test_references_agree_with_the_libraries():
    from sklearn.metrics import ndcg_score
    for c in get_exercise("ndcg_at_k").cases(3):
        rel, s, k = c.args
        if all(len(set(r)) == len(r) for r in s) and (rel.sum(1) > 0).all():
            assert abs(AP._ndcg_ref(rel, s, k) - ndcg_score(rel, s, k=k)) < 1e-12
    for c in get_exercise("clip_loss").cases(3):
        assert torch.allclose(MM._clip_loss_ref(*c.args), hf_clip_loss(c.args[0].T), atol=1e-6)
    for c in get_exercise("clip_scaled_grads").cases(3):         # the GradScaler recipe: unscale_, then clip_grad_norm_
        grads, S, max_norm = c.args
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        opt = torch.optim.SGD(ps, lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=S); scaler.scale(torch.ones(()))
        for p, g in zip(ps, grads): p.grad = g.clone()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(ps, max_norm)
        for ours, theirs in zip(EF._clip_ref(grads, S, max_norm), ps):
            assert torch.allclose(ours, theirs.grad, rtol=1e-6)
    from torch.ao.quantization.observer import PerChannelMinMaxObserver
    for c in get_exercise("absmax_quantize").cases(3):
        w = c.args[0]
        if len(c.args) > 1 or (w.abs().amax(1) == 0).any(): continue      # int8 only, no all-zero row
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       quant_min=-127, quant_max=127)
        obs(w); scale, _ = obs.calculate_qparams()
        q, ours = EF._absmax_ref(w)
        assert torch.allclose(ours.flatten(), scale.float(), rtol=1e-6)


def test_forbidden_names_are_real_functions():
    for ex in MINE:
        for f in ex.forbidden:
            mod, _, fn = f.partition(":")
            assert callable(getattr(importlib.import_module(mod), fn)), f


@pytest.mark.parametrize("stem", ["ex09_prompting", "ex10_efficiency", "ex11_applications", "ex12_multimodal"])
def test_exercise_notebooks_carry_nbgrader_metadata(stem):
    path = ROOT / "nbs" / "exercises" / f"{stem}.ipynb"
    assert exercise_notebook_problems(path) == []
    text = path.read_text()
    lesson = {"ex09": "09_prompting", "ex10": "10_efficiency", "ex11": "11_applications", "ex12": "12_multimodal"}[
        stem[:4]
    ]
    assert f"](../{lesson}.ipynb)" in text
    for e in MINE:
        if e.notebook == stem: assert f'"grade_id": "{e.name}_check"' in text


def test_the_measured_caches_are_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))
    calls = []
    assert C.measured("t-v1", lambda: calls.append(1) or {"x": 1.5}) == {"x": 1.5}
    C._MEMO.pop("t-v1")
    assert C.measured("t-v1", lambda: calls.append(1) or {"x": 9}) == {"x": 1.5}      # read back from disk
    assert calls == [1]
