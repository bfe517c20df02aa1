"""llm_course.prompting: label scores against Hugging Face's own loss, the KV-cache scorer against the naive one,
calibration and demonstration picking, cloze scores against a hand computation, and every bad input."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from llm_course.assets import TokenizerMismatchError, load_minilm_tokenizer, load_smollm2, load_smollm2_tokenizer
from llm_course.data import TextData
from llm_course.uncertainty import PairedBootstrapResult, bootstrap_ci, paired_bootstrap
from llm_course.prompting import (
    CONTENT_FREE,
    LabelScores,
    PromptScorer,
    Template,
    Verbalizer,
    build_prompt,
    calibrate,
    cloze_scores,
    content_free_probs,
    describe_difference,
    encode_prefix,
    hf_continuation_logprob,
    label_logprobs,
    macro_f1_metric,
    naive_label_logprobs,
    pick_demos,
    summarize,
    token_ids,
)

SENTIMENT = Verbalizer({"negative": " negative", "neutral": " neutral", "positive": " positive"})
TEMPLATE = Template(
    "Tweet: {text}\nSentiment:", instruction="Classify the sentiment of each tweet as negative, neutral or positive."
)
DEMOS = [
    ("I hate waiting in line for an hour.", 0),
    ("The meeting is at 3pm.", 1),
    ("What a lovely day at the beach!", 2),
]


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(1)
    return load_smollm2().eval(), load_smollm2_tokenizer()


@pytest.fixture(scope="module")
def tiny_mlm():
    "A small random BERT masked LM with MiniLM's vocabulary: cloze arithmetic does not need trained weights."
    tok = load_minilm_tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertForMaskedLM(cfg).eval(), tok


# ---------------------------------------------------------------- templates and verbalizers (no model)
def test_template_slots():
    assert Template("{text} It was {mask}.").format("Fine", mask="[MASK]") == "Fine It was [MASK]."
    with pytest.raises(ValueError, match=r"no \{text\} slot"): Template("Sentiment of the tweet:")
    with pytest.raises(ValueError, match=r"unknown slots \['label'\]"): Template("{text} is {label}")
    with pytest.raises(ValueError, match="not a valid format string"): Template("{text} {")


def test_verbalizer_bad_input():
    with pytest.raises(ValueError, match="at least one label"): Verbalizer({})
    with pytest.raises(ValueError, match="at least one label"): Verbalizer([" yes", " no"])
    with pytest.raises(ValueError, match="non-empty strings"): Verbalizer({"a": " yes", "b": ""})
    with pytest.raises(ValueError, match="same word"): Verbalizer({"a": " yes", "b": " yes"})
    with pytest.raises(ValueError, match="tokenize to no tokens"):              # non-empty, but WordPiece drops it
        Verbalizer({"a": "good", "b": "\u200b"}).token_ids(load_minilm_tokenizer())


def test_plain_prompt_layout():
    prefix, query = build_prompt(TEMPLATE, SENTIMENT, "so happy", DEMOS[:2])
    assert prefix == (TEMPLATE.instruction + "\n\nTweet: I hate waiting in line for an hour.\nSentiment: negative\n\n"
                      "Tweet: The meeting is at 3pm.\nSentiment: neutral\n\n")
    assert query == "Tweet: so happy\nSentiment:"
    assert build_prompt(Template("{text} ->"), SENTIMENT, "x") == ("", "x ->")


# ---------------------------------------------------------------- label scores against Hugging Face
def test_summed_logprob_equals_hf_loss(smol):
    model, tok = smol
    prompt = token_ids(tok, TEMPLATE.format("The battery died after an hour."))
    words = Verbalizer({"a": " really bad news", "b": " good", "c": " a mixed bag"}).token_ids(tok)
    assert sorted(len(w) for w in words) == [1, 3, 3]
    ours = naive_label_logprobs(model, prompt, words)
    ref = torch.tensor([hf_continuation_logprob(model, prompt, w) for w in words])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    # and by hand from the logits, without the model's loss
    x = torch.tensor([prompt + words[0]])
    with torch.no_grad(): lp = model(x).logits[0].log_softmax(-1)
    by_hand = sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(words[0]))
    assert abs(by_hand - ours[0].item()) < 1e-4


def test_cached_equals_naive_with_and_without_prefix(smol):
    model, tok = smol
    words = Verbalizer({"a": " balance", "b": " lost card", "c": " address change", "d": " refund"}).token_ids(tok)
    pre = token_ids(tok, "Classify each customer message.\n\nMessage: where is my parcel\nIntent: delivery\n\n")
    q = token_ids(tok, "Message: i lost my visa card\nIntent:")
    naive = naive_label_logprobs(model, pre + q, words)
    torch.testing.assert_close(label_logprobs(model, pre + q, words), naive, atol=1e-4, rtol=0)
    past = encode_prefix(model, pre)
    n_cached = past.get_seq_length()
    torch.testing.assert_close(label_logprobs(model, q, words, past), naive, atol=1e-4, rtol=0)
    assert past.get_seq_length() == n_cached                                  # the shared prefix cache is not modified
    torch.testing.assert_close(label_logprobs(model, q, words, past), naive, atol=1e-4, rtol=0)   # so it can be reused
    assert encode_prefix(model, []) is None
    with pytest.raises(ValueError, match="prompt has no tokens"): label_logprobs(model, [], words)
    with pytest.raises(ValueError, match="at least one token"): label_logprobs(model, q, [[5], []])


def test_scorer_fast_equals_naive_and_is_sensible(smol):
    model, tok = smol
    scorer = PromptScorer(model, tok, SENTIMENT, TEMPLATE)
    texts = ["I love this, it is wonderful!", "This is terrible, I hate it."]
    fast, naive = scorer.score(texts, DEMOS, progress=False), scorer.score(texts, DEMOS, naive=True, progress=False)
    np.testing.assert_allclose(fast.sum, naive.sum, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fast.probs().sum(1), 1, atol=1e-12)
    assert fast.predict().tolist() == [2, 0]  # seeded golden behaviour: the obvious cases
    assert fast.sum.shape == (2, 3) and fast.n_tokens.tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match="list of strings"): scorer.score("one text")


def test_chat_prompt_keeps_demonstrations_as_prefix(smol):
    model, tok = smol
    prefix, query = build_prompt(TEMPLATE, SENTIMENT, "so happy", DEMOS, tok, chat=True)
    assert (
        prefix.startswith("<|im_start|>system\n" + TEMPLATE.instruction)
        and "<|im_start|>assistant\n neutral<|im_end|>" in prefix
    )
    assert query == "<|im_start|>user\nTweet: so happy\nSentiment:<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        build_prompt(TEMPLATE, SENTIMENT, "x", chat=True)
    chat = PromptScorer(
        model,
        tok,
        Verbalizer({"negative": "negative", "neutral": "neutral", "positive": "positive"}),
        TEMPLATE,
        chat=True,
    )
    fast, naive = (
        chat.score(["so happy"], DEMOS[:1], progress=False),
        chat.score(["so happy"], DEMOS[:1], naive=True, progress=False),
    )
    np.testing.assert_allclose(fast.sum, naive.sum, atol=1e-4, rtol=0)


def test_tokenizer_of_another_model_is_refused(smol):
    model, _ = smol
    with pytest.raises(TokenizerMismatchError, match="different models"):
        PromptScorer(model, load_minilm_tokenizer(), SENTIMENT)


# ---------------------------------------------------------------- calibration, scores, demonstrations
def test_calibrate_renormalises_W_p_and_agrees_with_zhao_et_al_on_predictions():
    """q = W p / sum(W p), W = diag(p_cf)^-1: the documented formula. Zhao et al.'s softmax(W p) predicts the same, with
    other probabilities."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=5); p_cf = rng.dirichlet(np.ones(3))
    q = calibrate(p, p_cf)
    ref = p / p_cf; ref /= ref.sum(1, keepdims=True)                                    # W p, renormalised
    np.testing.assert_allclose(q, ref, atol=1e-12)
    zhao = np.exp(p / p_cf); zhao /= zhao.sum(1, keepdims=True)                          # softmax(W p + b), b = 0
    np.testing.assert_array_equal(q.argmax(1), zhao.argmax(1))
    assert np.abs(q - zhao).max() > 0.05  # a softmax in calibrate would fail the first check
    np.testing.assert_allclose(
        calibrate(np.array([[0.6, 0.3, 0.1]]), np.array([0.5, 0.25, 0.25])), [[3 / 7, 3 / 7, 1 / 7]], atol=1e-12
    )
    np.testing.assert_allclose(calibrate(p, np.ones(3) / 3), p, atol=1e-12)  # a fair prompt is left alone
    np.testing.assert_allclose(
        calibrate(p_cf[None], p_cf), np.full((1, 3), 1 / 3), atol=1e-12
    )  # content-free input -> uniform
    with pytest.raises(ValueError, match="one per label"): calibrate(p, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="positive"): calibrate(p, np.array([0.5, 0.5, 0.0]))


