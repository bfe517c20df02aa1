"""Checks of llm_course.efficiency: the memory estimate against counted and measured bytes, LossScaler against
torch.amp.GradScaler, gradient accumulation against the big batch (with unequal token counts), checkpointed blocks
against
plain ones (ours and Hugging Face's switch), quantization codes and scales against torch.ao's observers and
fake-quantize,
QuantLinear / quantize_model behaviour, and bad input. No timing assertions."""
import warnings

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from llm_course.core import set_seed
from llm_course.transformer import GPT, GPTConfig
from llm_course.peft_methods import training_memory
from llm_course.efficiency import (
    LossScaler,
    QuantLinear,
    accumulate_gradients,
    checkpoint_blocks,
    dequantize,
    measure_memory,
    memory_estimate,
    pack_int4,
    quant_error,
    quantize,
    quantize_model,
    split_batch,
    state_bytes,
    unpack_int4,
    interleaved_times,
)

warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")


def tiny_gpt(seed=0, **kw):
    set_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32), **kw}))


def lm_batch(B=6, T=16, V=97, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def grads(model):
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return g


# --- memory -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(n_layer=3, n_head=4, n_embd=48, vocab_size=200)])
def test_memory_estimate_matches_counted_and_measured(kw):
    model = tiny_gpt(**kw).train()
    idx, tgt = lm_batch(5, 12, model.config.vocab_size)
    est, counted = memory_estimate(model, 5, 12), training_memory(model, dict(idx=idx, targets=tgt))
    for k in ("weights", "gradients", "optimizer"): assert est[k] == counted[k]
    assert abs(est["activations"] / counted["activations"] - 1) < 0.01
    _, mem = measure_memory(lambda: model(idx, tgt)[1])
    assert abs(mem["held"] / counted["activations"] - 1) < 0.02
    assert mem["peak"] >= mem["held"] > 0
    checkpoint_blocks(model)                                                      # only the blocks' inputs are kept
    _, ck = measure_memory(lambda: model(idx, tgt)[1])
    assert abs(ck["held"] / memory_estimate(model, 5, 12, checkpoint=True)["activations"] - 1) < 0.05


def test_memory_estimate_frozen_and_sgd():
    model = tiny_gpt()
    for p in model.transformer.h.parameters(): p.requires_grad_(False)
    n_train = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad)
    est = memory_estimate(model, 2, 8, optimizer_states=1)
    assert est["gradients"] == 4 * n_train and est["optimizer"] == 4 * n_train
    assert est["weights"] == 4 * model.num_params()


def test_measure_memory_bad_device():
    with pytest.raises(ValueError, match="'cpu' and 'cuda'"): measure_memory(lambda: None, "meta")
    with pytest.raises(ValueError, match="must be >= 1"): memory_estimate(tiny_gpt(), 2, 0)


def test_interleaved_times_calls_each():
    calls = {"a": 0, "b": 0}
    def f(k): calls[k] += 1
    t = interleaved_times({"a": lambda: f("a"), "b": lambda: f("b")}, repeats=3, warmup=2)
    assert calls == {"a": 5, "b": 5} and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())


# --- loss scaling -------------------------------------------------------------------------------------------------
def _scaler_run(scaler, inf_at=(1, 4), steps=7):
    set_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y, scales = torch.randn(12, 6), torch.randn(12, 1), []
    for i in range(steps):
        scaler.scale(F.mse_loss(model(x), y)).backward()
        if i in inf_at: model[2].weight.grad[0, 0] = float("nan")
        scaler.step(opt); scaler.update(); opt.zero_grad()
        scales.append(scaler.get_scale() if hasattr(scaler, "get_scale") else scaler.scale_value)
    return scales, [p.detach().clone() for p in model.parameters()]


def test_loss_scaler_matches_gradscaler():
    s_ours, p_ours = _scaler_run(LossScaler(2.0 ** 12, growth_interval=2))
    s_torch, p_torch = _scaler_run(torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=2))
    assert s_ours == s_torch and s_ours[1] == 2.0 ** 11          # halved after the NaN step
    for a, b in zip(p_ours, p_torch): assert torch.equal(a, b)


