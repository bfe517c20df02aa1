"""Lesson 03a's encoder-decoder and ROUGE (llm_course.seq2seq): ROUGE equal to Google's rouge-score on edge cases, the
source's padding invisible to the whole model, greedy decoding that stops at the end token, and clear errors."""
import pytest
import torch

from llm_course.seq2seq import (
    Seq2Seq,
    Seq2SeqConfig,
    Score,
    greedy_decode,
    headline_pairs,
    lcs_length,
    rouge_l,
    rouge_n,
    rouge_scores,
    rouge_tokens,
    to_hf_bart,
)

EDGE_CASES = [("", ""), ("a headline", ""), ("", "a headline"), ("The Cat, the CAT!", "the cat the cat the cat"),
              ("UK's GDP rises 0.5%", "uk s gdp rises by 0.5 percent"), ("a b a b a", "b a b"), ("x y z", "z y x"),
              ("Blair's £3bn plan - again", "blair 3bn plan again"), ("same words here", "same words here")]


def test_rouge_equals_rouge_score_on_edge_cases():
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for ref, pred in EDGE_CASES:
        theirs = scorer.score(ref, pred)
        for ours, key in (
            (rouge_n(ref, pred, 1), "rouge1"),
            (rouge_n(ref, pred, 2), "rouge2"),
            (rouge_l(ref, pred), "rougeL"),
        ):
            assert tuple(ours) == pytest.approx(tuple(theirs[key]), abs=1e-12), (ref, pred, key)


def test_rouge_hand_worked():
    assert rouge_tokens("UK's GDP, up 0.5%") == ["uk", "s", "gdp", "up", "0", "5"]
    assert lcs_length("x y z".split(), "z y x".split()) == 1
    assert rouge_n("a b c d", "a b x d", 2) == Score(1 / 3, 1 / 3, 1 / 3)      # only 'a b' of three pairs each
    s = rouge_scores(["a b c", "x"], ["a b c", "y"])
    assert s["rouge1"].tolist() == [1.0, 0.0] and s["rougeL"].tolist() == [1.0, 0.0]


def test_source_padding_changes_nothing():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    src, dec = torch.randint(2, 40, (1, 6)), torch.randint(2, 40, (1, 5))
    padded = torch.cat([src, torch.randint(2, 40, (1, 4))], dim=1)          # junk where the mask says padding
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        a, _ = model(src, dec)
        b, _ = model(padded, dec, mask)
    assert (a - b).abs().max().item() < 1e-5


def test_greedy_decode_stops_at_the_end_token():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    src, mask = torch.randint(0, 10, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    free = greedy_decode(model, src, mask, start_id=1, end_id=-1, max_new_tokens=5)     # an end token never written
    assert [len(r) for r in free] == [5, 5]
    end = free[0][2]  # now make the third token the end
    cut = greedy_decode(model, src, mask, start_id=1, end_id=end, max_new_tokens=5)
    assert cut == [r[:r.index(end)] if end in r else r for r in free]


def test_clear_errors():
    with pytest.raises(ValueError, match="'train' or 'test'"): headline_pairs("valid")
    with pytest.raises(ValueError, match="at least 1"): rouge_n("a", "a", 0)
    with pytest.raises(ValueError, match="one prediction per reference"): rouge_scores(["a", "b"], ["a"])
    model = Seq2Seq(Seq2SeqConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="larger block_size"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="post-LN"): to_hf_bart(model)
