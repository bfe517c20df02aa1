"""The exercises of lessons 03a (encoder-decoder) and 05a (sentence pairs): each reference equals the lesson's code and
the library a practitioner meets, right answers written differently pass, planted bugs fail with the words that name
them, and the property checkers of the pair-making exercises accept the lesson's `make_pairs` on every seed tried."""
import math, random

import pytest
import torch
import torch.nn.functional as F

from llm_course.exercises import EXERCISES, get_exercise


def run(fn, name, seed=0):
    return EXERCISES[name].run(fn, seed=seed)


def fails_with(fn, name, *words, seed=0):
    r = run(fn, name, seed)
    assert not r.ok, r.text()
    for w in words: assert w in r.text(), f"{w!r} not in:\n{r.text()}"
    return r


def buggy(name: str, **ns):
    "The function with the planted bug, as the task shows it."
    exec(get_exercise(name).task.split("```python\n")[1].split("```")[0], ns)
    return ns[name]


class FakeTokenizer:
    "Just enough of the course's BPETokenizer for `encode_pairs` and `encode_pair`: texts are keys of `ids`."
    def __init__(self, ids: dict, special: dict):
        self.ids, self.special_tokens = ids, special
    def encode(self, text, allowed_special="none"): return list(self.ids[text])
    def token_to_id(self, token): return self.special_tokens[token]


# --- lesson 03a --------------------------------------------------------------------------------------------------
def test_rouge_l_reference_is_rouge_score_and_rouge_score_passes():
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    e = get_exercise("rouge_l")
    for seed in range(5):
        for c in e.cases(seed):
            assert e.reference(*c.args) == pytest.approx(tuple(scorer.score(*c.args)["rougeL"]), abs=1e-12), c.label
    assert run(lambda ref, pred: tuple(scorer.score(ref, pred)["rougeL"]), "rouge_l", seed=7).ok
    r = fails_with(lambda ref, pred: (1.0, 1.0, 1.0), "rouge_l", "item 0 of the result should be")
    assert r.points < 0.5


def test_decoder_inputs_reference_is_encode_pairs_and_the_planted_bug_is_named():
    from llm_course.seq2seq import encode_pairs
    from llm_course.tokenization import EOT, PAD
    e = get_exercise("decoder_inputs")
    for seed in range(10):
        for c in e.cases(seed):
            target, start, _, pad, tgt_len = c.args        # the lesson's <|endoftext|> starts and ends a target
            tok = FakeTokenizer({"src": [9], "tgt": target}, {EOT: start, PAD: pad})
            item = encode_pairs([("src", "tgt")], tok, 4, tgt_len)[0]
            dec, lab = e.reference(target, start, start, pad, tgt_len)
            assert torch.equal(dec, item["decoder_input_ids"]) and torch.equal(lab, item["labels"]), c.label
    fails_with(buggy("decoder_inputs", torch=torch), "decoder_inputs", "the planted bug", "Hint: at position t")


def test_decoder_inputs_give_bart_shift_tokens_right_where_the_loss_looks():
    "Hugging Face makes the decoder's inputs from the labels; they agree wherever a label counts in the loss."
    from transformers.models.bart.modeling_bart import shift_tokens_right
    e = get_exercise("decoder_inputs")
    for c in e.cases(3):
        dec, lab = e.reference(*c.args)
        n = int((lab != -100).sum())
        theirs = shift_tokens_right(lab[None], pad_token_id=c.args[3], decoder_start_token_id=c.args[1])[0]
        assert torch.equal(dec[:n], theirs[:n]) and lab[n - 1] == c.args[2], c.label


def test_cross_attention_reference_is_multihead_attention_and_sdpa_passes():
    e = get_exercise("cross_attention")
    for seed in (0, 1):
        for c in e.cases(seed):
            x, memory, mask, w_q, w_k, w_v, w_o, nh = c.args
            mha = torch.nn.MultiheadAttention(x.size(-1), nh, bias=False, batch_first=True)
            with torch.no_grad():
                mha.in_proj_weight.copy_(torch.cat([w_q, w_k, w_v])); mha.out_proj.weight.copy_(w_o)
                theirs = mha(x, memory, memory, key_padding_mask=mask == 0, need_weights=False)[0]
            torch.testing.assert_close(e.reference(*c.args), theirs, rtol=0, atol=1e-5)
    def mine(x, memory, memory_mask, w_q, w_k, w_v, w_o, n_head):      # right, written differently: PyTorch's kernel
        heads = lambda t: t.unflatten(-1, (n_head, -1)).transpose(1, 2)
        y = F.scaled_dot_product_attention(heads(x @ w_q.T), heads(memory @ w_k.T), heads(memory @ w_v.T),
                                           attn_mask=memory_mask.bool()[:, None, None, :])
        return y.transpose(1, 2).flatten(-2) @ w_o.T
    assert run(mine, "cross_attention", seed=5).ok
    fails_with(lambda *a: mine(*a[:2], torch.ones_like(a[2]), *a[3:]), "cross_attention", "padding mask is ignored")


# --- lesson 05a --------------------------------------------------------------------------------------------------
def as_tuples(pairs): return [(p["first"], p["second"], p["label"]) for p in pairs]


@pytest.mark.parametrize("task", ["sop", "nsp"])
def test_the_lessons_make_pairs_passes_the_property_checker_on_every_seed(task):
    from llm_course.sentence_pairs import make_pairs
    name = f"{task}_pairs"
    for seed in range(25):
        r = run(lambda articles, s: as_tuples(make_pairs(articles, task, seed=s)), name, seed)
        assert r.ok, r.text()