def test_loss_scaler_skips_bad_step():
    p = nn.Parameter(torch.ones(3)); opt = torch.optim.SGD([p], lr=1.0); s = LossScaler(4.0)
    s.scale(p.sum()).backward(); p.grad[0] = float("inf")
    assert s.step(opt) is False and torch.equal(p.detach(), torch.ones(3))
    s.update(); assert s.scale_value == 2.0


# --- accumulation -------------------------------------------------------------------------------------------------
def test_split_batch_sizes_and_types():
    idx, tgt = lm_batch(7, 4)
    parts = split_batch((idx, tgt), 3)
    assert [len(p[0]) for p in parts] == [3, 2, 2] and isinstance(parts[0], tuple)
    assert torch.equal(torch.cat([p[1] for p in parts]), tgt)
    d = split_batch(dict(idx=idx, targets=tgt), 7)
    assert len(d) == 7 and set(d[0]) == {"idx", "targets"}
    for bad in (0, -1, 8, 2.0, True):
        with pytest.raises(ValueError, match="micro_batches"): split_batch((idx, tgt), bad)


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_accumulation_equals_big_batch_with_unequal_tokens(k):
    model = tiny_gpt()
    idx, tgt = lm_batch(6, 16)
    tgt = tgt.clone()
    tgt[:3, 4:] = -100
    tgt[5, 10:] = -100  # micro-batches hold different token counts
    model(idx, tgt)[1].backward(); g_big = grads(model)
    loss = accumulate_gradients(model, split_batch((idx, tgt), k)); g_acc = grads(model)
    torch.testing.assert_close(g_acc, g_big, rtol=1e-5, atol=1e-7)
    with torch.no_grad(): assert abs(loss - model(idx, tgt)[1].item()) < 1e-5
    accumulate_gradients(model, split_batch((idx, tgt), k), "mean_of_means"); g_mom = grads(model)
    if k > 1: assert (g_mom - g_big).norm() / g_big.norm() > 1e-2                 # the shortcut is wrong here


def test_mean_of_means_right_with_equal_tokens():
    model = tiny_gpt()
    idx, tgt = lm_batch(6, 16)
    model(idx, tgt)[1].backward(); g_big = grads(model)
    accumulate_gradients(model, split_batch((idx, tgt), 3), "mean_of_means")
    torch.testing.assert_close(grads(model), g_big, rtol=1e-5, atol=1e-7)


def test_accumulation_bad_input():
    model = tiny_gpt(); idx, tgt = lm_batch(4, 8)
    with pytest.raises(ValueError, match="'tokens' or 'mean_of_means'"):
        accumulate_gradients(model, split_batch((idx, tgt), 2), "sum")
    with pytest.raises(ValueError, match="empty"): accumulate_gradients(model, [])
    with pytest.raises(ValueError, match="no scored items"):
        accumulate_gradients(model, [(idx, torch.full_like(tgt, -100))])


# --- checkpointing ------------------------------------------------------------------------------------------------
def test_checkpoint_blocks_same_grads_less_memory_and_undo():
    model = tiny_gpt(dropout=0.1).train()
    idx, tgt = lm_batch(4, 16)
    set_seed(3); model(idx, tgt)[1].backward(); g_plain = grads(model)
    _, plain = measure_memory(lambda: model(idx, tgt)[1])
    keys = list(model.state_dict())
    checkpoint_blocks(model); checkpoint_blocks(model)                            # twice: still wrapped once
    set_seed(3); model(idx, tgt)[1].backward(); g_ck = grads(model)
    _, ck = measure_memory(lambda: model(idx, tgt)[1])
    torch.testing.assert_close(g_ck, g_plain, rtol=0, atol=1e-7)                  # dropout masks replayed
    assert ck["held"] < 0.7 * plain["held"]
    assert list(model.state_dict()) == keys
    with torch.no_grad(): model(idx)                                              # no grad: plain forward
    checkpoint_blocks(model, enable=False)
    assert not any("forward" in b.__dict__ for b in model.transformer.h)


