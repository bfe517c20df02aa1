"""Task heads: masking in pooling, losses against torch, freezing counts, layer-wise learning rates inside `fit`,
save/load round trips, and the `llm-course finetune` / `predict` commands end to end, including bad CSV files."""
import contextlib, csv, io, subprocess, sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_course.core import set_seed
from llm_course.heads import (HFBackbone, SequenceClassifier, SequenceRegressor, TokenClassifier, as_backbone,
                              class_weights, count_parameters, cross_entropy, freeze, layerwise_param_groups, pool)
from llm_course.classifier import TextClassifier, add_peft_lora, load_classifier, lora_targets, save_classifier
from llm_course.training import Callback, TrainConfig, fit
from llm_course.transformer import Encoder, EncoderConfig
from llm_course import cli

CFG = EncoderConfig(vocab_size=50, block_size=32, n_layer=3, n_head=2, n_embd=16)


def _pad(ids: torch.Tensor, am: torch.Tensor, extra: int, pad_id: int = 0):
    "The same batch with `extra` more padding positions on the right."
    B = ids.shape[0]
    return torch.cat([ids, torch.full((B, extra), pad_id)], 1), torch.cat(
        [am, torch.zeros(B, extra, dtype=am.dtype)], 1
    )


@pytest.fixture(scope="module")
def minilm_parts():
    from llm_course.assets import load_minilm, load_minilm_tokenizer
    return load_minilm(), load_minilm_tokenizer()


# ---------------------------------------------------------------- pooling

@pytest.mark.parametrize("how", ["cls", "mean", "max"])
def test_pool_ignores_padding_values(how):
    set_seed(0)
    lengths = torch.tensor([1, 4, 7, 2])
    h = torch.randn(4, 7, 5)
    am = (torch.arange(7)[None] < lengths[:, None]).long()
    ref = pool(h, am, how)
    h2 = h.clone(); h2[am == 0] = 1e4 * torch.randn(int((am == 0).sum()), 5)   # garbage in the padded positions
    torch.testing.assert_close(pool(h2, am, how), ref, rtol=0, atol=0)
    for i, n in enumerate(lengths.tolist()):
        real = h[i, :n]
        want = {"cls": real[0], "mean": real.mean(0), "max": real.max(0).values}[how]
        torch.testing.assert_close(ref[i], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["cls", "mean", "max"])
def test_heads_unchanged_by_extra_padding_tokens(how):
    set_seed(0)
    enc = Encoder(CFG)
    ids = torch.randint(1, 50, (3, 9)); am = torch.ones_like(ids); am[0, 5:] = 0; am[2, 2:] = 0; ids[am == 0] = 0
    clf = SequenceClassifier(enc, 4, pooling=how).eval()
    ids2, am2 = _pad(ids, am, 6)
    torch.testing.assert_close(clf(ids2, am2)[0], clf(ids, am)[0], rtol=1e-5, atol=1e-6)
    reg = SequenceRegressor(enc, pooling=how).eval()
    torch.testing.assert_close(reg(ids2, am2)[0], reg(ids, am)[0], rtol=1e-5, atol=1e-6)


