"""Checks of llm_course.transformer: parity with Hugging Face GPT-2 and BERT, masks, attention versions, configs."""
import math

import pytest
import torch

from llm_course.core import get_profile, set_seed
from llm_course.transformer import (GPT, GPTConfig, Encoder, EncoderConfig, EncoderForMaskedLM, MultiHeadAttention,
                                    SDPAAttention, GPT_PRESETS, ENCODER_PRESETS, build_mask,
                                    scaled_dot_product_attention, to_hf_bert, to_hf_gpt2)
from llm_course.attention_viz import attention_maps

SMALL = dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32)


def _gpt(**kw):
    set_seed(0)
    return GPT(GPTConfig(**{**SMALL, **kw})).eval()


def _encoder(**kw):
    set_seed(0)
    return Encoder(EncoderConfig(**{**SMALL, **kw})).eval()


def _padded_batch(vocab=97, T=16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, T), generator=g)
    am = torch.ones_like(ids); am[1, 11:] = 0; am[2, 4:] = 0
    tt = torch.zeros_like(ids); tt[:, 8:] = 1
    return ids, am, tt


# ---- parity with Hugging Face ------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_gpt_matches_gpt2lmheadmodel(no_network, activation):
    model = _gpt(activation=activation)
    hf = to_hf_gpt2(model)
    idx = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(2))
    targets = torch.roll(idx, -1, dims=1); targets[:, -1] = -100
    with torch.no_grad():
        logits, loss = model(idx, targets)
        out = hf(idx, labels=idx)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # HF ties too


def test_encoder_matches_bertmodel_with_padding(no_network):
    enc = _encoder()
    hf = to_hf_bert(enc)
    ids, am, tt = _padded_batch()
    with torch.no_grad():
        ours = enc(ids, am, tt)
        theirs = hf(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_masked_lm_matches_bertformaskedlm(no_network):
    set_seed(0)
    mlm = EncoderForMaskedLM(EncoderConfig(**SMALL)).eval()
    with torch.no_grad(): mlm.head.decoder.bias.normal_()            # a non-zero bias, so a lost bias shows
    ids, am, _ = _padded_batch()
    labels = torch.full_like(ids, -100); labels[:, 2] = ids[:, 2]
    with torch.no_grad():
        logits, loss = mlm(ids, am, labels)
        out = to_hf_bert(mlm)(ids, attention_mask=am, labels=labels)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)


def test_parity_catches_a_missing_scale():
    "The parity check can fail: without the 1/sqrt(d) the outputs differ from GPT-2's."
    model = _gpt()
    hf = to_hf_gpt2(model)
    for m in model.modules():
        if isinstance(m, MultiHeadAttention): m.scale = 1.0
    idx = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(): diff = (model(idx)[0] - hf(idx).logits).abs().max().item()
    assert diff > 1e-4, diff


def test_parity_catches_a_wrong_mask():
    "Ignoring the padding mask breaks BERT parity at the real tokens of padded rows."
    enc = _encoder()
    hf = to_hf_bert(enc)
    ids, am, tt = _padded_batch()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        ours_unmasked = enc(ids, None, tt)
    assert (ours_unmasked[1, :11] - theirs[1, :11]).abs().max() > 1e-4
    torch.testing.assert_close(ours_unmasked[0], theirs[0], atol=1e-5, rtol=0)   # the unpadded row still matches


def test_to_hf_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="pre-LN with biases"): to_hf_gpt2(_gpt(ln_placement="post"))
    with pytest.raises(ValueError, match="post-LN"): to_hf_bert(_encoder(ln_placement="pre"))


# ---- masks and attention ------------------------------------------------------------------------
def test_causal_mask_future_tokens_do_not_leak():
    model = _gpt()
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(4))
    for t in (5, 19):
        changed = idx.clone(); changed[:, t] = (changed[:, t] + 1) % 97
        a, b = model(idx)[0], model(changed)[0]
        torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
        assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4


def test_encoder_sees_both_directions():
    enc = _encoder()
    ids, _, _ = _padded_batch()
    changed = ids.clone(); changed[:, -1] = (changed[:, -1] + 1) % 97
    assert (enc(ids)[:, 0] - enc(changed)[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_explicit_and_sdpa_attention_agree(causal, padded):
    set_seed(5)
    cfg = GPTConfig(**SMALL, dropout=0.0)
    eager = MultiHeadAttention(cfg, causal=causal)
    fast = SDPAAttention(cfg, causal=causal); fast.load_state_dict(eager.state_dict())
    x = torch.randn(3, 16, 32)
    am = _padded_batch()[1] if padded else None
    torch.testing.assert_close(eager(x, am), fast(x, am), atol=1e-6, rtol=0)
    w = eager.attn_weights
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 16))
    if causal: assert w.triu(1).abs().max() == 0
    if padded: assert w[1, :, :, 11:].abs().max() == 0