def test_checkpoint_blocks_on_hf_bert_matches_hf_switch():
    from transformers import BertConfig, BertModel
    set_seed(0)
    base = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
        )
    ).train()
    ids = torch.randint(0, 50, (3, 10))
    def g(setup):
        import copy
        m = copy.deepcopy(base); setup(m)
        set_seed(1); m(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        return torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    plain = g(lambda m: None)
    torch.testing.assert_close(g(lambda m: checkpoint_blocks(m, m.encoder.layer)), plain, rtol=0, atol=1e-7)
    torch.testing.assert_close(g(lambda m: m.activation_checkpointing_enable()), plain, rtol=0, atol=1e-7)


def test_checkpoint_blocks_bad_input():
    with pytest.raises(ValueError, match="blocks=model.encoder.layer"): checkpoint_blocks(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Modules"): checkpoint_blocks(nn.Linear(2, 2), blocks=[lambda x: x])


# --- quantization -------------------------------------------------------------------------------------------------
def _weight(seed=0, shape=(24, 64)):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) * 0.05
    w[3, 7] = 0.9                                                                  # an outlier in one row
    return w + 0.01 * torch.arange(shape[0])[:, None]                              # rows not centred on 0


@pytest.mark.parametrize(
    "sym,kw",
    [
        (True, dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127)),
        (False, dict(dtype=torch.quint8, qscheme=torch.per_channel_affine, quant_min=0, quant_max=255)),
    ],
)
def test_int8_matches_torch_observer_and_fake_quantize(sym, kw):
    from torch.ao.quantization.observer import PerChannelMinMaxObserver
    w = _weight()
    obs = PerChannelMinMaxObserver(ch_axis=0, **kw); obs(w)
    scale, zp = obs.calculate_qparams()
    q = quantize(w, 8, symmetric=sym)
    torch.testing.assert_close(q.scale[:, 0], scale.float(), rtol=1e-7, atol=0)
    assert torch.equal(q.zero_point[:, 0], zp.int())
    fq = torch.fake_quantize_per_channel_affine(w, scale.float(), zp.int(), 0, kw["quant_min"], kw["quant_max"])
    torch.testing.assert_close(dequantize(q), fq, rtol=0, atol=1e-7)


def test_quantize_dynamic_weights_match_ours():
    "torch's int8 Linear (quantize_dynamic, per-channel, range [-127, 127]) stores our codes."
    from torch.ao.quantization import QConfig, quantize_dynamic
    from torch.ao.quantization.observer import PerChannelMinMaxObserver, default_dynamic_quant_observer
    set_seed(0); lin = nn.Linear(64, 24)
    with torch.no_grad(): lin.weight.copy_(_weight())
    qc = QConfig(
        activation=default_dynamic_quant_observer,
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        ),
    )
    dq = quantize_dynamic(nn.Sequential(lin), {nn.Linear: qc})
    tw = dq[0].weight()
    assert torch.equal(tw.int_repr(), quantize(lin.weight, 8).q)
    torch.testing.assert_close(
        tw.q_per_channel_scales().float(), quantize(lin.weight, 8).scale[:, 0], rtol=1e-6, atol=0
    )
    x = torch.randn(5, 64)
    ours, theirs, ref = QuantLinear.from_linear(lin)(x), dq(x), lin(x)
    rel = lambda y: ((y - ref).norm() / ref.norm()).item()
    assert rel(ours) < rel(theirs) < 0.05                                          # theirs also rounds the activations