def test_pooling_on_minilm_respects_mask(minilm_parts):
    model, tok = minilm_parts
    enc = tok(["short one", "a rather longer sentence with many more words in it"], padding=True, return_tensors="pt")
    alone = tok(["short one"], return_tensors="pt")
    clf = SequenceClassifier(model, 3, pooling="mean").eval()
    with torch.no_grad():
        batched = clf(enc["input_ids"], enc["attention_mask"])[0][0]
        single = clf(alone["input_ids"], alone["attention_mask"])[0][0]
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_token_classifier_loss_skips_padding():
    set_seed(0)
    tc = TokenClassifier(Encoder(CFG), 3, dropout=0.0).eval()
    ids = torch.randint(1, 50, (2, 6)); am = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    labels = torch.randint(0, 3, (2, 6))                      # labels on padding must be ignored
    logits, loss = tc(ids, am, labels)
    want = F.cross_entropy(logits[am.bool()], labels[am.bool()])
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(seed, smoothing, weighted):
    g = torch.Generator().manual_seed(seed)
    K = 4
    logits = 3 * torch.randn(10, 7, K, generator=g)
    labels = torch.randint(0, K, (10, 7), generator=g); labels[torch.rand(10, 7, generator=g) < 0.2] = -100
    w = torch.rand(K, generator=g) * 3 if weighted else None
    ours = cross_entropy(logits, labels, w, smoothing)
    theirs = F.cross_entropy(logits.reshape(-1, K), labels.reshape(-1), weight=w, label_smoothing=smoothing)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_class_weights_balanced_formula():
    y = [0] * 6 + [1] * 3 + [2] * 1
    torch.testing.assert_close(class_weights(y, 4), torch.tensor([10 / 24, 10 / 12, 10 / 4, 0.0]))   # absent class: 0


def test_weighted_loss_in_head_uses_weights():
    set_seed(0)
    w = torch.tensor([1.0, 5.0])
    clf = SequenceClassifier(Encoder(CFG), 2, dropout=0.0, class_weights=w, label_smoothing=0.2).eval()
    ids = torch.randint(1, 50, (4, 5)); y = torch.tensor([0, 1, 1, 0])
    logits, loss = clf(ids, None, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, weight=w, label_smoothing=0.2), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- freezing and learning rates

def _size(module): return sum(p.numel() for p in module.parameters())


def test_freeze_counts_exact_on_our_encoder():
    enc = Encoder(CFG)
    clf = SequenceClassifier(enc, 3)
    head = 16 * 3 + 3
    block = _size(enc.h[0])
    total = _size(enc) + head
    assert freeze(clf, "head") == dict(trainable=head, total=total)
    assert freeze(clf, 1) == dict(trainable=head + block, total=total)
    assert freeze(clf, 3) == dict(trainable=head + 3 * block, total=total)
    assert freeze(clf, "all") == dict(trainable=total, total=total)
    assert [n for n, p in clf.named_parameters() if p.requires_grad and n.startswith("backbone.w")] == [
        "backbone.wte.weight",
        "backbone.wpe.weight",
    ]
    with pytest.raises(ValueError, match="0..3"): freeze(clf, 4)
    with pytest.raises(ValueError, match="'head', 'all'"): freeze(clf, "some")


def test_freeze_counts_on_minilm(minilm_parts):
    model, _ = minilm_parts
    clf = SequenceClassifier(model, 5, pooling="cls")
    block = _size(model.encoder.layer[0])
    c = freeze(clf, 2)
    assert c["trainable"] == 384 * 5 + 5 + 2 * block
    assert not any(p.requires_grad for p in model.embeddings.parameters())
    assert all(p.requires_grad for p in model.encoder.layer[5].parameters())
    assert not any(p.requires_grad for p in model.encoder.layer[3].parameters())
    freeze(clf, "head")
    assert count_parameters(clf)["trainable"] == 384 * 5 + 5


def test_layerwise_groups_rates_and_coverage():
    clf = SequenceClassifier(Encoder(CFG), 3)
    freeze(clf, "all")
    groups = layerwise_param_groups(clf, lr=1e-3, head_lr=5e-3, layer_decay=0.5, weight_decay=0.1)
    rate = {}
    for g in groups: rate.setdefault(g["name"], set()).add(g["lr"])
    assert rate == {"head": {5e-3}, "block 2": {1e-3}, "block 1": {5e-4}, "block 0": {2.5e-4}, "embeddings": {1.25e-4}}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(clf.parameters()))
    for g in groups: assert all((p.ndim >= 2) == (g["weight_decay"] == 0.1) for p in g["params"])
    freeze(clf, 1)
    assert {g["name"] for g in layerwise_param_groups(clf, 1e-3)} == {"head", "block 2"}
    with pytest.raises(ValueError, match="layer_decay"): layerwise_param_groups(clf, 1e-3, layer_decay=1.5)