def test_content_free_probs(smol):
    model, tok = smol
    scorer = PromptScorer(model, tok, SENTIMENT, TEMPLATE)
    p_cf = content_free_probs(scorer, DEMOS[:1])
    manual = scorer.score(list(CONTENT_FREE), DEMOS[:1], progress=False).probs().mean(0)
    np.testing.assert_allclose(p_cf, manual, atol=1e-12); assert abs(p_cf.sum() - 1) < 1e-9


def test_label_scores_norms():
    s = LabelScores(np.array([[-2.0, -3.0], [-6.0, -1.0]]), np.array([1, 3]), ["a", "b"])
    np.testing.assert_allclose(s.mean, [[-2.0, -1.0], [-6.0, -1 / 3]])
    assert s.predict("sum").tolist() == [0, 1] and s.predict("mean").tolist() == [1, 1]
    np.testing.assert_allclose(s.probs()[0], np.exp([-2, -3]) / np.exp([-2, -3]).sum())
    with pytest.raises(ValueError, match="'sum' or 'mean'"): s.logits("max")
    m = summarize([0, 1], s.probs())
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and 0 <= m["ece"] <= 1


# ---------------------------------------------------------------- intervals: the metric and the verdict
def test_macro_f1_metric_matches_sklearn_and_averages_draws():
    from sklearn.metrics import f1_score as sk_f1
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    draws = rng.integers(0, 3, (50, 4))
    draws[:, 0] = 0  # one draw never predicts classes 1, 2
    m = macro_f1_metric(3)
    ref = [sk_f1(y, draws[:, j], labels=[0, 1, 2], average="macro", zero_division=0) for j in range(4)]
    assert abs(m(y, draws[:, 1]) - ref[1]) < 1e-12
    assert abs(m(y, draws) - np.mean(ref)) < 1e-12
    y2 = np.array([0, 0, 0, 1])
    assert abs(macro_f1_metric(3)(y2, y2) - 2 / 3) < 1e-12  # an absent class counts as 0
    for bad in (1, 2.5, "3"):
        with pytest.raises(ValueError, match="n_labels must be an integer >= 2"): macro_f1_metric(bad)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, draws\)"): m(y, np.zeros((50, 2, 2), dtype=int))
    ci = bootstrap_ci(m, y, draws, n_boot=200)                                            # works with lesson 07's tools
    assert ci.low <= ci.estimate <= ci.high and abs(ci.estimate - np.mean(ref)) < 1e-12


