"""llm_course.exercises: every checker passes the course's answer and fails deliberately wrong ones, naming the mistake."""
import json, math, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_course import exercises as X
from llm_course.exercises import EXERCISES, check, compare, time_limit, TimeLimitExceeded, ExerciseFailed

NBS = Path(__file__).resolve().parents[1] / "nbs" / "exercises"


def fails_with(fn, name, *words):
    "Check `fn` as exercise `name`; assert it fails and its feedback contains every one of `words`."
    r = EXERCISES[name].run(fn)
    assert not r.ok and r.points < r.max_points, r.text()
    for w in words: assert w in r.text(), f"{w!r} not in:\n{r.text()}"
    return r


def test_registry_covers_lessons():
    assert len(EXERCISES) >= 15
    assert {e.lesson for e in EXERCISES.values()} >= {"02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"}
    for e in EXERCISES.values():
        assert e.hint and e.task and e.signature.startswith(f"def {e.name}(")
        assert (NBS / f"{e.notebook}.ipynb").is_file(), e.notebook


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_passes_and_stub_is_not_done(name):
    e = EXERCISES[name]
    r = e.run(e.reference)
    assert r.ok and r.points == e.points and "PASSED" in r.text() and "✅" in r._repr_markdown_()
    def stub(*a, **k): raise NotImplementedError()
    r = e.run(stub)
    assert not r.ok and r.points == 0 and "not done yet" in r.text() and "❌" in r._repr_markdown_()


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_registered_mistakes_are_named(name):
    e = EXERCISES[name]
    for mistake, wrong in e.mistakes.items(): fails_with(wrong, name, mistake, "Hint:")


# --- lesson 02 -------------------------------------------------------------------------------------------------
def test_merge_pair_feedback():
    def stops_early(ids, pair, new_id):          # off-by-one: range(len(ids) - 1) never appends the last token
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair: out.append(new_id); i += 2
            else: out.append(ids[i]); i += 1
        return out
    fails_with(stops_early, "merge_pair", "the last token is dropped", "expected [256, 97], got [256]")
    def in_place(ids, pair, new_id):
        i = 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == tuple(pair): ids[i:i + 2] = [new_id]
            i += 1
        return ids
    fails_with(in_place, "merge_pair", "changed one of its inputs in place")
    def crashes(ids, pair, new_id):
        return [ids[i + 1] for i in range(len(ids))]
    r = fails_with(crashes, "merge_pair", "raised IndexError: list index out of range", "line 2 of crashes")
    assert "Traceback" not in r.text()


# --- lesson 03 -------------------------------------------------------------------------------------------------
def test_causal_mask_feedback():
    fails_with(lambda T_q, T_k=None: torch.ones(T_q, T_k or T_q, dtype=torch.bool).triu(), "causal_mask", "upper triangle")
    fails_with(lambda T_q, T_k=None: torch.ones(T_q, T_k or T_q, dtype=torch.bool).tril(-1), "causal_mask",
               "the diagonal is excluded", "expected True, got False")
    fails_with(lambda T_q, T_k=None: torch.ones(T_q, T_k or T_q).tril((T_k or T_q) - T_q), "causal_mask",
               "dtype torch.float32, expected torch.bool")
    fails_with(lambda T_q, T_k=None: torch.ones(T_q, T_k or T_q, dtype=torch.bool).tril(), "causal_mask", "cached keys are ignored")
    fails_with(lambda T_q, T_k=None: torch.ones(T_q, T_q, dtype=torch.bool).tril(), "causal_mask", "has shape (2, 2), expected (2, 5)")