def _toy_batches(n_batches=4, B=4, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(input_ids=torch.randint(1, 50, (B, T), generator=g), attention_mask=torch.ones(B, T, dtype=torch.long),
                 labels=torch.randint(0, 3, (B,), generator=g)) for _ in range(n_batches)]


class _LRs(Callback):
    def __init__(self): self.lrs = []
    def on_step_end(self, state): self.lrs.append([g["lr"] for g in state.optimizer.param_groups])


def test_layerwise_param_groups_drive_fit():
    set_seed(0)
    clf = SequenceClassifier(Encoder(CFG), 3, dropout=0.0)
    freeze(clf, "all")
    groups = layerwise_param_groups(clf, lr=1e-3, head_lr=1e-2, layer_decay=0.5)
    base = torch.tensor([g["lr"] for g in groups])
    emb_before = clf.backbone.wte.weight.detach().clone()
    spy = _LRs()
    loader = torch.utils.data.DataLoader(_toy_batches(), batch_size=None)
    fit(
        clf,
        loader,
        config=TrainConfig(max_steps=4, warmup_steps=2, progress=False, plot=False),
        param_groups=groups,
        callbacks=[spy],
    )
    factors = [0.5, 1.0, 0.5, 0.0]   # after steps 1..4: warm-up half, peak, cosine half-way, end
    for lrs, f in zip(spy.lrs, factors): torch.testing.assert_close(torch.tensor(lrs), base * f, rtol=1e-12, atol=1e-15)
    assert not torch.equal(clf.backbone.wte.weight, emb_before)        # the embeddings group did learn


def test_param_groups_must_match_what_fit_trains():
    clf = SequenceClassifier(Encoder(CFG), 3)
    freeze(clf, "all"); groups = layerwise_param_groups(clf, 1e-3)
    freeze(clf, "head")                                               # groups built for another freezing
    loader = torch.utils.data.DataLoader(_toy_batches(1), batch_size=None)
    with pytest.raises(ValueError, match="build them after freezing"):
        fit(clf, loader, config=TrainConfig(max_steps=1, progress=False, plot=False), param_groups=groups)


def test_backbone_protocol_refusals():
    from llm_course.assets import load_minilm_classifier
    with pytest.raises(TypeError, match="already has a task head"): as_backbone(load_minilm_classifier(2))
    with pytest.raises(ValueError, match="has none"): SequenceClassifier(Encoder(CFG), 2, pooling="pooler")


# ---------------------------------------------------------------- peft LoRA on any encoder

def _tiny_hf(kind: str):
    "A small randomly initialised DistilBERT or BERT built from a config (nothing downloaded)."
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel
    torch.manual_seed(0)
    if kind == "distilbert":
        return DistilBertModel(DistilBertConfig(vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                                max_position_embeddings=32))
    return BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))


@pytest.mark.parametrize("kind, names", [("distilbert", ["q_lin", "v_lin"]), ("bert", ["query", "value"])])
def test_add_peft_lora_finds_the_attention_projections(kind, names):
    backbone = _tiny_hf(kind)
    assert lora_targets(backbone) == names
    clf = SequenceClassifier(backbone, 3, pooling="mean")
    counts = add_peft_lora(clf, r=2, lora_dropout=0.0)
    adapted = sorted({n.split(".")[-4] for n, p in clf.named_parameters() if "lora_" in n})
    assert adapted == names
    r, H, layers = 2, 16, 2   # each adapted projection gets A (r x H) and B (H x r); the head is H x 3 + 3
    assert counts["trainable"] == layers * len(names) * 2 * r * H + H * 3 + 3
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == \
        {n for n in dict(clf.named_parameters()) if "lora_" in n or n.startswith("classifier.")}
    ids = torch.randint(0, 60, (2, 7)); am = torch.ones_like(ids)
    logits, loss = clf(ids, am, labels=torch.tensor([0, 2]))
    loss.backward()                                             # gradients reach the adapters
    assert logits.shape == (2, 3)
    assert all(p.grad is not None for n, p in clf.named_parameters() if "lora_A" in n)


