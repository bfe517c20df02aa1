"""llm_course.evaluation against the references: scikit-learn's metrics, SciPy's tests, Hugging Face's LM loss."""
import math, warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm
import torch
from hypothesis import example, given, settings, strategies as st

from llm_course.evaluation import (accuracy_score, classification_report, confusion_matrix, f1_score, lm_nll,
    normalize_confusion, perplexity, precision_score, recall_score, assert_sklearn_parity)
from llm_course.uncertainty import (bootstrap_ci, calibration_bins, expected_calibration_error, fit_temperature,
    mcnemar_test, mean_nll, paired_bootstrap, softmax)

ZERO_DIVISION = ["warn", 0, 1, np.nan]


@st.composite
def label_cases(draw, max_k=5, max_n=30):
    """Random (y_true, y_pred, labels): small class counts, classes missing from either side, labels= a shuffled
    superset or None."""
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    y_true = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    labels = None
    if draw(st.booleans()):
        extra = draw(st.integers(0, 2))                                      # classes nobody saw
        labels = draw(st.permutations(list(range(k + extra))))
    return np.array(y_true), np.array(y_pred), labels


@settings(max_examples=200, deadline=None, derandomize=True)
@given(label_cases(), st.sampled_from(ZERO_DIVISION))
def test_prf_matches_sklearn(case, zero_division):
    y_true, y_pred, labels = case
    assert_sklearn_parity(y_true, y_pred, labels, zero_division)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(label_cases(max_k=2), st.sampled_from(ZERO_DIVISION), st.sampled_from([0, 1]))
def test_binary_average_matches_sklearn(case, zero_division, pos_label):
    y_true, y_pred, _ = case
    present = set(y_true) | set(y_pred)
    if pos_label not in present and len(present) == 2: return        # both libraries refuse (tested below)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, ref in [
            (precision_score, skm.precision_score),
            (recall_score, skm.recall_score),
            (f1_score, skm.f1_score),
        ]:
            a = ours(y_true, y_pred, average="binary", pos_label=pos_label, zero_division=zero_division)
            b = ref(y_true, y_pred, average="binary", pos_label=pos_label, zero_division=zero_division)
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(label_cases(max_k=4), st.sampled_from(ZERO_DIVISION), st.integers(1, 4))
def test_classification_report_matches_sklearn(case, zero_division, digits):
    y_true, y_pred, labels = case
    names = ["cls" + "x" * i for i in range(len(labels))] if labels is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(labels=labels, target_names=names, digits=digits, zero_division=zero_division)
        if (
            y_true == y_pred
        ).any():  # with no correct prediction at all, scikit-learn's supports turn float ("1.0"); ours stay int
            assert classification_report(y_true, y_pred, **kw) == skm.classification_report(y_true, y_pred, **kw)
        ours = classification_report(y_true, y_pred, output_dict=True, **kw)
        ref = skm.classification_report(y_true, y_pred, output_dict=True, **kw)
    assert list(ours) == list(ref)
    for key, want in ref.items():
        got = ours[key]
        if key == "accuracy": assert got == pytest.approx(want, abs=1e-12); continue
        assert list(got) == list(want)
        np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-12)


def test_string_labels_and_normalised_confusion():
    y_true = ["cat", "dog", "pig", "cat", "dog", "pig", "cat"]
    y_pred = ["cat", "pig", "dog", "cat", "cat", "dog", "cat"]
    assert_sklearn_parity(y_true, y_pred, None, 0)
    assert_sklearn_parity(y_true, y_pred, ["pig", "dog", "cat", "cow"], np.nan)
    cm = confusion_matrix(y_true, y_pred, labels=["pig", "dog", "cat", "cow"])
    for norm in ["true", "pred", "all"]:
        np.testing.assert_allclose(
            normalize_confusion(cm, norm),
            skm.confusion_matrix(y_true, y_pred, labels=["pig", "dog", "cat", "cow"], normalize=norm),
            atol=1e-12,
        )