def test_attention_matches_torch_and_names_mistakes():
    def mine(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None: s = s.masked_fill(~mask, float("-inf"))
        return s.softmax(-1) @ v
    assert check(mine, "attention").ok
    q = k = v = torch.randn(2, 4, 3)
    torch.testing.assert_close(mine(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-6)
    fails_with(lambda q, k, v, mask=None: (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-2) @ v, "attention", "softmax over the queries")
    fails_with(lambda q, k, v, mask=None: (q @ k.transpose(-2, -1)).softmax(-1) @ v, "attention", "not divided by sqrt(d)")
    fails_with(lambda q, k, v, mask=None: (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) @ v, "attention", "the mask is ignored")
    fails_with(lambda q, k, v, mask=None: (q @ k.transpose(-1, -2)).softmax(-1), "attention", "has shape", "expected (2, 3, 5, 8)")


# --- lesson 04 -------------------------------------------------------------------------------------------------
def test_lr_factor_feedback():
    def ahead(step, warmup_steps, max_steps, min_lr_ratio=0.0):
        if step < warmup_steps: return (step + 1) / warmup_steps
        p = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    fails_with(ahead, "lr_factor", "one step ahead", "on step=0, warmup_steps=10, max_steps=100: the result should be 0, got 0.1")
    def no_min(step, warmup_steps, max_steps, min_lr_ratio=0.0): return ahead(step, warmup_steps, max_steps) if step >= warmup_steps else step / warmup_steps
    fails_with(no_min, "lr_factor", "ignores min_lr_ratio")
    def divides_by_zero(step, warmup_steps, max_steps, min_lr_ratio=0.0):
        w = step / warmup_steps
        return w if step < warmup_steps else ahead(step, warmup_steps, max_steps, min_lr_ratio)
    fails_with(divides_by_zero, "lr_factor", "raised ZeroDivisionError", "no warm-up")


# --- lesson 05 -------------------------------------------------------------------------------------------------
def _masker(mask_frac=0.8, keep_frac=0.1, skip_specials=True, use_gen=True, clone=True, labels_everywhere=False):
    def mask_tokens(input_ids, mask_token_id, vocab_size, special_ids=(), mlm_probability=0.15, generator=None):
        g = generator if use_gen else None
        ids = input_ids.clone() if clone else input_ids
        orig = input_ids.clone()
        chosen = torch.rand(ids.shape, generator=g) < mlm_probability
        if skip_specials: chosen &= ~torch.isin(ids, torch.tensor(list(special_ids) + [mask_token_id]))
        labels = orig.clone() if labels_everywhere else torch.where(chosen, orig, torch.full_like(orig, -100))
        r = torch.rand(ids.shape, generator=g)
        ids[chosen & (r < mask_frac)] = mask_token_id
        rnd = chosen & (r >= mask_frac) & (r < 1 - keep_frac)
        ids[rnd] = torch.randint(10, vocab_size, (int(rnd.sum()),), generator=g)
        return ids, labels
    return mask_tokens


def test_mask_tokens_statistics():
    assert check(_masker(), "mask_tokens").ok
    fails_with(_masker(skip_specials=False), "mask_tokens", "special_ids must never be masked")
    fails_with(_masker(mask_frac=1.0, keep_frac=0.0), "mask_tokens", "1.00 became [MASK]", "expected about 0.80 / 0.10 / 0.10")
    fails_with(_masker(use_gen=False), "mask_tokens", "reproducibility", "generator=generator")
    fails_with(_masker(clone=False), "mask_tokens", "changed input_ids in place")
    fails_with(_masker(labels_everywhere=True), "mask_tokens", "were chosen, expected about 0.15")
    fails_with(lambda *a, **k: a[0], "mask_tokens", "should be a tuple (corrupted ids, labels)")


# --- lesson 06 -------------------------------------------------------------------------------------------------
def test_mean_pool_feedback():
    fails_with(lambda h, m: h.mean(1), "mean_pool", "the mask is ignored")
    fails_with(lambda h, m: (h * m.unsqueeze(-1)).sum(1) / h.size(1), "mean_pool", "divided by the full length T")
    fails_with(lambda h, m: (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True), "mean_pool", "contains NaN", "all padding")
    fails_with(lambda h, m: (h * m.unsqueeze(-1)).mean(2), "mean_pool", "has shape (2, 4), expected (2, 3)")


def test_cross_entropy_feedback():
    def ce(logits, labels, label_smoothing=0.0, K_minus_1=False, count_ignored=False):
        keep = labels != -100
        logp, y = logits[keep].log_softmax(-1), labels[keep]
        nll = -logp.gather(1, y[:, None]).squeeze(1)
        K = logits.size(-1)
        smooth = (-(logp.sum(-1)) - nll) / (K - 1) if K_minus_1 else -logp.mean(-1)
        per = (1 - label_smoothing) * nll + label_smoothing * smooth
        return per.sum() / (labels.numel() if count_ignored else per.numel())
    assert check(ce, "cross_entropy").ok
    fails_with(lambda l, y, s=0.0: ce(l, y, s, K_minus_1=True), "cross_entropy", "K - 1 wrong classes")
    fails_with(lambda l, y, s=0.0: ce(l, y, s, count_ignored=True), "cross_entropy", "counted in the mean's denominator")
    fails_with(lambda l, y, s=0.0: ce(l, y, s).item(), "cross_entropy", "should be a torch.Tensor, got float")
    # softmax then log overflows for logits * 20: the naive version gives inf/NaN, named as such
    fails_with(lambda l, y, s=0.0: F.nll_loss(torch.log(torch.exp(l) / torch.exp(l).sum(-1, keepdim=True)), y, ignore_index=-100),
               "cross_entropy", "on logits (4, 10) large")


# --- lesson 07 -------------------------------------------------------------------------------------------------
def test_macro_f1_feedback():
    from sklearn.metrics import f1_score
    def mine(y_true, y_pred):
        labels = sorted(set(y_true) | set(y_pred), key=str); s = []
        for c in labels:
            tp = sum(t == c == p for t, p in zip(y_true, y_pred)); fp = sum(p == c != t for t, p in zip(y_true, y_pred))
            fn = sum(t == c != p for t, p in zip(y_true, y_pred)); s.append(2 * tp / (2 * tp + fp + fn))
        return sum(s) / len(s)
    assert check(mine, "macro_f1").ok
    rng = np.random.default_rng(0)
    for _ in range(20):
        yt, yp = rng.integers(0, 4, 30).tolist(), rng.integers(0, 4, 30).tolist()
        assert math.isclose(mine(yt, yp), f1_score(yt, yp, average="macro"), abs_tol=1e-12)
    fails_with(lambda t, p: sum(a == b for a, b in zip(t, p)) / len(t), "macro_f1", "micro-averaging")
    fails_with(lambda t, p: float(f1_score(t, p, average="weighted", zero_division=0)), "macro_f1", "weighted by its support")
    fails_with(lambda t, p: float(f1_score(t, p, labels=sorted(set(t)), average="macro", zero_division=0)), "macro_f1", "from y_true only")


def test_ece_feedback():
    from llm_course.evaluation import expected_calibration_error
    def mine(probs, y_true, n_bins=15):
        conf, correct = probs.max(1), probs.argmax(1) == y_true
        b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
        return float(sum((b == m).mean() * abs(correct[b == m].mean() - conf[b == m].mean()) for m in range(n_bins) if (b == m).any()))
    assert check(mine, "expected_calibration_error").ok
    p = np.random.default_rng(1).dirichlet(np.ones(3), 100); y = np.random.default_rng(2).integers(0, 3, 100)
    assert math.isclose(mine(p, y, 10), expected_calibration_error(p, y, 10), abs_tol=1e-12)
    def floor_bins(probs, y_true, n_bins=15):
        conf, correct = probs.max(1), probs.argmax(1) == y_true
        b = np.minimum((conf * n_bins).astype(int), n_bins - 1)
        return float(sum((b == m).mean() * abs(correct[b == m].mean() - conf[b == m].mean()) for m in range(n_bins) if (b == m).any()))
    fails_with(floor_bins, "expected_calibration_error", "[lo, hi)", "confidences exactly on bin edges")
    fails_with(lambda probs, y, n_bins=15: float(np.abs(probs.max(1) - (probs.argmax(1) == y)).mean()), "expected_calibration_error", "should be")


# --- lesson 08 -------------------------------------------------------------------------------------------------
def test_lora_forward_feedback():
    from llm_course.lora import LoRALinear
    assert check(lambda x, base, A, B, alpha: base(x) + x @ A.T @ B.T * alpha / A.shape[0], "lora_forward").ok
    fails_with(lambda x, base, A, B, alpha: base(x) + x @ A.T @ B.T * A.shape[0] / alpha, "lora_forward", "r / lora_alpha")
    fails_with(lambda x, base, A, B, alpha: x @ base.weight.T + x @ A.T @ B.T * alpha / A.shape[0], "lora_forward", "bias is left out")
    r = fails_with(lambda x, base, A, B, alpha: base(x) + x @ B.T @ A.T, "lora_forward", "raised RuntimeError")
    assert "B = 0" not in r.problems[0]   # the B = 0 case passes a function that ignores the update: the others catch it
    fails_with(lambda x, base, A, B, alpha: base(x), "lora_forward", "B non-zero")


# --- lesson 09 -------------------------------------------------------------------------------------------------
def test_calibrate_feedback():
    from llm_course.prompting import calibrate
    mine = lambda probs, p_cf: (probs / p_cf) / (probs / p_cf).sum(1, keepdims=True)
    assert check(mine, "calibrate").ok
    p = np.random.default_rng(0).dirichlet(np.ones(3), 5)
    np.testing.assert_allclose(calibrate(p, np.full(3, 1 / 3)), p, rtol=0, atol=1e-12)   # a uniform p_cf changes nothing
    fails_with(lambda probs, p_cf: probs / p_cf, "calibrate", "not renormalised")
    fails_with(lambda probs, p_cf: probs - p_cf, "calibrate", "on probs (4, 2), p_cf=[0.7, 0.3]")
    fails_with(lambda probs, p_cf: np.exp(probs / p_cf) / np.exp(probs / p_cf).sum(1, keepdims=True), "calibrate", "a softmax")


def test_word_logprob_matches_a_real_lm_and_names_mistakes():
    from transformers import GPT2Config, GPT2LMHeadModel
    from llm_course.prompting import naive_label_logprobs
    def mine(logits, word_ids):
        m = len(word_ids)
        return float(logits[-m - 1:-1].log_softmax(-1).gather(1, torch.tensor(word_ids)[:, None]).sum())
    assert check(mine, "word_logprob").ok
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=1, n_head=2)).eval()
    prompt, word = [3, 1, 4, 1, 5], [9, 2]
    with torch.no_grad(): logits = lm(torch.tensor([prompt + word])).logits[0]
    assert abs(mine(logits, word) - naive_label_logprobs(lm, prompt, [word])[0].item()) < 1e-5
    fails_with(lambda logits, w: float(logits[-len(w):].log_softmax(-1)[torch.arange(len(w)), w].sum()), "word_logprob", "one position earlier")
    fails_with(lambda logits, w: float(logits[-len(w) - 1:-1].softmax(-1)[torch.arange(len(w)), w].log().sum()), "word_logprob",
               "on logits (4, 50) large")   # log of softmax underflows to -inf where log_softmax does not