def test_lora_targets_refuses_an_unknown_architecture():
    with pytest.raises(ValueError, match=r"named \['fc1', 'fc2'\]\): pass target_modules"):
        lora_targets(torch.nn.ModuleDict({"fc1": torch.nn.Linear(2, 2), "fc2": torch.nn.Linear(2, 2)}))


# ---------------------------------------------------------------- save / load

TEXTS = [
    "great stuff, loved it",
    "terrible, never again",
    "it is a Tuesday",
    "ok",
    "the service was slow but the food was fine",
]


def test_save_load_round_trip_our_encoder(tmp_path, minilm_parts):
    _, tok = minilm_parts
    set_seed(0)
    clf = SequenceClassifier(
        Encoder(EncoderConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=16)),
        3,
        pooling="max",
        label_names=["a", "b", "c"],
        class_weights=torch.tensor([1.0, 2.0, 3.0]),
    )
    with torch.no_grad():
        for p in clf.parameters(): p.add_(0.1 * torch.randn_like(p))   # not the initial weights
    before = TextClassifier(clf, tok, 64).predict(TEXTS)
    loaded = load_classifier(save_classifier(clf, tok, tmp_path / "m", max_length=64))
    after = loaded.predict(TEXTS)
    assert after.labels == before.labels and loaded.label_names == ["a", "b", "c"] and loaded.max_length == 64
    np.testing.assert_array_equal(after.probs, before.probs)
    torch.testing.assert_close(loaded.model.class_weights, torch.tensor([1.0, 2.0, 3.0]))
    assert loaded.model.pooling == "max" and not loaded.model.training


def test_save_load_round_trip_minilm_and_refusals(tmp_path, minilm_parts):
    model, tok = minilm_parts
    set_seed(0)
    clf = SequenceClassifier(model, 2, pooling="cls", label_names=["neg", "pos"])
    before = TextClassifier(clf, tok, 32).predict(TEXTS)
    loaded = load_classifier(save_classifier(clf, tok, tmp_path / "m", max_length=32))
    after = loaded.predict(TEXTS)
    assert after.labels == before.labels
    np.testing.assert_allclose(after.probs, before.probs, rtol=0, atol=1e-6)
    assert set(after.labels) <= {"neg", "pos"} and np.allclose(after.probs.sum(1), 1, atol=1e-6)
    # a user's folder is never replaced
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"): save_classifier(clf, tok, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="not a saved classifier"): load_classifier(tmp_path / "mine")


# Texts of mixed lengths in no particular order: `predict` sorts them by length to batch them, so a result
# returned in that sorted order instead of the input's would swap rows.
MIXED = ["the service was slow but the food was fine", "ok", "a much longer text about the weather, the late trains "
         "and the price of coffee in the morning, which nobody likes", "no!", "terrible, never again", "loved it",
         "great stuff", "what a day " * 6, "meh"]


def _one_at_a_time(clf: TextClassifier, texts) -> np.ndarray:
    "Each text's class probabilities from a forward pass of its own (no batch, no padding, no sorting)."
    clf.model.eval()
    with torch.no_grad():
        rows = [clf.model(**{k: v for k, v in clf.tokenizer([t], truncation=True, max_length=clf.max_length,
                                                              return_tensors="pt").items()
                            if k in ("input_ids", "attention_mask")})[0].softmax(-1)[0] for t in texts]
    return torch.stack(rows).numpy()


def _distinct_rows(probs: np.ndarray, tol: float) -> bool:
    "True if every two rows differ by more than `tol` somewhere: then a swap of rows cannot go unnoticed."
    return min(np.abs(probs[i] - probs[j]).max() for i in range(len(probs)) for j in range(i)) > tol


