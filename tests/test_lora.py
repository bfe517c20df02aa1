"""Checks of llm_course.lora: parity with peft (LoRA with non-zero B, prompt and prefix tuning), merge/unmerge,
adapter-only
save/load, ours -> peft -> ours conversion, freezing, bad input, adapters and prompt tuning shapes and identity at
start."""
import copy, json

import pytest
import torch
from torch import nn

from llm_course.core import set_seed
from llm_course.heads import count_parameters
from llm_course.lora import (add_lora, copy_lora_weights, from_peft_state_dict, linear_names,
    load_lora, load_peft_adapter, lora_layers, lora_state_dict, merge_lora, save_lora, save_peft_adapter,
    to_peft_state_dict, unmerge_lora)
from llm_course.peft_methods import (PromptTuning, PrefixTuning, BottleneckAdapter, add_adapters, bitfit,
    prefix_from_peft, training_memory)

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model


@pytest.fixture(scope="module")
def minilm():
    from llm_course.assets import load_minilm_classifier, load_minilm_tokenizer
    set_seed(0)
    model = load_minilm_classifier(3).eval()
    tok = load_minilm_tokenizer()
    batch = tok(
        ["the bank's shares fell", "a quiet win for the home side, two goals to nil"], padding=True, return_tensors="pt"
    )
    return model, batch


def tiny_bert(num_labels=3):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32, num_labels=num_labels, initializer_range=0.2)  # O(1) logits
    return BertForSequenceClassification(cfg).eval()


def tiny_batch(B=2, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long); mask[1, -2:] = 0
    return dict(input_ids=ids, attention_mask=mask)


def randomize_B(model, std=0.2):
    "A zero B makes every LoRA model equal to its base model: parity would prove nothing."
    with torch.no_grad():
        for m in lora_layers(model).values(): m.lora_B.weight.normal_(0, std)


def logits(model, batch):
    with torch.no_grad(): return model(**batch).logits


# --- parity with peft
# --------------------------------------------------------------------------------------------------

def test_lora_matches_peft_with_nonzero_B(minilm):
    base, batch = minilm
    ours = add_lora(copy.deepcopy(base), ["query", "value"], r=4, lora_alpha=12, modules_to_save=["classifier"]).eval()
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=12, target_modules=["query", "value"],
                                                            modules_to_save=["classifier"])).eval()
    randomize_B(ours)
    copy_lora_weights(ours, theirs)
    lo, lt, lb = logits(ours, batch), logits(theirs, batch), logits(base, batch)
    assert (lo - lb).abs().max() > 1e-2                        # the update is visible (1000x atol)...
    torch.testing.assert_close(lo, lt, rtol=0, atol=1e-5)      # ...and identical to peft's
    assert count_parameters(ours)["trainable"] == count_parameters(theirs)["trainable"]


def test_parity_fails_if_scaling_is_wrong():
    "The parity check can fail: the same A and B with another scaling gives other outputs."
    base, batch = tiny_bert(), tiny_batch()
    ours = add_lora(copy.deepcopy(base), ["query", "value"], r=2, lora_alpha=4).eval()
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"])
    ).eval()
    randomize_B(ours); copy_lora_weights(ours, theirs)
    torch.testing.assert_close(logits(ours, batch), logits(theirs, batch), rtol=0, atol=1e-6)
    for m in lora_layers(ours).values(): m.scaling = 4 / 2 ** 0.5     # rsLoRA's scaling, not plain LoRA's
    assert (logits(ours, batch) - logits(theirs, batch)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "targets", [["query"], ["attention.output.dense", "intermediate.dense"], r".*\.layer\.1\..*(key|value)", ["dense"]]
)
def test_target_matching_agrees_with_peft(targets):
    base = tiny_bert()
    ours = set(lora_layers(add_lora(copy.deepcopy(base), targets)))
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=targets))
    from peft.tuners.lora import LoraLayer
    theirs = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if isinstance(m, LoraLayer)}
    assert ours == theirs and ours