@pytest.mark.parametrize("call, message", [
    (lambda: f1_score([], []), "nothing to evaluate"),
    (lambda: f1_score([0, 1, 1], [0, 1]), "y_true has 3 labels but y_pred has 2"),
    (lambda: f1_score([0, 1, 2], [0, 1, 2], labels=[0, 1]), "contains [2], which is not in labels=[0, 1]"),
    (lambda: confusion_matrix([0, 5], [0, 1], labels=range(3)), "contains [5]"),
    (lambda: precision_score([0, 1], [0, 1], zero_division="nan"), "zero_division must be"),
    (lambda: recall_score([0, 2], [0, 2], average="binary"), "pos_label=1 is not a valid label"),
    (lambda: accuracy_score(np.zeros((2, 3)), [0, 1]), "1-D"),
    (lambda: expected_calibration_error([[0.2, 0.2]], [0]), "do not sum to 1"),
    (lambda: expected_calibration_error([[3.0, -2.0]], [0]), "look like logits"),
    (lambda: expected_calibration_error([[0.5, 0.5]], [0, 1]), "1 rows but y_true has 2"),
    (lambda: expected_calibration_error([[0.5, 0.5]], [3]), "class ids 0..1"),
    (lambda: fit_temperature(np.zeros((0, 3)), []), "empty"),
    (lambda: fit_temperature([[2.0, 0.0], [0.0, 1.0]], [0, 1]), "every validation prediction is right"),
    (lambda: softmax([[0.0, 1.0]], temperature=-1), "temperature must be positive"),
    (lambda: perplexity(10.0, 0), "n_tokens must be positive"),
    (lambda: bootstrap_ci(accuracy_score, [0, 1], [0]), "same length"),
    (lambda: mcnemar_test([0, 1, 1], [0, 1, 1], [0, 1]), "but pred_b has 2"),
    (lambda: fit_temperature([[0.0, float("inf")]], [0]), "check the model's outputs"),
    (lambda: fit_temperature([[0.0, 1.0]], [2]), "got values [2]"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=None) as e: call()
    assert message in str(e.value), str(e.value)


def test_ece_hand_computed():
    # 3 bins. bin (0, 1/3]: empty (with 3 classes the top probability is at least 1/3)
    # bin (1/3, 2/3]: confidences 0.5 (right), 0.6 (wrong), 0.4 (right) -> acc 2/3, conf 0.5
    # bin (2/3, 1]:   confidences 0.9 (right), 0.7 (wrong)             -> acc 1/2, conf 0.8
    probs = np.array([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7]])
    y = np.array([0, 1, 2, 1, 0])
    want = 3 / 5 * abs(2 / 3 - 0.5) + 2 / 5 * abs(0.5 - 0.8)
    assert expected_calibration_error(probs, y, n_bins=3) == pytest.approx(want, abs=1e-12)
    cb = calibration_bins(probs, y, n_bins=3)
    assert cb.count.tolist() == [0, 3, 2]
    assert np.isnan(cb.accuracy[0]) and cb.accuracy[1:] == pytest.approx([2 / 3, 0.5], abs=1e-12)
    # bins are closed on the right: 0.5 belongs to (0, 0.5], 1.0 to (0.5, 1]
    assert calibration_bins([[0.5, 0.5], [0.0, 1.0], [0.75, 0.25]], [0, 1, 0], n_bins=2).count.tolist() == [1, 2]
    assert calibration_bins([[0.2, 0.8], [0.6, 0.4]], [1, 0], n_bins=5).count.tolist() == [0, 0, 1, 1, 0]
    # one bin: ECE = |accuracy - mean confidence|
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(
        abs(3 / 5 - np.mean([0.5, 0.6, 0.4, 0.9, 0.7])), abs=1e-12
    )


def _miscalibrated(t_true=2.5, n=6000, k=5, seed=0):
    "Labels drawn from softmax(z); the 'model' reports t_true * z, i.e. over-confident by a temperature t_true."
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, size=(n, k))
    p = softmax(z)
    y = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)             # one categorical draw per row
    return t_true * z, y


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_nll():
    logits, y = _miscalibrated(t_true=2.5)
    valid, test = slice(0, 3000), slice(3000, None)
    t = fit_temperature(logits[valid], y[valid])
    assert t == pytest.approx(2.5, rel=0.06)
    assert mean_nll(logits[test], y[test], t) < mean_nll(logits[test], y[test]) - 0.05
    ece_before = expected_calibration_error(softmax(logits[test]), y[test])
    ece_after = expected_calibration_error(softmax(logits[test], t), y[test])
    assert ece_after < ece_before / 3
    # the fitted T is the minimiser of the validation NLL: SciPy's bounded scalar search over log T finds the same point
    from scipy.optimize import minimize_scalar

    ref = minimize_scalar(
        lambda lt: mean_nll(logits[valid], y[valid], math.exp(lt)),
        bounds=(math.log(0.05), math.log(20)),
        method="bounded",
        options=dict(xatol=1e-9),
    )
    assert t == pytest.approx(math.exp(ref.x), rel=1e-4)
    # torch tensors work as well, and predictions never change
    assert fit_temperature(torch.tensor(logits[valid]), torch.tensor(y[valid])) == pytest.approx(t, rel=1e-6)
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()


