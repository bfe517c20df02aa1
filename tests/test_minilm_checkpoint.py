"""The shipped MiniLM masked-LM head (llm_course/checkpoints/minilm_mlm, built by scripts/make_checkpoints.py --only
minilm_mlm):
its hash is checked, it loads without training, it reproduces the validation figure its metadata records, and it holds
only
the head and the trained top layer(s)."""
import json, shutil

import pytest
import torch

import llm_course.minilm_mlm as pt
from llm_course.assets import load_minilm, load_minilm_tokenizer, minilm_path, sha256_file
from llm_course.core import get_profile
from llm_course.minilm_mlm import (MINILM_MLM_DIR, MINILM_MLM_FILE, MINILM_MLM_STEPS, load_minilm_mlm, minilm_mlm_eval,
                                    save_minilm_mlm, train_minilm_mlm)

FIX = "python scripts/make_checkpoints.py --only minilm_mlm"


@pytest.fixture(scope="module")
def shipped():
    assert (MINILM_MLM_DIR / MINILM_MLM_FILE).is_file(), f"{MINILM_MLM_DIR} is missing: run {FIX}"
    return json.loads((MINILM_MLM_DIR / "metadata.json").read_text())


def test_shipped_head_loads_without_training_and_reproduces_its_figure(shipped, monkeypatch, no_network):
    def no_training(*a, **k): raise AssertionError("loading the shipped MiniLM head trained")
    monkeypatch.setattr(pt, "fit", no_training); monkeypatch.setattr(pt, "train_minilm_mlm", no_training)
    model = load_minilm_mlm()
    assert model.mlm_metadata == shipped and not model.training
    live = minilm_mlm_eval(model, load_minilm_tokenizer(), shipped["valid"]["valid_chars"], shipped["valid"]["seed"],
                           shipped["valid"]["block_size"])
    assert live["masked_tokens"] == shipped["valid"]["masked_tokens"]
    assert live["nll"] == pytest.approx(shipped["valid_loss_after"], abs=1e-3)
    assert live["top1"] == pytest.approx(shipped["valid_top1_after"], abs=2e-3)
    # built at the cpu profile's settings, better than the untrained head, compared with the full fine-tune
    assert shipped["profile"] == "cpu" and shipped["steps"] == MINILM_MLM_STEPS["cpu"]
    assert shipped["valid_loss_after"] < shipped["valid_loss_before"] - 1
    rows = shipped["comparison"]
    assert rows[0]["train_layers"] is None and rows[0]["nll"] == pytest.approx(
        shipped["valid_loss_before"]
    )  # the untrained head
    ours = next(r for r in rows if r["variant"] == shipped["variant"])
    assert (ours["train_layers"], ours["rank"]) == (shipped["train_layers"], shipped["rank"])
    assert ours["nll"] == pytest.approx(shipped["valid_loss_after"], abs=2e-3)
    # only the head and the top layer(s) differ from MiniLM's own weights; the rest is the pip package's
    base, k = load_minilm().encoder.layer, shipped["train_layers"]
    for i, layer in enumerate(model.bert.encoder.layer):
        same = all(torch.equal(a, b) for a, b in zip(layer.parameters(), base[i].parameters()))
        assert same == (i < 6 - k), f"layer {i}"
    assert sha256_file(minilm_path() / "model.safetensors") == shipped["base_sha256"]


def test_shipped_head_is_small(shipped):
    size = sum(f.stat().st_size for f in MINILM_MLM_DIR.iterdir())
    assert {f.name for f in MINILM_MLM_DIR.iterdir()} == {MINILM_MLM_FILE, "metadata.json"}
    assert size < 6e6, size
    assert (
        shipped["dtype"] == "float16"
        and (MINILM_MLM_DIR / MINILM_MLM_FILE).stat().st_size < 2.1 * shipped["saved_params"]
    )


def test_a_flipped_byte_is_refused_with_the_fix(tmp_path, shipped):
    bad = tmp_path / "minilm_mlm"
    shutil.copytree(MINILM_MLM_DIR, bad)
    f = bad / MINILM_MLM_FILE
    data = bytearray(f.read_bytes()); data[len(data) // 2] ^= 0x01; f.write_bytes(bytes(data))    # same size, one bit
    with pytest.raises(ValueError, match="SHA-256") as e: load_minilm_mlm(bad)
    assert MINILM_MLM_FILE in str(e.value) and FIX in str(e.value)
    f.unlink()
    with pytest.raises(FileNotFoundError, match=FIX): load_minilm_mlm(bad)
    with pytest.raises(TypeError, match=r"train_minilm_mlm\(profile\)"): load_minilm_mlm(get_profile("ci"))


def test_save_keeps_only_the_trained_tensors_and_round_trips(tmp_path, monkeypatch):
    real_eval = pt.minilm_mlm_eval
    monkeypatch.setattr(
        pt, "minilm_mlm_eval", lambda m, t: real_eval(m, t, valid_chars=3_000)
    )  # a quick figure is enough here
    model = train_minilm_mlm(get_profile("ci"), steps=3, train_layers=2, progress=False)  # (step 1 is warm-up at lr 0)
    from safetensors.torch import load_file
    path = save_minilm_mlm(model, tmp_path / "whole", {"note": "test"})
    meta, saved = json.loads((path / "metadata.json").read_text()), load_file(str(path / MINILM_MLM_FILE))
    assert {k.split(".")[3] for k in saved if k.startswith("bert.")} == {"4", "5"} and "cls.predictions.bias" in saved
    assert all(t.dtype == torch.float16 for t in saved.values()) and meta["saved_params"] == sum(
        t.numel() for t in saved.values()
    )
    assert (
        meta["note"] == "test"
        and meta["train_layers"] == 2
        and meta["sha256"][MINILM_MLM_FILE] == sha256_file(path / MINILM_MLM_FILE)
    )
    w, base = (
        model.bert.encoder.layer[4].intermediate.dense.weight,
        load_minilm().encoder.layer[4].intermediate.dense.weight,
    )
    assert not torch.equal(w, base) and torch.equal(
        load_minilm_mlm(path).bert.encoder.layer[4].intermediate.dense.weight, w.half().float()
    )
    low = (
        load_minilm_mlm(save_minilm_mlm(model, tmp_path / "rank2", rank=2))
        .bert.encoder.layer[4]
        .intermediate.dense.weight
    )
    assert torch.linalg.matrix_rank(low - base, atol=1e-6).item() <= 2  # base + a rank-2 change
    assert (low - w).norm() < (base - w).norm()  # ... towards the trained one
    with pytest.raises(ValueError, match="train_layers"): train_minilm_mlm(get_profile("ci"), steps=1, train_layers=7)