# --- lesson 10 -------------------------------------------------------------------------------------------------
def test_absmax_quantize_feedback_and_torch_parity():
    def mine(w, bits=8):
        qmax = 2 ** (bits - 1) - 1
        scale = (w.abs().amax(1, keepdim=True) / qmax).clamp_min(torch.finfo(torch.float32).eps)
        return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
    assert check(mine, "absmax_quantize").ok
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    q, scale = mine(w)
    fq = torch.fake_quantize_per_channel_affine(w, scale[:, 0], torch.zeros(6, dtype=torch.int32), 0, -127, 127)
    torch.testing.assert_close(q.float() * scale, fq, rtol=0, atol=1e-6)
    fails_with(lambda w, bits=8: mine(w, bits)[::-1], "absmax_quantize", "has shape (4, 1), expected (4, 8)")
    fails_with(lambda w, bits=8: (mine(w, bits)[0], mine(w, bits)[1][:, 0]), "absmax_quantize", "has shape (4,), expected (4, 1)")
    fails_with(lambda w, bits=8: (mine(w, 8)[0], mine(w, 8)[1]), "absmax_quantize", "on w (3, 16), bits=4")   # bits ignored
    def per_tensor(w, bits=8):
        s = (w.abs().max() / 127).expand(w.shape[0], 1)
        return torch.round(w / s).to(torch.int8), s
    fails_with(per_tensor, "absmax_quantize", "per tensor")