def test_predict_keeps_the_input_order(minilm_parts):
    _, tok = minilm_parts
    set_seed(0)
    model = SequenceClassifier(
        Encoder(EncoderConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=16)),
        3,
        pooling="mean",
        label_names=["a", "b", "c"],
    )
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.5 * torch.randn_like(p))   # texts get clearly different probabilities
    clf = TextClassifier(model, tok, 64)
    ref = _one_at_a_time(clf, MIXED)
    assert _distinct_rows(ref, 1e-3)
    assert [len(t) for t in MIXED] != sorted(len(t) for t in MIXED)
    for batch_size in (1, 2, 4, 32):
        pred = clf.predict(MIXED, batch_size=batch_size)
        np.testing.assert_allclose(pred.probs, ref, rtol=0, atol=1e-5, err_msg=f"batch_size={batch_size}")
        assert pred.labels == [clf.label_names[i] for i in ref.argmax(1)]


# ---------------------------------------------------------------- the command line

LABELS = ["negative", "neutral", "positive"]


def _write(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(header); w.writerows(rows)
    return path


def _rows(n, seed=0):
    from llm_course.data import load_tweets
    d = load_tweets(subset="apple").sample(n, seed)
    return [(t, d.label_names[y]) for t, y in zip(d.texts, d.labels)]


def _main(args):
    "Run the CLI in-process; return (status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): status = cli.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A LoRA classifier fine-tuned by the CLI for a handful of steps on a small CSV."
    d = tmp_path_factory.mktemp("cli")
    _write(d / "train.csv", _rows(24, 0)); _write(d / "valid.csv", _rows(12, 1))
    status, out, err = _main(["finetune", "--train", d / "train.csv", "--valid", d / "valid.csv", "--out", d / "model",
                              "--method", "lora", "--max-steps", 3, "--batch-size", 8, "--max-length", 48, "--quiet"])
    assert status == 0, err
    return d, out


def test_cli_finetune_then_predict(trained, no_network):
    d, out = trained
    assert "3 steps" in out and "valid macro-F1" in out and (d / "model" / "head.json").is_file()
    test_rows = _rows(10, 2)
    _write(d / "test.csv", [(t,) for t, _ in test_rows], header=("text",))
    status, out, err = _main(["predict", d / "model", "--input", d / "test.csv", "--output", d / "preds.csv"])
    assert status == 0, err
    assert "10 predictions" in out
    got = list(csv.DictReader(open(d / "preds.csv", encoding="utf-8")))
    assert list(got[0]) == ["text", "label", "score"] and [g["text"] for g in got] == [t for t, _ in test_rows]
    clf = load_classifier(d / "model")
    assert set(clf.label_names) == set(LABELS)
    pred = clf.predict([t for t, _ in test_rows])
    assert [g["label"] for g in got] == pred.labels
    np.testing.assert_allclose([float(g["score"]) for g in got], pred.scores, atol=1e-4)
    # with a label column: kept as true_label, and scored
    status, out, err = _main(["predict", d / "model", "--input", d / "valid.csv", "--output", d / "preds2.csv"])
    assert status == 0, err
    assert "accuracy" in out and "macro-F1" in out
    assert open(d / "preds2.csv", encoding="utf-8").readline().strip() == "text,true_label,label,score"


def test_cli_predict_rows_match_the_input_rows(minilm_parts, tmp_path):
    model, tok = minilm_parts
    set_seed(0)
    clf = SequenceClassifier(model, 3, pooling="mean", label_names=LABELS)
    with torch.no_grad(): clf.classifier.weight.mul_(40)   # a sharp head: every text gets its own score
    save_classifier(clf, tok, tmp_path / "model", max_length=48)
    _write(tmp_path / "in.csv", [(t,) for t in MIXED], header=("text",))
    status, _, err = _main(
        [
            "predict",
            tmp_path / "model",
            "--input",
            tmp_path / "in.csv",
            "--output",
            tmp_path / "out.csv",
            "--batch-size",
            4,
        ]
    )
    assert status == 0, err
    got = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    ref = _one_at_a_time(load_classifier(tmp_path / "model"), MIXED)
    scores = ref.max(1)
    assert min(abs(a - b) for i, a in enumerate(scores) for b in scores[:i]) > 1e-3   # a swap would show in 4 decimals
    assert [g["text"] for g in got] == MIXED
    np.testing.assert_allclose([float(g["score"]) for g in got], scores, rtol=0, atol=6e-5)
    assert [g["label"] for g in got] == [LABELS[i] for i in ref.argmax(1)]


def test_cli_head_method_and_epochs(tmp_path):
    _write(tmp_path / "train.csv", _rows(8, 3))
    status, out, err = _main(
        [
            "finetune",
            "--train",
            tmp_path / "train.csv",
            "--out",
            tmp_path / "m",
            "--method",
            "head",
            "--epochs",
            1,
            "--batch-size",
            4,
            "--max-length",
            32,
            "--quiet",
        ]
    )
    assert status == 0, err
    assert "2 steps" in out and "trainable 1,155" in out   # 8 rows / 4 per step; head: 384 * 3 + 3


BAD_TRAIN = {
    "missing column": (b"text,sentiment\nhello,positive\nbye,negative\n", "missing ['label']"),
    "empty file": (b"", "is empty"),
    "header only": (b"text,label\n", "no rows"),
    "one class": (b"text,label\ngood,positive\nfine,positive\n", "at least two classes"),
    "not utf-8": ("text,label\ncaf\u00e9,positive\nbad,negative\n".encode("latin-1"), "not UTF-8"),
    "empty text": (b"text,label\ngood,positive\n,negative\n", "line 3: empty 'text'"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_cli_bad_training_csv(tmp_path, case):
    data, message = BAD_TRAIN[case]
    (tmp_path / "train.csv").write_bytes(data)
    status, out, err = _main(
        ["finetune", "--train", tmp_path / "train.csv", "--out", tmp_path / "m", "--max-steps", 1, "--quiet"]
    )
    assert status == 2 and message in err and "Traceback" not in err
    assert err.startswith("llm-course finetune: error:")
    assert not (tmp_path / "m").exists()


def test_cli_bad_inputs_around_training(tmp_path):
    _write(tmp_path / "train.csv", [("good", "positive"), ("bad", "negative")])
    _write(tmp_path / "valid.csv", [("meh", "neutral")])
    status, _, err = _main(
        ["finetune", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv", "--out", tmp_path / "m"]
    )
    assert status == 2 and "['neutral'] were not in the training data" in err
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "x.txt").write_text("keep")
    status, _, err = _main(["finetune", "--train", tmp_path / "train.csv", "--out", tmp_path / "mine"])
    assert status == 2 and "refusing to overwrite" in err and (tmp_path / "mine" / "x.txt").exists()
    status, _, err = _main(["finetune", "--train", tmp_path / "nope.csv", "--out", tmp_path / "m"])
    assert status == 2 and "no such file" in err
    status, _, err = _main(
        ["finetune", "--train", tmp_path / "train.csv", "--out", tmp_path / "m", "--base-model", tmp_path / "no-model"]
    )
    assert status == 2 and "neither 'minilm' nor a folder" in err


def test_cli_predict_bad_csvs(trained, tmp_path):
    d, _ = trained
    cases = {"unseen label": (b"text,label\nnice,joyful\n", "['joyful'] were not in the training data"),
             "no text column": (b"sentence\nhello\n", "missing ['text']"),
             "not utf-8": (b"text\n\xff\xfe oops\n", "not UTF-8")}
    for name, (data, message) in cases.items():
        (tmp_path / "in.csv").write_bytes(data)
        status, _, err = _main(
            ["predict", d / "model", "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv"]
        )
        assert status == 2 and message in err and "Traceback" not in err, name
        assert not (tmp_path / "out.csv").exists(), name
    (tmp_path / "in.csv").write_bytes(b"text\nhello\n")                  # a good input: the model folder is the problem
    status, _, err = _main(["predict", tmp_path, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv"])
    assert status == 2 and "not a saved classifier" in err


def test_cli_subprocess_exit_status(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\nonly,one\n")
    r = subprocess.run([sys.executable, "-c", "import sys; from llm_course.cli import main; sys.exit(main())",
                        "finetune", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "at least two classes" in r.stderr and "Traceback" not in r.stderr


def test_cli_full_method_on_a_local_hf_folder(tmp_path, minilm_parts):
    model, tok = minilm_parts
    model.save_pretrained(tmp_path / "base"); tok.save_pretrained(tmp_path / "base")
    _write(tmp_path / "train.csv", _rows(8, 4))
    status, out, err = _main(
        [
            "finetune",
            "--train",
            tmp_path / "train.csv",
            "--out",
            tmp_path / "m",
            "--base-model",
            tmp_path / "base",
            "--method",
            "full",
            "--max-steps",
            1,
            "--batch-size",
            4,
            "--max-length",
            16,
            "--quiet",
        ]
    )
    assert status == 0, err
    assert "1 step in" in out
    clf = load_classifier(tmp_path / "m")
    assert count_parameters(clf.model)["total"] == sum(p.numel() for p in model.parameters()) + 384 * 3 + 3


# ---------------------------------------------------------------- verified files (SHA-256 manifest)

@pytest.fixture
def tiny_saved(tmp_path, minilm_parts):
    "A classifier on a small BERT (MiniLM's tokenizer) saved by save_classifier, and a CSV to predict."
    from transformers import BertConfig, BertModel
    _, tok = minilm_parts
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=64))
    saved = save_classifier(SequenceClassifier(HFBackbone(bert), 2, label_names=["neg", "pos"]), tok, tmp_path / "m",
                            max_length=32)
    return saved, _write(tmp_path / "in.csv", [("a good film", "pos"), ("a bad one", "neg")])


def _flip(path, at: int):
    data = bytearray(path.read_bytes()); data[at] ^= 0x01; path.write_bytes(bytes(data))


def test_flipped_weight_byte_is_refused(tiny_saved, tmp_path, monkeypatch):
    import llm_course.serving
    from llm_course.classifier import DamagedModelError, verify_model_files
    def must_not_serve(*a, **k): raise AssertionError("serve started on a damaged model")
    monkeypatch.setattr(llm_course.serving, "serve_model", must_not_serve)   # a missed check fails instead of hanging
    saved, texts = tiny_saved
    weights = saved / "backbone" / "model.safetensors"
    intact = load_classifier(saved).predict(["fine"]).probs
    assert verify_model_files(saved) is True
    size = weights.stat().st_size
    _flip(weights, size - 3)                                     # a weight's byte: same size, header intact
    assert weights.stat().st_size == size
    with pytest.raises(DamagedModelError, match="backbone/model.safetensors is damaged"): load_classifier(saved)
    for argv in (["predict", saved, "--input", texts, "--output", tmp_path / "o.csv"], ["serve", saved]):
        status, _, err = _main(argv)                             # the CLI: one line naming the file and the fix
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and "model.safetensors" in lines[0] and "finetune" in lines[0], err
    assert not (tmp_path / "o.csv").exists()
    _flip(weights, size - 3)                                     # flipped back: loads, predicts as before
    np.testing.assert_array_equal(load_classifier(saved).predict(["fine"]).probs, intact)


def test_model_saved_without_hashes_still_loads_with_a_note(tiny_saved, tmp_path):
    saved, texts = tiny_saved
    (saved / "manifest.json").unlink()                           # as save_classifier wrote folders before hashes
    status, out, err = _main(["predict", saved, "--input", texts, "--output", tmp_path / "o.csv", "--quiet"])
    assert status == 0 and "wrote 2 predictions" in out, err
    assert err.count("loaded unverified") == 1 and "save it again" in err, err