def test_prompt_tuning_matches_peft():
    base, batch = tiny_bert(), tiny_batch()
    ours = PromptTuning(copy.deepcopy(base), num_virtual_tokens=4, modules_to_save=["classifier"]).eval()
    theirs = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)).eval()
    with torch.no_grad():
        ours.prompt.copy_(theirs.prompt_encoder.default.embedding.weight)
        theirs.base_model.classifier.modules_to_save.default.load_state_dict(ours.model.classifier.state_dict())
    torch.testing.assert_close(logits(ours, batch), logits(theirs, batch), rtol=0, atol=1e-6)
    assert count_parameters(ours)["trainable"] == count_parameters(theirs)["trainable"]


def test_prefix_tuning_matches_peft_on_gpt2():
    from llm_course.transformer import GPT, GPTConfig, to_hf_gpt2
    set_seed(0)
    gpt = GPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    theirs = get_peft_model(to_hf_gpt2(gpt), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)).eval()
    ours = PrefixTuning(gpt, num_virtual_tokens=3).eval()
    with torch.no_grad(): ours.prefix.copy_(prefix_from_peft(theirs.prompt_encoder.default.embedding.weight, 2, 2))
    ids = torch.randint(0, 40, (2, 9)); am = torch.ones_like(ids); am[0, -4:] = 0
    with torch.no_grad():
        lo, lt, lb = (
            ours(ids, attention_mask=am)[0],
            theirs(input_ids=ids, attention_mask=am).logits,
            gpt(ids, attention_mask=am)[0],
        )
    keep = am.bool()
    torch.testing.assert_close(lo[keep], lt[keep], rtol=0, atol=1e-5)
    assert (lo - lb)[keep].abs().max() > 1e-2
    assert count_parameters(ours)["trainable"] == 2 * 2 * 3 * 16


def test_prefix_tuning_on_hf_bert_matches_our_encoder():
    """The Hugging Face path (pre-hooks that hand BertSelfAttention our cache and widen its mask) equals our encoder's
    cache hook."""
    from llm_course.transformer import Encoder, EncoderConfig, to_hf_bert
    set_seed(0)
    enc = Encoder(EncoderConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    ours = PrefixTuning(enc, num_virtual_tokens=3, shift_positions=False).eval()
    hf = PrefixTuning(to_hf_bert(enc), num_virtual_tokens=3).eval()
    with torch.no_grad(): ours.prefix.normal_(); hf.prefix.copy_(ours.prefix)
    ids = torch.randint(0, 40, (2, 9)); am = torch.ones_like(ids); am[1, -3:] = 0
    with torch.no_grad():
        ho, hh, h0 = (
            ours(ids, attention_mask=am),
            hf(ids, attention_mask=am).last_hidden_state,
            enc(ids, attention_mask=am),
        )
        hh_nomask = hf(ids).last_hidden_state                      # sdpa without a mask: the hook must cope with None
    keep = am.bool()
    torch.testing.assert_close(ho[keep], hh[keep], rtol=0, atol=1e-5)
    assert (ho - h0)[keep].abs().max() > 1e-2
    torch.testing.assert_close(hh_nomask[0], hh[0], rtol=0, atol=1e-5)     # row 0 has no padding
    assert [n for n, p in hf.named_parameters() if p.requires_grad] == ["prefix"]


# --- merge, save, convert
# ----------------------------------------------------------------------------------------------

def test_merge_unmerge_same_outputs():
    base, batch = tiny_bert(), tiny_batch()
    model = add_lora(copy.deepcopy(base), ["query", "key", "value", "dense"], r=3, lora_alpha=5).eval()
    randomize_B(model)
    before = logits(model, batch)
    w0 = model.bert.encoder.layer[0].attention.self.query.base_layer.weight.clone()
    merge_lora(model)
    assert all(m.merged for m in lora_layers(model).values())
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.base_layer.weight, w0)
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(
        model.bert.encoder.layer[0].attention.self.query.base_layer.weight, w0, rtol=0, atol=1e-6
    )
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-5)


def test_adapter_only_save_load_round_trip(tmp_path):
    base, batch = tiny_bert(), tiny_batch()
    model = add_lora(copy.deepcopy(base), ["query", "value"], r=2, lora_alpha=4, modules_to_save=["classifier"]).eval()
    randomize_B(model)
    with torch.no_grad(): model.classifier.weight.add_(1.0)      # a trained head is part of the adapter
    save_lora(model, tmp_path)
    from safetensors.torch import load_file
    keys = set(load_file(str(tmp_path / "lora_adapter.safetensors")))
    assert keys == set(lora_state_dict(model)) and all(".lora_" in k or k.startswith("classifier.") for k in keys)
    assert not any("base_layer" in k for k in keys)
    assert json.loads((tmp_path / "lora_config.json").read_text())["r"] == 2
    loaded = load_lora(copy.deepcopy(base), tmp_path).eval()
    torch.testing.assert_close(logits(loaded, batch), logits(model, batch), rtol=0, atol=0)