def test_describe_difference_follows_the_interval():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200); good = y.copy(); good[:20] = (y[:20] + 1) % 3; bad = rng.integers(0, 3, 200)
    m = macro_f1_metric(3)
    better = paired_bootstrap(m, y, good, bad, n_boot=300)
    assert better.low > 0 and "**clearly better** than B" in describe_difference(better, "A", "B", 200)
    worse = paired_bootstrap(m, y, bad, good, n_boot=300)
    assert worse.high < 0 and "**clearly worse** than B" in describe_difference(worse, "A", "B", 200)
    same = paired_bootstrap(m, y, good, good, n_boot=300)
    assert "**within the noise** of 200 examples" in describe_difference(same, "A", "B", 200)
    edge = PairedBootstrapResult(0.05, 0.0, 0.1, 0.95, 0.03, 300)  # an interval touching 0 is no verdict
    assert "within the noise" in describe_difference(edge, "A", "B", 200)
    assert "+0.050, 95% interval +0.000 to +0.100" in describe_difference(edge, "A", "B", 200)
    shown_as_zero = PairedBootstrapResult(0.05, 0.0004, 0.1, 0.95, 0.03, 300)  # prints as +0.000: judged as printed
    assert "within the noise" in describe_difference(shown_as_zero, "A", "B", 200)
    assert "too few to judge" in describe_difference(better, "A", "B", 12)
    assert "clearly better" in describe_difference(better, "A", "B", 12, min_n=10)

def test_pick_demos_balanced_seeded():
    pool = TextData([f"t{i}" for i in range(30)], [i % 3 for i in range(30)], ["a", "b", "c"])
    d = pick_demos(pool, 6, seed=3)
    assert sorted(np.bincount([y for _, y in d], minlength=3)) == [2, 2, 2]
    assert d == pick_demos(pool, 6, seed=3) and d != pick_demos(pool, 6, seed=4)
    assert len({t for t, _ in d}) == 6 and all(pool.labels[int(t[1:])] == y for t, y in d)
    assert pick_demos(pool, 0) == [] and len(pick_demos(pool, 5, balanced=False)) == 5
    with pytest.raises(ValueError, match="cannot be drawn"): pick_demos(pool, 31)


# ---------------------------------------------------------------- cloze prompts with a masked LM
def test_cloze_scores_match_hand_computation(tiny_mlm):
    mlm, tok = tiny_mlm
    verb = Verbalizer({"neg": "bad", "mid": "mediocre", "pos": "good"})
    ids = verb.token_ids(tok)
    assert [len(w) for w in ids] == [1, 3, 1]
    s = cloze_scores(mlm, tok, ["the film", "a day"], verb)
    for i, text in enumerate(["the film", "a day"]):
        for j, w in enumerate(ids):
            enc = tok(f"{text} It was " + " ".join([tok.mask_token] * len(w)) + ".", return_tensors="pt")
            with torch.no_grad(): lp = mlm(**enc).logits[0].log_softmax(-1)
            where = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
            assert abs(s.sum[i, j] - sum(lp[p, t].item() for p, t in zip(where, w))) < 1e-5
    long = cloze_scores(mlm, tok, ["word " * 600], verb, max_length=64)        # cut in the text, the mask kept
    assert np.isfinite(long.sum).all()


def test_cloze_bad_input(tiny_mlm, smol):
    mlm, tok = tiny_mlm
    verb = Verbalizer({"neg": "bad", "pos": "good"})
    with pytest.raises(ValueError, match=r"\{mask\} slot"):
        cloze_scores(mlm, tok, ["x"], verb, Template("{text} It was good."))
    with pytest.raises(TokenizerMismatchError, match="embedding rows"): cloze_scores(mlm, smol[1], ["x"], verb)
    with pytest.raises(TypeError, match="list of strings"): cloze_scores(mlm, tok, "x", verb)