def test_sop_pairs_checker_names_what_is_wrong():
    def right(articles, seed):
        pairs = [(a[i], a[i + 1]) for a in articles for i in range(len(a) - 1)]
        swap = set(random.Random(seed).sample(range(len(pairs)), len(pairs) // 2))
        return [(b, a, 1) if i in swap else (a, b, 0) for i, (a, b) in enumerate(pairs)]
    for seed in range(40): assert run(right, "sop_pairs", seed).ok, seed    # no false alarm on a random half
    fails_with(lambda arts, s: right(arts, s)[1:], "sop_pairs", "pairs, expected")
    fails_with(lambda arts, s: right(arts, s) + right(arts, s)[:1], "sop_pairs", "occurs 2 times")
    fails_with(lambda arts, s: [(a, b, "1") for a, b, _ in right(arts, s)], "sop_pairs", "(first, second, label)")
    def last_half(articles, seed):
        pairs = [(a[i], a[i + 1]) for a in articles for i in range(len(a) - 1)]
        n = len(pairs)
        return [(b, a, 1) if i >= n - n // 2 else (a, b, 0) for i, (a, b) in enumerate(pairs)]
    fails_with(last_half, "sop_pairs", "the last half of the pairs (in reading order) are corrupted: a fixed pattern")
    def clears(articles, seed):
        out = right(articles, seed); articles.clear(); return out
    fails_with(clears, "sop_pairs", "changed one of its inputs in place")


def test_nsp_planted_bug_fails_on_every_seed_and_the_fix_passes():
    planted = buggy("nsp_pairs", random=random)
    for seed in range(40):
        assert "(the planted bug)" in fails_with(planted, "nsp_pairs", seed=seed).text()
    def fixed(articles, seed):                          # right, written differently: draw until another article
        rng, out = random.Random(seed), []
        pairs = [(k, a[i], a[i + 1]) for k, a in enumerate(articles) for i in range(len(a) - 1)]
        corrupt = set(rng.sample(range(len(pairs)), len(pairs) // 2))
        for n, (k, first, second) in enumerate(pairs):
            if n in corrupt:
                j = k
                while j == k: j = rng.randrange(len(articles))
                second = rng.choice(articles[j])
            out.append((first, second, int(n in corrupt)))
        return out
    for seed in range(40): assert run(fixed, "nsp_pairs", seed).ok, seed


def test_encode_pair_ids_reference_is_the_lessons_encode_pair():
    from llm_course.sentence_pairs import encode_pair
    from llm_course.tokenization import CLS, PAD, SEP
    e = get_exercise("encode_pair_ids")
    for seed in range(10):
        for c in e.cases(seed):
            a, b, max_len, cls, sep, pad = c.args
            tok = FakeTokenizer({"a": a, "b": b}, {CLS: cls, SEP: sep, PAD: pad})
            ours, lesson = e.reference(*c.args), encode_pair(tok, "a", "b", max_len)
            assert all(torch.equal(ours[k], lesson[k]) for k in lesson), c.label


def test_encode_pair_ids_matches_a_hugging_face_bert_tokenizer_but_for_one_tie_rule():
    """MiniLM's WordPiece tokenizer with truncation='longest_first' gives the same ids, token types and mask, except
    where B is trimmed down to A's length or below, to an odd total, and A was not the longer: BERT's
    truncate_seq_pair (the lesson and the exercise) trims B on a tie, so A keeps the extra token; Hugging Face's
    tokenizers give it to B."""
    from llm_course.assets import load_minilm_tokenizer
    bert = load_minilm_tokenizer()
    ref = get_exercise("encode_pair_ids").reference
    lens = lambda enc: (int(((enc["token_type_ids"] == 0) & (enc["attention_mask"] == 1)).sum()) - 2,
                        int(enc["token_type_ids"].sum()) - 1)
    swapped = 0
    for la, lb in ((3, 13), (11, 2), (5, 9), (7, 7), (9, 4), (2, 2)):
        first, second = " ".join(["rates"] * la), " ".join(["shares"] * lb)
        ids = [bert.encode(t, add_special_tokens=False) for t in (first, second)]
        assert list(map(len, ids)) == [la, lb]
        for max_len in range(5, 20):
            theirs = bert(first, second, max_length=max_len, padding="max_length", truncation="longest_first",
                          return_tensors="pt")
            theirs = {k: theirs[k][0] for k in ("input_ids", "token_type_ids", "attention_mask")}
            ours = ref(*ids, max_len, bert.cls_token_id, bert.sep_token_id, bert.pad_token_id)
            (a, b), (ta, tb) = lens(ours), lens(theirs)
            if (a, b) == (tb, ta) != (ta, tb):               # the tie rule: only A <= B, B trimmed, odd room
                assert la <= lb and a == b + 1 and b < lb, (la, lb, max_len)
                swapped += 1; continue
            for k in theirs: assert torch.equal(ours[k], theirs[k]), (la, lb, max_len, k)
    assert swapped >= 5                                  # the difference is real, and the test sees it


def test_encode_pair_ids_feedback():
    ref = get_exercise("encode_pair_ids").reference
    def pops(a, b, max_len, cls_id, sep_id, pad_id):       # trims the caller's lists
        while len(a) + len(b) > max_len - 3: (a if len(a) > len(b) else b).pop()
        return ref(a, b, max_len, cls_id, sep_id, pad_id)
    fails_with(pops, "encode_pair_ids", "changed one of its inputs in place")
    fails_with(lambda *args: {k: v.float() for k, v in ref(*args).items()} | {"input_ids": None}, "encode_pair_ids",
               "the result['input_ids'] should be a torch.Tensor, got NoneType")
    assert math.isclose(run(ref, "encode_pair_ids").points, 1.0)