def test_ours_to_peft_and_back(tmp_path):
    base, batch = tiny_bert(), tiny_batch()
    ours = add_lora(copy.deepcopy(base), ["query", "value"], r=2, lora_alpha=6, modules_to_save=["classifier"]).eval()
    randomize_B(ours)
    with torch.no_grad(): ours.classifier.bias.add_(0.5)
    save_peft_adapter(ours, tmp_path / "a")
    pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a").eval()
    torch.testing.assert_close(logits(pm, batch), logits(ours, batch), rtol=0, atol=1e-6)
    pm.save_pretrained(tmp_path / "b")
    back = load_peft_adapter(copy.deepcopy(base), tmp_path / "b").eval()
    torch.testing.assert_close(logits(back, batch), logits(ours, batch), rtol=0, atol=1e-6)
    sd = lora_state_dict(ours)
    assert from_peft_state_dict(to_peft_state_dict(sd)).keys() == sd.keys()


def test_peft_trained_adapter_loads_into_ours(tmp_path):
    "An adapter made by peft itself (its own init, then non-zero B) runs the same in our layers."
    base, batch = tiny_bert(), tiny_batch()
    pm = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["key", "dense"], lora_dropout=0.1)
    ).eval()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.2)
    pm.save_pretrained(tmp_path)
    ours = load_peft_adapter(copy.deepcopy(base), tmp_path).eval()
    torch.testing.assert_close(logits(ours, batch), logits(pm, batch), rtol=0, atol=1e-6)
    assert ours.lora_config.lora_dropout == 0.1


def test_unsupported_peft_options_are_refused(tmp_path):
    base = tiny_bert()
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["query"], use_dora=True))
    pm.save_pretrained(tmp_path)
    with pytest.raises(NotImplementedError, match="use_dora"): load_peft_adapter(copy.deepcopy(base), tmp_path)


def test_rslora_matches_peft_and_round_trips(tmp_path):
    """use_rslora: scaling alpha / sqrt(r) as peft's, saved and read back both ways (alpha / r here would differ by 2x
    at r=4)."""
    base, batch = tiny_bert(), tiny_batch()
    ours = add_lora(copy.deepcopy(base), ["query", "value"], r=4, lora_alpha=6, use_rslora=True).eval()
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=6, target_modules=["query", "value"], use_rslora=True)
    ).eval()
    randomize_B(ours); copy_lora_weights(ours, theirs)
    assert all(m.scaling == 3.0 for m in lora_layers(ours).values())
    torch.testing.assert_close(logits(ours, batch), logits(theirs, batch), rtol=0, atol=1e-6)
    save_peft_adapter(ours, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["use_rslora"] is True
    torch.testing.assert_close(
        logits(PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "p").eval(), batch),
        logits(ours, batch),
        rtol=0,
        atol=1e-6,
    )
    theirs.save_pretrained(tmp_path / "q")
    torch.testing.assert_close(
        logits(load_peft_adapter(copy.deepcopy(base), tmp_path / "q").eval(), batch),
        logits(ours, batch),
        rtol=0,
        atol=1e-6,
    )
    save_lora(ours, tmp_path / "o")
    torch.testing.assert_close(
        logits(load_lora(copy.deepcopy(base), tmp_path / "o").eval(), batch), logits(ours, batch), rtol=0, atol=0
    )