# --- lesson 11 -------------------------------------------------------------------------------------------------
def test_ndcg_feedback_and_sklearn_parity():
    from sklearn.metrics import ndcg_score
    from llm_course.apps import ndcg_at_k
    def mine(rel, s, k):
        out = []
        for r, x in zip(rel, s):
            top = [r[i] for i in sorted(range(len(x)), key=lambda i: -x[i])[:k]]
            best = sorted(r, reverse=True)[:k]
            d = lambda v: sum(g / math.log2(i + 2) for i, g in enumerate(v))
            out.append(d(top) / d(best) if d(best) > 0 else 0.0)
        return sum(out) / len(out)
    assert check(mine, "ndcg_at_k").ok
    rng = np.random.default_rng(3)
    for k in (1, 3, 7, 20):
        rel, s = rng.integers(0, 4, (5, 9)).astype(float), rng.random((5, 9))
        assert abs(ndcg_at_k(rel, s, k) - ndcg_score(rel, s, k=k)) < 1e-12
        assert abs(mine(rel, s, k) - ndcg_score(rel, s, k=k)) < 1e-12
    fails_with(lambda rel, s, k: mine(rel, -s, k), "ndcg_at_k", "lowest score first")
    fails_with(lambda rel, s, k: float(np.mean([mine(r[None], x[None], k) for r, x in zip(rel, s) if r.any()])),
               "ndcg_at_k", "the first has nothing relevant (it scores 0)")   # users with nothing relevant dropped


