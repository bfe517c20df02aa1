"""Checks of llm_course.pretraining: the two objectives, masking statistics, perplexity weighting, KV-cache exactness,
top-k / top-p filtering, bad input, the shipped checkpoints (MiniLM's masked-LM head:
tests/test_minilm_checkpoint.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from llm_course.core import get_profile, set_seed
from llm_course.evaluation import perplexity
from llm_course.pretraining import (
    CHECKPOINTS_DIR,
    LMBlocks,
    MLMBlocks,
    causal_lm_pair,
    checkpoint_valid_loss,
    list_checkpoints,
    load_checkpoint_model,
    mask_tokens,
    mlm_nll,
    pretrain,
    save_model_checkpoint,
    token_nll,
    unigram_cross_entropy,
    valid_loss,
    pretraining_ids,
    masked_lm_baselines,
    masked_position_nll,
    unigram_log_probs,
    heldout_data,
)
from llm_course.generation import generate, kv_cache_speedups, next_token, top_k_filter, top_p_filter
from llm_course.tokenization import EOT
from llm_course.data import load_corpus
from llm_course.tokenization import corpus_tokenizer
from types import SimpleNamespace
from llm_course.transformer import GPT, GPTConfig, EncoderConfig, EncoderForMaskedLM

V, SPECIALS, MASK_ID, PAD_ID = 300, [0, 1, 2, 3, 4], 2, 0


def _gpt(block_size=16, vocab_size=V, seed=0):
    set_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


# ---------------------------------------------------------------- causal LM
def test_causal_lm_pair_shifts_by_one():
    ids = torch.arange(10, 20)[None]
    x, y = causal_lm_pair(ids)
    assert torch.equal(x, ids[:, :-1]) and torch.equal(y, ids[:, 1:])
    assert torch.equal(y[:, :-1], x[:, 1:])
    with pytest.raises(ValueError, match="at least 2 tokens"): causal_lm_pair(torch.tensor([5]))


def test_lm_blocks_predict_every_token_once():
    stream = torch.arange(103)
    ds = LMBlocks(stream, 10)
    assert len(ds) == 10                                           # (103 - 1) // 10
    for i in range(len(ds)):
        b = ds[i]
        assert b["idx"].shape == b["targets"].shape == (10,)
        assert torch.equal(b["targets"], b["idx"] + 1)             # the stream is 0, 1, 2...: target = next id
    targets = torch.cat([ds[i]["targets"] for i in range(len(ds))])
    assert torch.equal(targets, stream[1:101])                     # each predicted token exactly once, in order
    with pytest.raises(IndexError, match="out of range"): ds[10]
    with pytest.raises(ValueError, match="too few"): LMBlocks(torch.arange(5), 8)


# ---------------------------------------------------------------- masked LM
def _z(k, n, p): return (k / n - p) / math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("seed", [0, 1])
def test_mlm_masking_statistics(seed):
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(5, V, (400, 250), generator=g)
    ids[:, 0], ids[:, -1] = 3, 4                                    # [CLS] ... [SEP]
    attn = torch.ones_like(ids)
    lengths = torch.randint(100, 250, (400,), generator=g)
    for r, L in enumerate(lengths.tolist()): ids[r, L:] = PAD_ID; attn[r, L:] = 0
    ids[::7, 50] = 1  # a few other special tokens in the text
    out, labels = mask_tokens(
        ids, MASK_ID, V, SPECIALS, attention_mask=attn, generator=torch.Generator().manual_seed(seed)
    )
    eligible = (attn == 1) & ~torch.isin(ids, torch.tensor(SPECIALS))
    chosen = labels != -100
    n, k = int(eligible.sum()), int(chosen.sum())
    assert n > 60_000
    # never special or padding tokens; labels are the original ids exactly where chosen
    assert not (chosen & ~eligible).any()
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == -100).all()
    assert torch.equal(out[~chosen], ids[~chosen])                  # nothing else is touched
    # 15% chosen, then 80 / 10 / 10, each within 4 standard errors
    masked = int((out[chosen] == MASK_ID).sum())
    changed = chosen & (out != MASK_ID) & (out != ids)
    same = int((chosen & (out == ids)).sum())
    p_collide = 1 / (V - len(SPECIALS))  # a random token equal to the original counts as kept
    assert abs(_z(k, n, 0.15)) < 4, k / n
    assert abs(_z(masked, k, 0.8)) < 4, masked / k
    assert abs(_z(int(changed.sum()), k, 0.1 * (1 - p_collide))) < 4
    assert abs(_z(same, k, 0.1 + 0.1 * p_collide)) < 4
    assert not torch.isin(out[changed], torch.tensor(SPECIALS)).any()  # random replacements are ordinary tokens
    # the random replacements are spread over the vocabulary, not one id
    assert out[changed].unique().numel() > 0.5 * (V - len(SPECIALS))


def test_mlm_probability_is_respected_and_checked():
    ids = torch.randint(5, V, (200, 200), generator=torch.Generator().manual_seed(0))
    _, labels = mask_tokens(ids, MASK_ID, V, SPECIALS, mlm_probability=0.3, generator=torch.Generator().manual_seed(0))
    assert abs(_z(int((labels != -100).sum()), ids.numel(), 0.3)) < 4
    with pytest.raises(ValueError, match="mlm_probability"): mask_tokens(ids, MASK_ID, V, SPECIALS, mlm_probability=0)
    with pytest.raises(ValueError, match="mask_token_id"): mask_tokens(ids, V + 3, V, SPECIALS)


def test_mlm_blocks_frame_and_masks():
    stream = torch.randint(5, V, (2000,), generator=torch.Generator().manual_seed(0))
    fixed = MLMBlocks(stream, 32, 3, 4, MASK_ID, V, SPECIALS, seed=7)
    dynamic = MLMBlocks(stream, 32, 3, 4, MASK_ID, V, SPECIALS)
    assert len(fixed) == 2000 // 30
    a, b = fixed[5], fixed[5]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["input_ids"][0] == 3 and a["input_ids"][-1] == 4 and a["labels"][0] == -100 and a["labels"][-1] == -100
    orig = torch.cat([torch.tensor([3]), stream[150:180], torch.tensor([4])])
    chosen = a["labels"] != -100
    assert chosen.any() and torch.equal(a["labels"][chosen], orig[chosen])
    set_seed(0)
    assert any(not torch.equal(dynamic[5]["labels"], dynamic[5]["labels"]) for _ in range(3))



def test_validation_masks_show_no_answer_and_bad_splits_fail():
    ids = torch.randint(5, V, (100, 100), generator=torch.Generator().manual_seed(0))
    out, labels = mask_tokens(
        ids, MASK_ID, V, SPECIALS, generator=torch.Generator().manual_seed(0), mask_frac=1.0, random_frac=0.0
    )
    chosen = labels != -100
    assert chosen.sum() > 1000 and (out[chosen] == MASK_ID).all() and torch.equal(out[~chosen], ids[~chosen])
    # the same generator seed chooses the same positions whatever the split (so validations are paired)
    _, labels_811 = mask_tokens(ids, MASK_ID, V, SPECIALS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, labels_811)
    for m, r in ((0.8, 0.3), (-0.1, 0.1), (0.5, -0.2)):
        with pytest.raises(ValueError, match="sum <= 1"):
            mask_tokens(ids, MASK_ID, V, SPECIALS, mask_frac=m, random_frac=r)
    blocks = MLMBlocks(ids.flatten(), 32, 3, 4, MASK_ID, V, SPECIALS, seed=1, mask_frac=1.0, random_frac=0.0)
    b = blocks[3]
    assert (b["input_ids"][b["labels"] != -100] == MASK_ID).all()


def test_masked_lm_baselines_unigram_and_copy():
    stream = torch.randint(5, 40, (3000,), generator=torch.Generator().manual_seed(0))
    lp = torch.log_softmax(torch.randn(40, generator=torch.Generator().manual_seed(1)).double(), -1)
    train_masks = MLMBlocks(stream, 32, 3, 4, MASK_ID, 40, SPECIALS, seed=2)
    all_masked = MLMBlocks(stream, 32, 3, 4, MASK_ID, 40, SPECIALS, seed=2, mask_frac=1.0, random_frac=0.0)
    a, t = masked_lm_baselines(all_masked, lp), masked_lm_baselines(train_masks, lp)
    assert torch.equal(a["unigram"], a["unigram_copy"]) and torch.equal(a["unigram"], t["unigram"])   # same positions
    shown, target = (torch.cat([train_masks[i][k][train_masks[i]["labels"] != -100] for i in range(len(train_masks))])
                     for k in ("input_ids", "labels"))
    masked, kept = shown == MASK_ID, shown == target
    assert torch.allclose(t["unigram_copy"][masked], -lp[target[masked]])
    assert torch.allclose(t["unigram_copy"][kept], -torch.log(0.5 + 0.5 * lp[target[kept]].exp()))
    other = ~masked & ~kept
    assert other.any() and torch.allclose(t["unigram_copy"][other], -lp[target[other]] + math.log(2))
    assert t["unigram_copy"].mean() < t["unigram"].mean() - 0.05  # copying pays when the input can show the answer

    # the model scores come in the same order: a "model" whose logits are the unigram log-probs scores exactly unigram
    class Unigram(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(lp.float())
        def forward(self, input_ids): return (self.w.expand(*input_ids.shape, 40), None)
    nll, block = masked_position_nll(Unigram(), train_masks, batch_size=7)
    assert torch.allclose(nll.double(), t["unigram"], atol=1e-5) and block.max() == len(train_masks) - 1

# ---------------------------------------------------------------- perplexity
def test_token_nll_is_token_weighted_gpt():
    model = _gpt()
    ds = LMBlocks(torch.randint(5, V, (16 * 9 + 1,), generator=torch.Generator().manual_seed(0)), 16)
    with torch.no_grad():
        logits = model(torch.stack([ds[i]["idx"] for i in range(len(ds))]))[0]
        targets = torch.stack([ds[i]["targets"] for i in range(len(ds))])
        brute = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="sum").item()
    for bs in (1, 4, 32):                                              # the sum does not depend on the batching
        s, n = token_nll(model, ds, batch_size=bs)
        assert n == 9 * 16 and s == pytest.approx(brute, rel=1e-5)
    assert valid_loss(model, ds, 4) == pytest.approx(brute / (9 * 16), rel=1e-5)


def test_mlm_nll_weights_tokens_not_batches():
    set_seed(0)
    enc = EncoderForMaskedLM(EncoderConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    ids = torch.randint(5, V, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    labels[1, 2:14] = ids[1, 2:14]  # 1 and 12 scored tokens
    batches = [dict(input_ids=ids[i:i + 1], labels=labels[i:i + 1]) for i in range(2)]
    s, n = mlm_nll(enc, batches)
    with torch.no_grad():
        per = F.cross_entropy(enc(ids)[0].reshape(-1, V), labels.reshape(-1), reduction="none").view(2, 16)
    assert n == 13
    assert s / n == pytest.approx(per[labels != -100].mean().item(), rel=1e-5)
    batch_means = (per[0, 3].item() + per[1, 2:14].mean().item()) / 2
    assert abs(s / n - batch_means) > 1e-4                            # the two weightings really differ here
    assert perplexity(s, n) == pytest.approx(math.exp(per[labels != -100].mean().item()), rel=1e-5)


# ---------------------------------------------------------------- generation
@pytest.mark.parametrize(
    "kw",
    [dict(temperature=0), dict(temperature=0.9), dict(temperature=1.2, top_k=12), dict(temperature=1.0, top_p=0.8)],
)
def test_kv_cache_gives_the_same_tokens(kw):
    model = _gpt(block_size=16)
    prompt = torch.randint(5, V, (2, 5), generator=torch.Generator().manual_seed(3))
    n_new = 40                                                          # crosses the 16-token window twice
    cached = generate(model, prompt, n_new, use_cache=True, generator=torch.Generator().manual_seed(11), **kw)
    plain = generate(model, prompt, n_new, use_cache=False, generator=torch.Generator().manual_seed(11), **kw)
    assert cached.shape == (2, 5 + n_new)
    assert torch.equal(cached, plain)
    assert torch.equal(cached[:, :5], prompt)
    if kw.get("temperature", 1) > 0:                                     # a different seed gives different samples
        other = generate(model, prompt, n_new, use_cache=True, generator=torch.Generator().manual_seed(12), **kw)
        assert not torch.equal(other, cached)


def test_shipped_gpt_kv_cache_and_greedy():
    if "gpt" not in list_checkpoints(): pytest.skip("no shipped gpt checkpoint")
    model = load_checkpoint_model("gpt")
    prompt = torch.tensor([model.tokenizer.encode("The government said")])
    for kw in (dict(temperature=0), dict(temperature=0.8, top_p=0.9)):
        a = generate(model, prompt, 80, generator=torch.Generator().manual_seed(0), **kw)
        b = generate(model, prompt, 80, use_cache=False, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(a, b)
    # greedy is the argmax at every step
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(10): seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(generate(model, prompt, 10, temperature=0), seq)


class _FixedLM(torch.nn.Module):
    "A stand-in causal LM whose next-token logits are always `z`, whatever the input (for checking the sampling)."
    def __init__(self, z):
        super().__init__()
        self.z = torch.nn.Parameter(z, requires_grad=False)
        self.config = SimpleNamespace(block_size=8)
    def forward(self, idx, cache=None):
        if cache is not None:
            cache.update(torch.zeros(idx.size(0), 1, idx.size(1), 1), torch.zeros(idx.size(0), 1, idx.size(1), 1), 0)
        return self.z.expand(idx.size(0), idx.size(1), -1), None


@pytest.mark.parametrize("T", [0.5, 2.0])
def test_temperature_sampling_frequencies_match_softmax_of_logits_over_t(T):
    z = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    want = (z / T).softmax(-1)
    n = 40_000
    draws = next_token(z.expand(n, 5), temperature=T, generator=torch.Generator().manual_seed(0))
    assert (torch.bincount(draws.flatten(), minlength=5) / n - want).abs().max() < 0.02
    for use_cache in (True, False):                                    # and through generate, both paths
        out = generate(_FixedLM(z), torch.zeros(n, 1, dtype=torch.long), 1, temperature=T, use_cache=use_cache,
                       generator=torch.Generator().manual_seed(1))
        assert (torch.bincount(out[:, 1], minlength=5) / n - want).abs().max() < 0.02


def test_generate_stops_at_eos_and_fills_finished_rows():
    z = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.0])                          # id 2 has probability 0.29 at each step
    out = generate(_FixedLM(z), torch.zeros(6, 1, dtype=torch.long), 50, temperature=1.0, eos_id=2,
                   generator=torch.Generator().manual_seed(0))
    new = out[:, 1:]
    first = [int((row == 2).nonzero()[0]) for row in new]
    assert new.size(1) == max(first) + 1 < 50                            # stopped when the last row ended
    for row, f in zip(new, first): assert (row[f:] == 2).all()          # a finished row is filled with the end token
    assert len(set(first)) > 1  # rows ended at different steps
    assert (
        generate(_FixedLM(z), torch.zeros(2, 1, dtype=torch.long), 20, temperature=0, eos_id=4).size(1) == 21
    )  # never emitted


def test_pretraining_ids_put_the_end_token_between_articles():
    ci = get_profile("ci"); tok = corpus_tokenizer(load_corpus(ci.corpus_chars), ci.vocab_size)
    text, ids = load_corpus(20_000), pretraining_ids(tok, 20_000)
    eot = tok.token_to_id(EOT)
    cuts = (ids == eot).nonzero().flatten().tolist()
    assert len(cuts) == text.count("\n\n") >= 3
    pieces = [tok.decode(p.tolist()) for p in torch.tensor_split(ids, cuts)]
    assert [pieces[0]] + [p[len(EOT):] for p in pieces[1:]] == text.split("\n\n")
    assert ids[0] != eot and ids[-1] != eot


def test_kv_cache_speedups_rows():
    rows = kv_cache_speedups(
        GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=16), [4, 8], reps=1, device=torch.device("cpu")
    )
    assert [r["context"] for r in rows] == [4, 8]
    assert all(
        r["cache_tok_s"] > 0
        and r["no_cache_tok_s"] > 0
        and r["speedup"] == pytest.approx(r["cache_tok_s"] / r["no_cache_tok_s"])
        for r in rows
    )


def _nucleus_brute(probs, p):
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep, total = set(), 0.0
    for i in order:
        keep.add(i); total += probs[i]
        if total >= p: break
    return keep


def test_top_p_keeps_the_smallest_set_reaching_p():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        logits = torch.randn(1, 12, generator=g) * (0.3 + 3 * torch.rand(1, generator=g))
        p = float(torch.rand(1, generator=g)) * 0.98 + 0.01
        kept = set(torch.isfinite(top_p_filter(logits, p))[0].nonzero().flatten().tolist())
        assert kept == _nucleus_brute(logits.softmax(-1)[0].double().tolist(), p), (trial, p)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    with pytest.raises(ValueError, match="top_p"): top_p_filter(logits, 0.0)


def test_top_k_keeps_the_k_largest():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 50, generator=g)
    for k in (1, 3, 49):
        out = top_k_filter(logits, k)
        for r in range(5):
            kept = set(torch.isfinite(out[r]).nonzero().flatten().tolist())
            assert kept == set(logits[r].topk(k).indices.tolist())
            assert torch.equal(out[r][list(kept)], logits[r][list(kept)])   # kept logits unchanged
    assert torch.equal(top_k_filter(logits, None), logits) and torch.equal(top_k_filter(logits, 50), logits)
    with pytest.raises(ValueError, match="top_k"): top_k_filter(logits, -2)
    draws = next_token(logits[:1].expand(3000, 50), top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == set(logits[0].topk(3).indices.tolist())


def test_generate_bad_input_and_long_prompt():
    model = _gpt(block_size=16)
    long_prompt = torch.randint(5, V, (1, 23), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="temperature must be >= 0"): generate(model, long_prompt, 3, temperature=-1)
    with pytest.raises(ValueError, match="non-empty"): generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="max_new_tokens"): generate(model, long_prompt, -1)
    # a prompt longer than block_size is cropped to its last block_size tokens; the output keeps the whole prompt
    out = generate(model, long_prompt, 20, temperature=0)
    cropped = generate(model, long_prompt[:, -16:], 20, temperature=0)
    assert torch.equal(out[:, :23], long_prompt) and torch.equal(out[:, 23:], cropped[:, 16:])
    # temperature 0 is greedy: no randomness consumed, same result whatever the generator
    assert torch.equal(generate(model, long_prompt, 5, temperature=0, generator=torch.Generator().manual_seed(1)),
                       generate(model, long_prompt, 5, temperature=0, generator=torch.Generator().manual_seed(2)))
    assert model.training is False
    model.train(); generate(model, long_prompt, 2); assert model.training   # mode restored


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["gpt", "encoder"])
def test_shipped_checkpoint_reaches_its_stated_validation_loss(name):
    assert name in list_checkpoints(), (
        f"llm_course/checkpoints/{name} is missing: run python scripts/make_checkpoints.py"
    )
    folder = CHECKPOINTS_DIR / name
    assert {f.name for f in folder.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json", "metadata.json"}
    assert sum(f.stat().st_size for f in folder.iterdir()) < 6e6
    model = load_checkpoint_model(name)
    m = model.metadata
    assert m["profile"] == "cpu" and m["steps"] == get_profile("cpu").max_steps and isinstance(m["seed"], int)
    assert checkpoint_valid_loss(model) == pytest.approx(m["valid_loss"], abs=2e-3)
    if name == "gpt":
        assert (
            m["valid_loss"] < unigram_cross_entropy(model.tokenizer, get_profile("cpu")) - 0.3
        )  # uses context, not just word frequencies
    else:
        # validated with every scored position masked: nothing to copy, so the unigram model on the same
        # positions is the floor
        # of a context-free model; the encoder has at least learned that much (whether it beats it is measured
        # in lesson 05)
        assert m["valid_masks"].startswith("every scored position")
        held = heldout_data(model, m["valid_chars"], m["seed"])
        assert all((held[i]["input_ids"][held[i]["labels"] != -100] == held.mask_id).all() for i in range(len(held)))
        uni = masked_lm_baselines(held, unigram_log_probs(model.tokenizer, get_profile("cpu")))["unigram"].mean().item()
        assert m["valid_loss"] < uni + 0.1 and m["valid_loss"] < math.log(model.config.vocab_size) - 0.5, (
            m["valid_loss"],
            uni,
        )
    assert model.metadata["valid_curve"][-1][0] == m["steps"]


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = _gpt(vocab_size=get_profile("ci").vocab_size, block_size=8)
    ci = get_profile("ci"); tok = corpus_tokenizer(load_corpus(ci.corpus_chars), ci.vocab_size)
    save_model_checkpoint(model, tok, tmp_path / "m", {"steps": 3, "seed": 0})
    back = load_checkpoint_model(tmp_path / "m")
    x = torch.randint(0, tok.vocab_size, (2, 8))
    with torch.no_grad(): assert torch.equal(back(x)[0], model(x)[0])
    assert back.metadata == {"steps": 3, "seed": 0} and back.tokenizer.encode("hello world") == tok.encode(
        "hello world"
    )
    assert back.lm_head.weight is back.transformer.wte.weight and not back.training
    save_model_checkpoint(model, tok, tmp_path / "m", {"steps": 4})              # overwriting replaces the folder
    assert load_checkpoint_model(tmp_path / "m").metadata == {"steps": 4}
    assert not (tmp_path / "m" / ".complete").exists()
    with pytest.raises(FileNotFoundError, match="make_checkpoints.py"): load_checkpoint_model("nope")
    with pytest.raises(TypeError, match="Can only save"):
        save_model_checkpoint(torch.nn.Linear(2, 2), tok, tmp_path / "x")


def test_pretrain_is_reproducible():
    p = get_profile("ci")
    runs = [pretrain("gpt", p, max_steps=4, seed=1, progress=False) for _ in range(2)]
    assert runs[0].history.loss == runs[1].history.loss
    enc = pretrain("encoder", p, max_steps=4, seed=1, progress=False)
    assert len(enc.history.evals) == 1 and math.isfinite(enc.history.evals[0]["loss"])
    with pytest.raises(ValueError, match="kind must be"): pretrain("bert", p)