def test_prompt_tuning_class_label_init_matches_peft_text_init(minilm):
    """init_ids: the label words' embeddings cycled to n rows, as peft's prompt_tuning_init='TEXT' (a random draw would
    not match)."""
    from llm_course.assets import load_minilm_tokenizer
    base, _ = minilm
    tok = load_minilm_tokenizer()
    text = "negative neutral positive"
    theirs = get_peft_model(
        copy.deepcopy(base),
        PromptTuningConfig(
            task_type="SEQ_CLS",
            num_virtual_tokens=7,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=tok.name_or_path,
        ),
    )
    ours = PromptTuning(copy.deepcopy(base), 7, init_ids=tok(text)["input_ids"])
    torch.testing.assert_close(ours.prompt, theirs.prompt_encoder.default.embedding.weight, rtol=0, atol=0)
    assert not torch.equal(PromptTuning(copy.deepcopy(base), 7).prompt, ours.prompt)
    with pytest.raises(ValueError, match="init_ids is empty"): PromptTuning(copy.deepcopy(base), 7, init_ids=[])


# --- freezing and training
# -----------------------------------------------------------------------------------------------

def test_only_lora_and_saved_modules_train():
    base = tiny_bert()
    model = add_lora(copy.deepcopy(base), ["query", "value"], r=2, modules_to_save=["classifier"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n or n.startswith("classifier.") for n in trainable)
    assert sum(".lora_" in n for n in trainable) == 2 * 2 * 2
    out = model(**tiny_batch(), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    # at the start B = 0, so dL/dA = 0 exactly; dL/dB is not: B moves first, then A
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for n, p in model.named_parameters() if ".lora_A." in n)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)


def test_lora_training_changes_only_the_adapter():
    from llm_course.training import TrainConfig, fit
    from llm_course.transformer import GPT, GPTConfig
    set_seed(0)
    gpt = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16))
    frozen = {k: v.clone() for k, v in gpt.state_dict().items()}
    add_lora(gpt, ["c_attn", "c_proj", "c_fc"], r=4, lora_alpha=8)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 32, (1, 17), generator=g).repeat(16, 1)
    data = [dict(idx=s[:-1], targets=s[1:]) for s in seq]
    hist = fit(gpt, data, config=TrainConfig(lr=3e-2, max_steps=25, batch_size=8, progress=False, plot=False))
    assert hist.loss[-1] < hist.loss[0] - 0.1, hist.loss  # frozen tiny (0.02-std) tied embeddings cap how far it can go
    for k, v in gpt.state_dict().items():
        if "lora_" not in k: assert torch.equal(v, frozen[k.replace(".base_layer.", ".")])


def test_bitfit_and_training_memory():
    model = bitfit(tiny_bert(), ["classifier"])
    assert all(
        n.endswith("bias") or n.startswith("classifier.") for n, p in model.named_parameters() if p.requires_grad
    )
    lora = add_lora(tiny_bert(), ["query"], r=2)
    mem = training_memory(lora, {**tiny_batch(), "labels": torch.tensor([0, 1])})
    assert mem["gradients"] == 4 * count_parameters(lora)["trainable"] and mem["optimizer"] == 2 * mem["gradients"]
    full = training_memory(tiny_bert(), {**tiny_batch(), "labels": torch.tensor([0, 1])})
    assert full["weights"] == mem["weights"] - 4 * count_parameters(lora)["trainable"]
    assert full["activations"] > mem["activations"] > 0


# --- bad input
# -----------------------------------------------------------------------------------------------------------

def test_bad_inputs():
    base = tiny_bert()
    with pytest.raises(ValueError, match=r"matches no module.*attention\.self\.query"):
        add_lora(copy.deepcopy(base), ["qkv"])
    assert "bert.encoder.layer.*.attention.self.query" in linear_names(base)
    for r in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"): add_lora(copy.deepcopy(base), ["query"], r=r)
    with pytest.raises(ValueError, match="lora_dropout"): add_lora(copy.deepcopy(base), ["query"], lora_dropout=1.0)
    twice = add_lora(copy.deepcopy(base), ["query"])
    with pytest.raises(ValueError, match="already has LoRA"): add_lora(twice, ["query", "value"])
    with pytest.raises(TypeError, match="BertSelfAttention"): add_lora(copy.deepcopy(base), ["attention.self"])
    with pytest.raises(ValueError, match="has no LoRA layers"): merge_lora(copy.deepcopy(base))
    with pytest.raises(ValueError, match="no LoRA layer is merged"): unmerge_lora(twice)
    with pytest.raises(ValueError, match="'classifier'"):
        add_lora(copy.deepcopy(base), ["query"], modules_to_save=["head"])
    with pytest.raises(ValueError, match="empty"): add_lora(copy.deepcopy(base), [])
    merged = merge_lora(add_lora(copy.deepcopy(base), ["value"]))
    with pytest.raises(ValueError, match="unmerge_lora"): save_lora(merged, "/nonexistent-never-written")
    with pytest.raises(ValueError, match="matches no linear layer"): add_adapters(copy.deepcopy(base), ["nope"])
    adapted = add_adapters(copy.deepcopy(base), ["attention.output.dense"], bottleneck=4)
    with pytest.raises(ValueError, match="already has an adapter: call add_adapters once per layer"):
        add_adapters(adapted, ["attention.output.dense"])
    with pytest.raises(ValueError, match="hidden width m"): BottleneckAdapter(16, 0)
    with pytest.raises(ValueError, match="typical: 0.0 to 0.1"):
        add_lora(copy.deepcopy(base), ["query"], lora_dropout=-0.1)