# --- lesson 12 -------------------------------------------------------------------------------------------------
def test_clip_loss_feedback_and_hf_parity():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss
    def mine(logits):
        lp_i, lp_t = logits.log_softmax(1), logits.log_softmax(0)
        return -(lp_i.diagonal().mean() + lp_t.diagonal().mean()) / 2
    assert check(mine, "clip_loss").ok
    s = torch.randn(7, 7, generator=torch.Generator().manual_seed(2)) * 5
    torch.testing.assert_close(mine(s), image_text_contrastive_loss(s.T), rtol=1e-6, atol=1e-6)
    fails_with(lambda l: -(l.log_softmax(1).diagonal().mean() + l.log_softmax(1).diagonal().mean()) / 2, "clip_loss", "image→text direction")
    fails_with(lambda l: float(mine(l)), "clip_loss", "should be a torch.Tensor, got float")
    naive = lambda l: -(torch.log(l.exp() / l.exp().sum(1, keepdim=True)).diagonal().mean()
                        + torch.log(l.exp() / l.exp().sum(0, keepdim=True)).diagonal().mean()) / 2
    r = fails_with(naive, "clip_loss", "on logits (6, 6) large", "NaN")
    assert r.passed == 3


# --- the released lessons 09-12 notebooks: the stubs score 0, the solutions full marks ----------------------
def test_release_and_grade_lessons_09_to_12(tmp_path):
    from llm_course import classroom as C
    names = ["ex09_prompting", "ex10_efficiency", "ex11_applications", "ex12_multimodal"]
    C.release(NBS, tmp_path / "rel")
    def merged(folder):   # one notebook of all four: one grading process each for the stubs and the solutions
        cells = [c for n in names for c in C.read_notebook(folder / f"{n}.ipynb")["cells"]]
        return dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)
    exercises = [n for nb in names for n in C.notebook_exercises(C.read_notebook(NBS / f"{nb}.ipynb"), nb)]
    assert exercises == ["calibrate", "word_logprob", "absmax_quantize", "ndcg_at_k", "clip_loss"]
    for kind, folder, want in (("stub", tmp_path / "rel", 0.0), ("solution", NBS, 1.0)):
        p = tmp_path / f"{kind}.ipynb"; p.write_text(json.dumps(merged(folder)))
        res = C.run_notebook(p, exercises, timeout=20)
        got = {e["exercise"]: e["points"] for e in res["exercises"]}
        assert got == dict.fromkeys(exercises, want), (kind, res)