def _tiny_gpt2(vocab=40):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()


def test_perplexity_is_token_weighted_and_matches_hugging_face(no_network):
    model = _tiny_gpt2()
    torch.manual_seed(1)
    lengths = [3, 17, 5, 24, 9, 2]
    seqs = [torch.randint(0, 40, (n,)) for n in lengths]

    def batch(chunk):
        T = max(len(s) for s in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long); mask = torch.zeros_like(ids)
        for i, s in enumerate(chunk): ids[i, :len(s)], mask[i, :len(s)] = s, 1
        return {"input_ids": ids, "attention_mask": mask}

    # per sequence, Hugging Face's own mean loss times its number of predicted tokens
    ref_sum = sum(model(input_ids=s[None], labels=s[None]).loss.item() * (len(s) - 1) for s in seqs)
    ref_tokens = sum(n - 1 for n in lengths)
    for cut in [[seqs], [seqs[:2], seqs[2:]], [[s] for s in seqs], [seqs[:5], seqs[5:]]]:
        nll_sum, n = lm_nll(model, [batch(c) for c in cut])
        assert n == ref_tokens
        assert nll_sum == pytest.approx(ref_sum, rel=1e-5)
        assert perplexity(nll_sum, n) == pytest.approx(math.exp(ref_sum / ref_tokens), rel=1e-5)
    # the mean of batch means is a different (wrong) number when batches hold different token counts
    batches = [batch(c) for c in [seqs[:5], seqs[5:]]]
    means = [model(**b, labels=b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)).loss.item() for b in batches]
    assert abs(math.exp(np.mean(means)) - math.exp(ref_sum / ref_tokens)) > 0.01 * math.exp(ref_sum / ref_tokens)
    # explicit labels with -100 (e.g. a prompt not scored) count only the scored tokens
    b = batch(seqs[:2]); labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100); labels[:, :2] = -100
    nll_sum, n = lm_nll(model, [{**b, "labels": labels}])
    assert n == int((labels[:, 1:] != -100).sum())
    assert nll_sum / n == pytest.approx(model(**b, labels=labels).loss.item(), rel=1e-5)


def test_perplexity_of_a_model_returning_logits_and_loss():
    class Uniform(torch.nn.Module):
        "Every next token equally likely among V: perplexity exactly V."
        def __init__(self, V): super().__init__(); self.V = V; self.p = torch.nn.Parameter(torch.zeros(()))
        def forward(self, idx, targets=None): return torch.zeros(*idx.shape, self.V) + self.p, None
    x = torch.randint(0, 7, (3, 5)); y = x.clone(); y[0, 3:] = -100
    nll_sum, n = lm_nll(Uniform(7), [(x, y), (x[:1], y[:1])])
    assert n == 13 + 3 and perplexity(nll_sum, n) == pytest.approx(7.0, rel=1e-6)


def test_bootstrap_ci_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300); pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    metric = lambda t, p: f1_score(t, p, labels=range(3), average="macro", zero_division=0)
    a = bootstrap_ci(metric, y, pred, n_boot=500, seed=3)
    assert a == bootstrap_ci(metric, y, pred, n_boot=500, seed=3)
    assert a != bootstrap_ci(metric, y, pred, n_boot=500, seed=4)
    assert a.estimate == pytest.approx(metric(y, pred), abs=1e-12)
    assert a.low < a.estimate < a.high
    # the width of a 95% interval for a mean is about 2 * 1.96 * sd / sqrt(n): check it on accuracy
    acc = bootstrap_ci(lambda t, p: accuracy_score(t, p), y, pred, n_boot=2000, seed=0)
    p_hat = np.mean(y == pred); se = math.sqrt(p_hat * (1 - p_hat) / len(y))
    assert acc.high - acc.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    # more than two arrays, e.g. probabilities for ECE
    probs = softmax(rng.normal(size=(300, 3)))
    ece = bootstrap_ci(expected_calibration_error, probs, y, n_boot=100, seed=0)
    assert ece.low <= ece.high and ece.estimate == pytest.approx(expected_calibration_error(probs, y))


class RecordingMetric:
    """A metric called on row ids (`np.arange(n)` passed as the data): it records every resample it is shown and returns
    the mean of `values` over those rows, so a test can recompute the percentiles from the very same resamples."""
    def __init__(self, values): self.values, self.seen = np.asarray(values, dtype=float), []
    def __call__(self, ids, *rest):
        self.seen.append(np.array(ids)); return float(self.values[ids].mean())

    def resamples(self, n: int) -> list[np.ndarray]:
        "The recorded calls except the one on the full data (the rows in order)."
        out = [ids for ids in self.seen if not np.array_equal(ids, np.arange(n))]
        assert len(out) == len(self.seen) - 1, "the metric is computed once on the full data"
        return out