def test_adapter_for_another_head_size_is_refused(tmp_path):
    """An adapter whose saved head has 3 classes does not load into a 4-class model: the error names both shapes and the
    fix."""
    save_lora(add_lora(tiny_bert(3), ["query"], r=2, modules_to_save=["classifier"]), tmp_path)
    with pytest.raises(
        ValueError,
        match=r"classifier\.(weight|bias): adapter shape \(3\b.*\) != model shape \(4\b.*base model it was trained on",
    ):
        load_lora(tiny_bert(4), tmp_path)


def test_two_calls_on_different_layers_keep_both_trainable(tmp_path):
    base, batch = tiny_bert(), tiny_batch()
    model = add_lora(copy.deepcopy(base), ["query"], r=2, modules_to_save=["classifier"])
    add_lora(model, ["value"], r=2)
    assert len(lora_layers(model)) == 4
    assert all(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n or n.startswith("classifier."))
    randomize_B(model); model.eval()
    save_lora(model, tmp_path)
    torch.testing.assert_close(
        logits(load_lora(copy.deepcopy(base), tmp_path).eval(), batch), logits(model, batch), rtol=0, atol=0
    )


# --- adapters and prompt tuning
# ------------------------------------------------------------------------------------------

def test_adapters_start_as_identity_and_train():
    base, batch = tiny_bert(), tiny_batch()
    model = add_adapters(
        copy.deepcopy(base), ["attention.output.dense", "output.dense"], bottleneck=4, modules_to_save=["classifier"]
    ).eval()
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    adapters = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
    assert len(adapters) == 4 and adapters[0].down.weight.shape == (4, 16) and adapters[0].up.weight.shape == (16, 4)
    with torch.no_grad(): adapters[0].up.weight.normal_()
    assert (logits(model, batch) - logits(base, batch)).abs().max() > 1e-3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".adapter." in n or n.startswith("classifier.") for n in trainable)


def test_prompt_tuning_shapes():
    base, batch = tiny_bert(), tiny_batch(B=3, T=5)
    pt = PromptTuning(copy.deepcopy(base), num_virtual_tokens=6)
    assert pt.prompt.shape == (6, 16) and [n for n, p in pt.named_parameters() if p.requires_grad] == ["prompt"]
    seen = {}
    pt.model.bert.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    out = pt(**batch, labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3) and torch.isfinite(out.loss)
    assert seen["inputs_embeds"].shape == (3, 11, 16) and seen["attention_mask"].shape == (3, 11)
    assert seen["attention_mask"][:, :6].eq(1).all() and torch.equal(
        seen["attention_mask"][:, 6:], batch["attention_mask"]
    )
    out.loss.backward()
    assert pt.prompt.grad is not None and pt.prompt.grad.abs().sum() > 0


def test_prompt_tuning_on_a_causal_lm_pads_token_labels():
    from llm_course.testing import tiny_gpt2
    lm = tiny_gpt2(block_size=32)
    pt = PromptTuning(lm, num_virtual_tokens=3)
    ids = torch.randint(0, 256, (2, 8))
    out = pt(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 11, 256)
    # labels are [-100] * 3 + ids: the last prompt position predicts ids[0], as in peft
    manual = nn.functional.cross_entropy(out.logits[:, 2:-1].reshape(-1, 256), ids.reshape(-1))
    torch.testing.assert_close(out.loss, manual, rtol=1e-5, atol=1e-6)
