"""Checks of llm_course.multimodal: the symmetric InfoNCE loss against the formula, the one-line form and Hugging Face's
CLIPModel; duplicate captions; the towers (ViT patches, byte padding, frozen MiniLM); prompt ensembling; the hit rate
at k against scikit-learn and simulation; bad input; seeded training that learns and repeats exactly."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_course.core import get_profile, set_seed
from llm_course.multimodal import (
    ByteTextEncoder,
    CLIP,
    CNNEncoder,
    ClampLogitScale,
    FrozenMiniLMText,
    HELDOUT_TEMPLATES,
    ImageTextPairs,
    TRAIN_TEMPLATES,
    ViTEncoder,
    accuracy_on,
    caption,
    chance_hit_rate_at_k,
    check_images,
    class_prompts,
    clip_logits,
    clip_loss,
    hit_rate_at_k,
    make_clip,
    plot_similarity,
    split_digits,
    train_clip,
    zero_shot_classifier,
    zero_shot_predict,
)


def loops_loss(s):
    "The symmetric InfoNCE formula, one term at a time."
    B = len(s)
    rows = sum(-math.log(math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(B))) for i in range(B)) / B
    cols = sum(-math.log(math.exp(s[j][j]) / sum(math.exp(s[i][j]) for i in range(B))) for j in range(B)) / B
    return (rows + cols) / 2


@pytest.mark.parametrize("B", [1, 2, 7])
def test_loss_matches_formula_and_one_liner(B):
    s = torch.randn(B, B, generator=torch.Generator().manual_seed(B), dtype=torch.float64) * 4
    ref = (F.cross_entropy(s, torch.arange(B)) + F.cross_entropy(s.T, torch.arange(B))) / 2
    assert abs(clip_loss(s).item() - loops_loss(s.tolist())) < 1e-12
    assert abs(clip_loss(s).item() - ref.item()) < 1e-12


def tiny_hf_clip():
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            image_size=8,
            patch_size=2,
            num_channels=3,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPModel(cfg).eval()


def test_logits_and_loss_match_hugging_face_clip():
    hf = tiny_hf_clip()
    with torch.no_grad():
        hf.logit_scale.fill_(3.0)  # not the init value: the scale must really be used
        out = hf(input_ids=torch.randint(0, 99, (6, 9)), pixel_values=torch.randn(6, 3, 8, 8), return_loss=True)
    ours = clip_logits(out.image_embeds, out.text_embeds, hf.logit_scale.exp())
    torch.testing.assert_close(ours, out.logits_per_image, rtol=0, atol=1e-5)
    assert abs(clip_loss(out.logits_per_image).item() - out.loss.item()) < 1e-6
    assert (
        abs(CLIP(CNNEncoder(8), ByteTextEncoder(1, 1, 8)).logit_scale.item() - tiny_hf_clip().logit_scale.item()) < 1e-4
    )


def test_duplicate_captions():
    g = torch.Generator().manual_seed(1)
    u = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    v = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([3, 3, 3, 5, 7])
    v_dup = v[[0, 0, 0, 3, 4]]                                            # pairs 0-2: one caption three times
    s = clip_logits(u, v_dup, 14.3)
    assert abs(clip_loss(s).item() - clip_loss(s, labels).item()) < 1e-12    # exact duplicates: the same loss
    perfect = torch.eye(5, dtype=torch.float64)[[0, 0, 0, 3, 4]]
    floor = clip_loss(clip_logits(perfect, perfect, 100.0)).item()
    assert abs(floor - 3 * math.log(3) / 5) < 1e-6  # rows and columns of the triple stuck at ln 3
    s_para = clip_logits(u, v, 14.3).requires_grad_()                       # paraphrases: different captions, one class
    g_std, = torch.autograd.grad(clip_loss(s_para), s_para)
    g_aware, = torch.autograd.grad(clip_loss(s_para, labels), s_para)
    assert (g_std[:3, :3][~torch.eye(3, dtype=bool)] > 0).all()               # standard loss: pushes paraphrases away
    assert abs(g_aware.sum().item()) < 1e-12 and g_aware[0, 1] < g_std[0, 1]
    distinct = torch.arange(5)
    assert abs(clip_loss(s_para, distinct).item() - clip_loss(s_para).item()) < 1e-12


def test_loss_bad_input():
    with pytest.raises(ValueError, match="square"): clip_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"): clip_loss(torch.zeros(3, 3), torch.zeros(4))


def test_vit_patches_and_blocks():
    from llm_course.transformer import Block
    vit = ViTEncoder(2, 2, 16)
    assert all(isinstance(b, Block) for b in vit.h) and len(vit.h) == 2
    x = torch.rand(3, 1, 8, 8)
    patches = F.unfold(x, 2, stride=2).transpose(1, 2)                        # what the ViT embeds
    by_hand = x.view(3, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(3, 16, 4)  # row-major 2x2 patches
    torch.testing.assert_close(patches, by_hand, rtol=0, atol=0)
    assert vit(x).shape == (3, 16) and CNNEncoder(16)(x).shape == (3, 16)


def test_image_bad_input():
    x = torch.rand(2, 1, 8, 8)
    assert check_images(x[:, 0]).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"images.view\(-1, 1, 8, 8\)"): check_images(torch.rand(2, 64))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 8, 8\)"): check_images(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divide by 16"): check_images(x * 16)
    with pytest.raises(TypeError, match="torch.Tensor"): check_images(np.zeros((2, 1, 8, 8)))


def test_byte_text_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = ByteTextEncoder(1, 2, 16, max_bytes=32).eval()
    ids, mask = enc.tokenize(["héllo", "a"])
    assert ids[0].tolist() == list("héllo".encode()) and mask.sum(1).tolist() == [6, 1]
    torch.testing.assert_close(enc(["a"]), enc(["a", "a much longer caption"])[:1], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="at most 32"): enc(["x" * 33])
    with pytest.raises(ValueError, match="caption 1 is empty"): enc(["a", ""])
    with pytest.raises(TypeError, match="list of strings"): enc("a")


def test_model_bad_input():
    model = make_clip(profile=get_profile("ci"), device="cpu")
    with pytest.raises(ValueError, match="3 images but 2 captions"): model(torch.rand(3, 1, 8, 8), ["a 1", "a 2"])
    with pytest.raises(ValueError, match="no captions"): model.encode_text([])
    with pytest.raises(ValueError, match="use one of"): make_clip(text="gpt")
    with pytest.raises(ValueError, match="empty"): zero_shot_classifier(model, [])
    with pytest.raises(ValueError, match="class 2 has no prompt"): zero_shot_classifier(model, [["a 0"], ["a 1"], []])
    with pytest.raises(TypeError, match="one list of prompts per class"): zero_shot_classifier(model, ["a 0", "a 1"])


def test_prompt_ensembling_is_mean_of_unit_embeddings():
    model = make_clip(profile=get_profile("ci"), device="cpu").eval()
    prompts = class_prompts(TRAIN_TEMPLATES[:3], classes=[1, 4])
    with torch.no_grad(): ref = F.normalize(torch.stack([model.encode_text(p).mean(0) for p in prompts]), dim=-1)
    torch.testing.assert_close(zero_shot_classifier(model, prompts), ref, rtol=0, atol=1e-6)
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad(): want = (model.encode_image(images) @ ref.T).argmax(1)
    assert zero_shot_predict(model, images, ref).tolist() == want.tolist()


def test_frozen_minilm_text_matches_sentence_embeddings():
    from llm_course.assets import load_minilm, load_minilm_tokenizer, sentence_embeddings
    tower = FrozenMiniLMText()
    texts = ["a handwritten 3", "the number three, written by hand", "a handwritten 3"]
    out = tower(texts)
    ref = sentence_embeddings(load_minilm(), load_minilm_tokenizer(), texts)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert len(tower.cache) == 2 and sum(p.numel() for p in tower.parameters()) == 0
    model = CLIP(CNNEncoder(8), tower, projection_dim=4)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "visual_projection.weight",
        "text_projection.weight",
        "logit_scale",
        *(f"vision_model.{n}" for n, _ in model.vision_model.named_parameters()),
    }


def test_hit_rate_at_k_against_sklearn_and_simulation():
    from sklearn.metrics import top_k_accuracy_score
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(40, 40, generator=g, dtype=torch.float64)
    for k in (1, 2, 5, 39):
        assert (
            abs(hit_rate_at_k(sim, k) - top_k_accuracy_score(np.arange(40), sim.numpy(), k=k, labels=np.arange(40)))
            < 1e-12
        )
    q, it = torch.arange(40) % 4, torch.arange(40) % 4
    loop = np.mean([any(it[j] == q[i] for j in sim[i].argsort(descending=True)[:3]) for i in range(40)])
    assert abs(hit_rate_at_k(sim, 3, q, it) - loop) < 1e-12
    rng = np.random.default_rng(0)
    simulated = np.mean([hit_rate_at_k(torch.tensor(rng.random((40, 40))), 3, q, it) for _ in range(500)])
    assert abs(simulated - chance_hit_rate_at_k(q, it, 3)) < 0.015
    assert chance_hit_rate_at_k([0], [0, 1, 1], 3) == 1.0
    with pytest.raises(ValueError, match="k must be between 1 and the number of items"): hit_rate_at_k(sim, 41)
    with pytest.raises(ValueError, match="square"): hit_rate_at_k(sim[:3], 1)
    with pytest.raises(ValueError, match="pass both"): hit_rate_at_k(sim, 1, item_labels=it)


def test_splits_pairs_and_plot():
    p = get_profile("ci")
    s = split_digits(profile=p)
    assert [len(x.labels) for x in s.values()] == [p.max_examples, p.eval_examples, p.eval_examples]
    assert all(torch.bincount(x.labels, minlength=10).min() >= 1 for x in s.values())
    assert split_digits(profile=p)["train"].labels.tolist() == s["train"].labels.tolist()      # seeded
    h = split_digits(holdout_classes=[0], profile=p)
    assert 0 not in h["train"].labels.tolist() and 0 in h["test"].labels.tolist()
    pairs = ImageTextPairs(s["train"], HELDOUT_TEMPLATES)
    assert len(pairs) == len(s["train"].labels) * len(HELDOUT_TEMPLATES)
    item = pairs[len(s["train"].labels) + 2]
    assert (
        item["captions"] == caption(int(s["train"].labels[2]), HELDOUT_TEMPLATES[1])
        and item["labels"] == s["train"].labels[2]
    )
    fig = plot_similarity(torch.rand(3, 2), ["a", "b"], images=s["test"].images[:3])
    assert len(fig.axes[0].texts) == 6
    with pytest.raises(ValueError, match="2 texts for 3 columns"): plot_similarity(torch.rand(2, 3), ["a", "b"])


def test_training_learns_repeats_and_clamps():
    p = get_profile("ci").replace(n_embd=64, batch_size=32, lr=3e-3, eval_every=100)
    s = split_digits(profile=p.replace(max_examples=400, eval_examples=200))
    runs = []
    for _ in range(2):
        set_seed(0)
        model = make_clip("cnn", "bytes", profile=p, device="cpu")
        h = train_clip(model, s["train"], s["valid"], steps=150, class_aware=True, profile=p, progress=False)
        runs.append((model, h))
    (model, h), (_, h2) = runs
    assert h.loss == h2.loss                                                   # seeded: the same run twice
    acc = accuracy_on(model, s["test"], class_prompts(TRAIN_TEMPLATES))
    assert acc > 0.6, acc                                                       # chance is 0.1
    assert h.evals[-1]["zero_shot_acc"] > 0.6 and np.mean(h.loss[-10:]) < np.mean(h.loss[:10])
    model.logit_scale.data.fill_(10.0)                                          # way beyond log(100)
    assert abs(model.scale().item() - 100) < 1e-3
    class S: pass
    state = S(); state.model = model
    ClampLogitScale().on_step_end(state)
    assert abs(model.logit_scale.item() - math.log(100)) < 1e-6


def test_bf16_autocast_path_and_minilm_training():
    """fit's bf16 autocast (the CUDA default) through the towers and the class-aware loss, here on the CPU; the
    frozen-MiniLM model trains."""
    p = get_profile("ci")
    s = split_digits(profile=p)
    for text in ("bytes", "minilm"):
        set_seed(0)
        model = make_clip("vit", text, profile=p, device="cpu")
        h = train_clip(model, s["train"], s["valid"], steps=3, class_aware=True, profile=p, progress=False, bf16=True)
        assert len(h.loss) == 3 and all(math.isfinite(x) for x in h.loss) and "zero_shot_acc" in h.evals[-1]