@pytest.mark.parametrize("level", [0.95, 0.9, 0.8])
def test_bootstrap_ci_is_the_percentile_interval_of_its_resamples(level):
    n, n_boot = 200, 400
    values = np.random.default_rng(1).normal(size=n)
    rec = RecordingMetric(values)
    ci = bootstrap_ci(rec, np.arange(n), n_boot=n_boot, level=level, seed=5)
    draws = rec.resamples(n)
    assert len(draws) == n_boot and all(len(d) == n and d.min() >= 0 and d.max() < n for d in draws)
    assert len({d.tobytes() for d in draws}) == n_boot  # each resample drawn afresh
    assert np.mean([len(np.unique(d)) / n for d in draws]) == pytest.approx(
        1 - 1 / math.e, abs=0.02
    )  # with replacement
    stats = np.array([values[d].mean() for d in draws])
    alpha = 1 - level                                                       # a 90% interval is not a 95% one
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(stats, [alpha / 2, 1 - alpha / 2])), abs=1e-12)
    assert ci.level == level and ci.estimate == pytest.approx(values.mean(), abs=1e-12)


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_paired_bootstrap_is_the_percentile_interval_of_shared_resamples(level):
    n, n_boot = 150, 300
    rng = np.random.default_rng(2)
    score_a, score_b = rng.random(n), rng.random(n)                         # per-row scores of two models
    seen = []
    def metric(ids, model):                                                 # y_true = row ids, pred = which model
        seen.append((np.array(ids), model[0])); return float((score_a if model[0] == 0 else score_b)[ids].mean())
    r = paired_bootstrap(metric, np.arange(n), np.zeros(n, int), np.ones(n, int), n_boot=n_boot, level=level, seed=3)
    draws = [ids for ids, m in seen if m == 0 and not np.array_equal(ids, np.arange(n))]
    assert len(draws) == n_boot
    assert sorted(d.tobytes() for d in draws) == sorted(ids.tobytes() for ids, m in seen
                                                         if m == 1 and not np.array_equal(ids, np.arange(n)))  # shared
    deltas = np.array([score_a[d].mean() - score_b[d].mean() for d in draws])
    alpha = 1 - level
    assert (r.low, r.high) == pytest.approx(tuple(np.quantile(deltas, [alpha / 2, 1 - alpha / 2])), abs=1e-12)
    assert r.pvalue == pytest.approx(np.mean(deltas <= 0), abs=1e-12) and r.n_boot == n_boot


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 20))
@example(5, 5, 0)
@example(30, 30, 3)
@example(0, 1, 0)
def test_mcnemar_matches_scipy(b, c, both):
    y = np.zeros(b + c + both + 1, dtype=int); pred_a = y.copy(); pred_b = y.copy()
    pred_b[:b] = 1; pred_a[b:b + c] = 2                       # b: only A right, c: only B right
    pred_a[b + c:b + c + both] = 1; pred_b[b + c:b + c + both] = 2   # both wrong: not discordant
    ex, ch = mcnemar_test(y, pred_a, pred_b, exact=True), mcnemar_test(y, pred_a, pred_b, exact=False)
    assert (ex.b, ex.c) == (b, c)
    if b + c == 0:
        assert ex.pvalue == 1.0 and ch.pvalue == 1.0; return
    assert ex.pvalue == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue, abs=1e-12)
    stat = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    assert ch.statistic == pytest.approx(stat, abs=1e-12)
    assert ch.pvalue == pytest.approx(scipy.stats.chi2.sf(stat, df=1), abs=1e-12)
    assert mcnemar_test(y, pred_a, pred_b).method == (
        "exact binomial" if b + c < 25 else "chi-square (continuity corrected)"
    )


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.85, y, 1 - y)
    bad = np.where(rng.random(400) < 0.70, y, 1 - y)
    r = paired_bootstrap(accuracy_score, y, good, bad, n_boot=500, seed=0)
    assert r == paired_bootstrap(accuracy_score, y, good, bad, n_boot=500, seed=0)
    assert r.delta == pytest.approx(accuracy_score(y, good) - accuracy_score(y, bad), abs=1e-12)
    assert 0 < r.low <= r.delta <= r.high and r.pvalue < 0.01
    swapped = paired_bootstrap(accuracy_score, y, bad, good, n_boot=500, seed=0)
    assert swapped.delta == pytest.approx(-r.delta) and swapped.pvalue > 0.99