def test_whole_models_agree_between_attention_implementations():
    ids, am, tt = _padded_batch()
    fast, eager = _encoder(), _encoder(attn_implementation="eager")
    torch.testing.assert_close(fast(ids, am, tt), eager(ids, am, tt), atol=1e-5, rtol=0)
    g_fast, g_eager = _gpt(), _gpt(attn_implementation="eager")
    torch.testing.assert_close(g_fast(ids)[0], g_eager(ids)[0], atol=1e-5, rtol=0)


def test_explicit_attention_matches_torch_and_hand_computation():
    q = torch.tensor([[1., 0.], [0., 2.]]); k = torch.tensor([[1., 0.], [0., 1.]]); v = torch.eye(2)
    out, w = scaled_dot_product_attention(q, k, v)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[math.exp(s), 1.], [1., math.exp(2 * s)]])
    torch.testing.assert_close(w, expected / expected.sum(-1, keepdim=True))
    m = build_mask(torch.tensor([[1, 0]]), 2, 2, causal=True)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, m)[1][0, 0], torch.tensor([[1., 0.], [1., 0.]]))


def test_kv_cache_hook_gives_the_same_logits(no_network):
    from transformers import DynamicCache
    model = _gpt()
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(6))
    full = model(idx)[0]
    cache = DynamicCache()
    first = model(idx[:, :8], cache=cache)[0]
    rest = torch.cat([model(idx[:, t:t + 1], cache=cache)[0] for t in range(8, 12)], dim=1)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_attention_maps_restore_the_fast_layers():
    model = _gpt()
    maps = attention_maps(model, torch.zeros(1, 6, dtype=torch.long))
    assert maps.shape == (2, 1, 4, 6, 6)
    assert all(type(m) is SDPAAttention for m in model.modules() if isinstance(m, MultiHeadAttention))


# ---- structure: tying, LN placement, presets, parameter counts -----------------------------------
def test_weight_tying():
    model = _gpt()
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(7))
    model.train(); model(idx, torch.roll(idx, -1, 1))[1].backward()
    # one tensor, one gradient: both uses feed the same .grad
    assert model.transformer.wte.weight.grad is model.lm_head.weight.grad
    untied = sum(p.numel() for p in model.parameters()) + model.lm_head.weight.numel()
    assert model.num_params() == untied - 97 * 32
    assert model.num_params(non_embedding=True) == model.num_params() - 24 * 32


def test_ln_placement_switch():
    pre, post = _gpt(), _gpt(ln_placement="post")
    assert pre.transformer.h[0].pre_ln and not post.transformer.h[0].pre_ln
    assert isinstance(post.transformer.ln_f, torch.nn.Identity) and isinstance(pre.transformer.ln_f, torch.nn.LayerNorm)
    assert isinstance(pre.transformer.ln_emb, torch.nn.Identity) and isinstance(
        post.transformer.ln_emb, torch.nn.LayerNorm
    )
    # same weights (same seed, and the extra LayerNorms start at 1/0), different computation
    shared = {k: v for k, v in pre.state_dict().items() if "ln_f" not in k}
    missing, unexpected = post.load_state_dict(shared, strict=False)
    assert not unexpected and set(missing) == {"transformer.ln_emb.weight", "transformer.ln_emb.bias"}
    idx = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(8))
    assert (pre(idx)[0] - post(idx)[0]).abs().max() > 1e-3
    # post-LN: every block's output is normalised
    h = post.transformer.h[0](torch.randn(2, 8, 32))
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)


def test_presets_and_profile():
    for name, sizes in GPT_PRESETS.items():
        cfg = GPTConfig.from_preset(name)
        assert all(getattr(cfg, k) == v for k, v in sizes.items()) and cfg.ln_placement == "pre"
    for name in ENCODER_PRESETS:
        assert EncoderConfig.from_preset(name).ln_placement == "post"
    p = get_profile("cpu")
    cfg = GPTConfig.from_profile(p, vocab_size=500)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (
        p.n_layer,
        p.n_head,
        p.n_embd,
        p.block_size,
        500,
    )
    assert EncoderConfig.from_profile(p).vocab_size == p.vocab_size
    with pytest.raises(ValueError, match="known: bert-tiny"): EncoderConfig.from_preset("gpt-nano")


def test_real_model_sizes_match_hugging_face(no_network):
    "The gpt2 and bert-base presets have exactly the parameter counts of the real models (built on the meta device)."
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel
    with torch.device("meta"):
        ours_gpt = GPT(GPTConfig.from_preset("gpt2")).num_params()
        hf_gpt = GPT2LMHeadModel(GPT2Config()).num_parameters()
        ours_bert = sum(p.numel() for p in Encoder(EncoderConfig.from_preset("bert-base")).parameters())
        hf_bert = BertModel(BertConfig(), add_pooling_layer=False).num_parameters()
    assert ours_gpt == hf_gpt == 124_439_808
    assert ours_bert == hf_bert


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must be divisible by n_head \(3\)"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="attn_implementation must be one of"): GPTConfig(attn_implementation="flash")
    model = _gpt()
    with pytest.raises(ValueError, match="longer than block_size 24.*Crop the input"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\)"): model(torch.zeros(25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, seq_len\)"):
        _encoder()(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 1, 5))