@pytest.mark.parametrize(
    "bits,group,sym", [(8, None, True), (8, 16, False), (4, 32, True), (4, 16, False), (3, 8, True), (2, None, False)]
)
def test_quantize_error_bound_and_ranges(bits, group, sym):
    w = _weight()
    w[5, :8] = 0.0  # exact zeros, so the last check below runs
    q = quantize(w, bits, sym, group)
    assert (dequantize(q) - w).abs().max() <= (q.scale.max() / 2) * (
        1 + 1e-5
    )  # round to nearest: at most half a step per group
    g = group or w.shape[1]
    half = (dequantize(q) - w).abs().reshape(w.shape[0], -1, g).amax(-1) <= q.scale / 2 * (1 + 1e-5)
    assert half.all()
    if sym: assert q.q.abs().max() <= 2 ** (bits - 1) - 1 and (q.zero_point == 0).all()
    else: assert q.q.max() <= 2 ** bits - 1
    zeros = dequantize(q)[w == 0]
    assert zeros.numel() == 8 and (zeros == 0).all(), zeros  # 0 is exactly representable (z is an integer)


def test_groups_and_bits_order_errors():
    e = quant_error(_weight(), bits=(8, 4, 2), group_sizes=(None, 16))
    assert e[8, None] < e[4, None] < e[2, None] and e[4, 16] < e[4, None]  # the outlier row spoils per-channel scales


def test_zero_exactly_representable_asymmetric():
    w = torch.tensor([[0.0, 0.3, 0.7, 1.0], [-2.0, -1.0, 0.0, -0.5]])
    assert (dequantize(quantize(w, 4, symmetric=False))[w == 0] == 0).all()


def test_int4_packing_roundtrip_and_size():
    q = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    p = pack_int4(q)
    assert p.shape == (5, 6) and torch.equal(unpack_int4(p), q)
    set_seed(0); lin = nn.Linear(64, 24)
    for sym in (True, False):
        ql = QuantLinear.from_linear(lin, 4, 32, sym)
        assert ql.qweight.numel() == lin.weight.numel() // 2
        assert torch.equal(ql.codes(), quantize(lin.weight, 4, sym, 32).q)
        x = torch.randn(3, 64)
        torch.testing.assert_close(
            ql(x), F.linear(x, dequantize(quantize(lin.weight, 4, sym, 32)), lin.bias), rtol=1e-5, atol=1e-6
        )


def test_quantize_model_golden_and_tied_head():
    model = tiny_gpt().eval()
    qm = quantize_model(model, 8)
    assert isinstance(model.transformer.h[0].attn.c_attn, nn.Linear)               # the original is untouched
    assert sum(isinstance(m, QuantLinear) for m in qm.modules()) == 4 * model.config.n_layer
    assert isinstance(qm.lm_head, nn.Linear) and qm.lm_head.weight is qm.transformer.wte.weight
    idx, _ = lm_batch(2, 16)
    with torch.no_grad(): a, b = model(idx)[0], qm(idx)[0]
    assert (a - b).abs().max() < 0.05 * a.abs().max() and (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert state_bytes(qm) < 0.6 * state_bytes(model)
    assert state_bytes(quantize_model(model, 4, 16)) < state_bytes(qm)
    all_q = quantize_model(model, 8, skip=())
    assert isinstance(all_q.lm_head, QuantLinear)


def test_quantization_bad_input():
    lin = nn.Linear(64, 8)
    for bits in (1, 9, 16, 0, 4.0, True):
        with pytest.raises(ValueError, match="2..8 bits"): quantize(lin.weight, bits)
    with pytest.raises(ValueError, match="2..8 bits"): quantize_model(tiny_gpt(), bits=12)
    with pytest.raises(ValueError, match="positive divisor of in_features=64"): quantize(lin.weight, 4, group_size=24)
    with pytest.raises(ValueError, match="positive divisor"): quantize(lin.weight, 4, group_size=0)
    with pytest.raises(ValueError, match="2-D weight"): quantize(torch.ones(2, 3, 4))
    with pytest.raises(TypeError, match="needs an nn.Linear, got Embedding"):
        QuantLinear.from_linear(nn.Embedding(4, 4))
    with pytest.raises(ValueError, match="no nn.Linear layers"): quantize_model(nn.Sequential(nn.LayerNorm(4)))