# --- the machinery ---------------------------------------------------------------------------------------------
def test_time_limit_stops_endless_loop_and_nests():
    def loop(ids, pair, new_id):
        while True: pass
    t0 = time.time()
    r = check(loop, "merge_pair", timeout=0.5)
    assert time.time() - t0 < 60 and "stopped after 0.5 s" in r.text() and r.points == 0
    def swallow(ids, pair, new_id):          # `except Exception` cannot catch the time limit
        while True:
            try: time.sleep(0.01)
            except Exception: pass
    assert "stopped after 0.3 s" in check(swallow, "merge_pair", timeout=0.3).text()
    with pytest.raises(TimeLimitExceeded, match="outer"):
        with time_limit(0.6, "outer"):
            with time_limit(5, "inner"): pass
            time.sleep(3)


def test_check_by_name_strict_and_bad_input(monkeypatch):
    def my_mask(T_q, T_k=None): return torch.ones(T_q, T_k or T_q, dtype=torch.bool).tril((T_k or T_q) - T_q)
    assert check(my_mask, "causal_mask").ok
    with pytest.raises(ValueError, match="No exercise named 'my_mask'. Exercises: merge_pair"): check(my_mask)
    assert "needs your function itself" in check(5, "merge_pair").text()
    wrong = lambda T_q, T_k=None: torch.zeros(T_q, T_k or T_q, dtype=torch.bool)
    monkeypatch.delenv("IN_TEST", raising=False)
    assert not check(wrong, "causal_mask").ok                   # a student sees feedback, not an exception
    with pytest.raises(ExerciseFailed, match="NOT YET causal_mask"): check(wrong, "causal_mask", strict=True)
    monkeypatch.setenv("IN_TEST", "1")                          # nbdev_test: a broken solution fails the notebook
    with pytest.raises(ExerciseFailed): check(wrong, "causal_mask")
    monkeypatch.setenv("LLM_COURSE_GRADING", "1")               # but never while grading
    assert not check(wrong, "causal_mask").ok


def test_compare_words():
    assert compare(torch.ones(3), torch.ones(3) + 1e-7) is None
    assert compare(torch.ones(3), np.ones(3)) == "the result should be a torch.Tensor, got ndarray"
    assert compare(2.0, "2x") == "the result should be a number, got str"
    assert compare((1, [2, 3]), (1, [2, 4])) == "item 1 of item 1 of the result should be 3, got 4 (expected [2, 3], got [2, 4])"
    assert "differs at index (1,): expected 2, got 5 (1 of 3 values differ" in compare(np.array([1., 2, 3]), np.array([1., 5, 3]))


def test_exercise_notebooks_have_balanced_markers_and_checks():
    from llm_course.classroom import read_notebook, strip_markers, _source
    for e in EXERCISES.values():
        nb = read_notebook(NBS / f"{e.notebook}.ipynb")
        code = [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
        assert any(f"def {e.name}(" in c and "### BEGIN SOLUTION" in c for c in code), e.name
        assert any(c.strip() == f"check({e.name})" for c in code), e.name
        assert not any("default_exp" in c or "#| export" in c for c in code)   # exercise notebooks export nothing
        for i, c in enumerate(code): strip_markers(c, "code", f"{e.notebook}, cell {i}")
