"""llm_course.assets: the loaders, the tokenizer/model check and the SmolLM2 cache (interruption, damage, two
processes)."""
import json, os, subprocess, sys, textwrap, threading, time
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from llm_course import assets
from llm_course.assets import (
    TokenizerMismatchError,
    build_once,
    cache_info,
    check_tokenizer_matches,
    damaged_files,
    folder_ok,
    load_minilm,
    load_minilm_classifier,
    load_minilm_tokenizer,
    load_smollm2,
    load_smollm2_tokenizer,
    minilm_path,
    sentence_embeddings,
    smollm2_path,
)
from llm_course.core import asset_path, cache_dir, set_seed

TARGET = ("models", "smollm2-135m-instruct")


# ---------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm():
    return load_minilm_tokenizer(), load_minilm()


def test_minilm_path_is_the_package_model_folder():
    assert minilm_path() == asset_path("minilm").parent
    assert (minilm_path() / "model.safetensors").is_file()


def test_minilm_loaders(minilm):
    tok, model = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert tok.vocab_size == model.config.vocab_size == 30522
    batch = tok(["a short one", "a somewhat longer second sentence"], padding=True, return_tensors="pt")
    with torch.no_grad(): h = model(**batch).last_hidden_state
    assert h.shape == (2, batch["input_ids"].shape[1], 384)
    check_tokenizer_matches(model, tok)


def test_asset_descriptions_state_what_the_models_hold(minilm):
    "The one-line descriptions that `doctor()` and the errors print must state the parameter counts the models have."
    from llm_course.core import ASSETS
    n = sum(p.numel() for p in minilm[1].parameters())
    assert f"{n / 1e6:.1f}M parameters" in ASSETS["minilm"].what, (n, ASSETS["minilm"].what)
    assert "134.5M parameters" in ASSETS["smollm2"].what  # 134,515,008: counted in test_real_smollm2_conversion


def test_hub_names_fail_at_once_offline():
    """With the offline switches on, a hub name fails saying it is offline (no network attempt: the message is the
    proof, no timing)."""
    from transformers import AutoTokenizer
    with pytest.raises(OSError, match="offline mode"): AutoTokenizer.from_pretrained("llm-course/no-such-model")


def test_minilm_classifier_head(minilm):
    tok, model = minilm
    names = ["business", "entertainment", "politics", "sport", "tech"]
    set_seed(0)
    clf = load_minilm_classifier(len(names), names)
    assert type(clf).__name__ == "BertForSequenceClassification"
    assert clf.classifier.out_features == 5 and clf.config.num_labels == 5
    assert clf.config.id2label == dict(enumerate(names))
    assert clf.config.label2id == {n: i for i, n in enumerate(names)}
    # the encoder is the pretrained one, only the head is new
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    batch = tok(["Shares fell.", "The match ended 2-1.", "x"], padding=True, return_tensors="pt")
    with torch.no_grad(): logits = clf(**batch).logits
    assert logits.shape == (3, 5)
    default = load_minilm_classifier(2)
    assert default.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}


@pytest.mark.parametrize("args, msg", [((2, ["a", "b", "c"]), "label_names has 3 names but num_labels is 2"),
                                       ((0,), "positive int"), ((2.0,), "positive int"),
                                       ((2, ["x", "x"]), "duplicates")])
def test_minilm_classifier_bad_input(args, msg):
    with pytest.raises(ValueError, match=msg): load_minilm_classifier(*args)


def test_sentence_embeddings_match_sentence_transformers(minilm):
    "Our mean pooling + normalisation is what sentence-transformers computes for all-MiniLM-L6-v2."
    from sentence_transformers import SentenceTransformer
    tok, model = minilm
    texts = ["The central bank raised interest rates again.", "Hi", "My cat sleeps on the keyboard, all day long."]
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True).cpu()
    ours = sentence_embeddings(model, tok, texts, batch_size=2)   # two batches, different padding
    assert ours.shape == (3, 384)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_tokenizer_mismatch_minilm(minilm):
    tok, model = minilm
    grown = load_minilm_tokenizer(); grown.add_tokens(["<ticker>", "<isin>"])
    with pytest.raises(
        TokenizerMismatchError, match=r"30524 tokens but the model .* 30522 embedding rows.*resize_token_embeddings"
    ):
        check_tokenizer_matches(model, grown)
    model2 = load_minilm(); model2.resize_token_embeddings(len(grown))
    check_tokenizer_matches(model2, grown)                        # the named fix works
    nopad = load_minilm_tokenizer(); nopad.pad_token = None
    with pytest.raises(TokenizerMismatchError, match="no pad token.*pad_token = tokenizer.eos_token"):
        check_tokenizer_matches(model, nopad)
    check_tokenizer_matches(model, nopad, need_pad=False)
    other_pad = load_minilm_tokenizer(); other_pad.pad_token = "[UNK]"
    with pytest.raises(TokenizerMismatchError, match="pad_token_id 0 but the tokenizer .* uses 100"):
        check_tokenizer_matches(model, other_pad)


# ---------------------------------------------------------------- the real SmolLM2 conversion (once per test run)
@pytest.fixture(scope="module")
def smollm2_cache():
    "The real SmolLM2 cache in the course cache: converted here if absent (it is needed by the lessons anyway)."
    return smollm2_path()


def test_real_smollm2_conversion(smollm2_cache, capsys):
    path = smollm2_cache
    assert path == cache_dir(*TARGET, create=False) and folder_ok(path)
    info = cache_info(path)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(info["files"])
    assert info["what"] == "SmolLM2" and info["build_seconds"] > 0
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    assert not [p for p in path.parent.glob(".smollm2-135m-instruct.*") if p.is_dir()]   # no temporary folder left
    model, tok = load_smollm2(), load_smollm2_tokenizer()
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size, len(tok)) == (
        30,
        576,
        49152,
        49152,
    )
    check_tokenizer_matches(model, tok)
    # golden values of the dequantised weights (Q4_1 blocks -> float32): the conversion reads the file right
    sd = model.state_dict()
    for k, s, a in [("model.embed_tokens.weight", -15353.04449415207, 2802153.619805813),
                    ("model.layers.0.self_attn.q_proj.weight", 59.22322082519531, 63395.39872741699),
                    ("model.layers.29.mlp.down_proj.weight", 49.83570861816406, 126250.91435241699),
                    ("model.norm.weight", 1038.33203125, 1045.09765625)]:
        w = sd[k].double()
        assert w.sum().item() == pytest.approx(s, rel=1e-9, abs=1e-6), k
        assert w.abs().sum().item() == pytest.approx(a, rel=1e-9), k
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    x = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad(): out = model.generate(**x, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True)


def test_second_call_reads_the_cache_not_the_gguf(smollm2_cache, monkeypatch, capsys):
    before = cache_info(smollm2_cache)["build_id"]
    def boom(*a, **k): raise AssertionError("the GGUF file was read again")
    monkeypatch.setattr(assets, "asset_path", boom)
    monkeypatch.setattr(assets, "_convert_smollm2", boom)
    model, tok = load_smollm2(), load_smollm2_tokenizer()
    assert smollm2_path() == smollm2_cache
    assert cache_info(smollm2_cache)["build_id"] == before
    assert "converting" not in capsys.readouterr().out
    assert tok("hello")["input_ids"]   # the cached tokenizer works too
    assert model.get_input_embeddings().weight.shape == (49152, 576)
    half = load_smollm2(dtype=torch.bfloat16)
    assert half.get_input_embeddings().weight.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="torch.dtype"): load_smollm2(dtype="float16")


def test_tokenizer_mismatch_across_models(minilm, smollm2_cache):
    mtok, mini = minilm
    smol, stok = load_smollm2(), load_smollm2_tokenizer()
    with pytest.raises(TokenizerMismatchError, match="49152 tokens but the model .* only 30522 embedding rows"):
        check_tokenizer_matches(mini, stok)
    with pytest.raises(
        TokenizerMismatchError,
        match="49152 embedding rows but the tokenizer .* only 30522 tokens.*load_smollm2_tokenizer",
    ):
        check_tokenizer_matches(smol, mtok)


def test_faster_gguf_reads_memoises_then_restores(monkeypatch):
    import gguf
    made = []
    class FakeReader:
        def __init__(self, path): made.append(path)
    def fake_map(arch, n): return object()
    monkeypatch.setattr(gguf, "GGUFReader", FakeReader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", fake_map)
    with assets._faster_gguf_reads():
        a, b, c = gguf.GGUFReader("x.gguf"), gguf.GGUFReader("x.gguf"), gguf.GGUFReader("y.gguf")
        assert a is b and a is not c and made == ["x.gguf", "y.gguf"]
        assert gguf.get_tensor_name_map(1, 30) is gguf.get_tensor_name_map(1, 30)
    assert gguf.GGUFReader is FakeReader and gguf.get_tensor_name_map is fake_map
    with pytest.raises(KeyError):                       # restored after an error too
        with assets._faster_gguf_reads(): raise KeyError("boom")
    assert gguf.GGUFReader is FakeReader and gguf.get_tensor_name_map is fake_map


# ---------------------------------------------------------------- cache machinery with a tiny stand-in model
def tiny_build(out, seed=0):
    "Stands in for the GGUF conversion: a tiny random Llama saved like the real one."
    cfg = LlamaConfig(vocab_size=96, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)


@pytest.fixture
def fake_smollm2(tmp_cache, monkeypatch):
    "Replace the GGUF conversion by `tiny_build`, counting the builds."
    calls = []
    def build(out): calls.append(out); tiny_build(out)
    monkeypatch.setattr(assets, "_convert_smollm2", build)
    return calls


def reference_weights():
    cfg_dir = Path(os.environ["LLM_COURSE_CACHE"]) / "ref"
    tiny_build(cfg_dir)
    return LlamaForCausalLM.from_pretrained(cfg_dir).state_dict()


def same_weights(model, ref):
    return all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def leftovers(tmp_cache):
    return sorted(p.name for p in (tmp_cache / "models").iterdir() if p.name != ".smollm2-135m-instruct.lock")


def test_cached_build_used_on_second_call(fake_smollm2, tmp_cache, capsys):
    m1 = load_smollm2()
    assert assets.SMOLLM2_MESSAGE in capsys.readouterr().out
    m2 = load_smollm2()
    assert len(fake_smollm2) == 1 and capsys.readouterr().out == ""
    assert same_weights(m2, m1.state_dict())


def test_interrupted_save_never_leaves_a_cache(fake_smollm2, tmp_cache, monkeypatch):
    "save_pretrained dies after writing half the weights: nothing that looks finished may remain."
    real_save = PreTrainedModel.save_pretrained
    def dying_save(self, out, *a, **k):
        real_save(self, out, *a, **k)
        f = Path(out) / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        raise OSError("No space left on device")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", dying_save)
    with pytest.raises(OSError, match="No space left"): load_smollm2()
    assert leftovers(tmp_cache) == []                 # no target, no temporary folder
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    model = load_smollm2()
    assert len(fake_smollm2) == 2 and folder_ok(tmp_cache.joinpath(*TARGET))
    assert same_weights(model, reference_weights())


def test_killed_writer_is_cleaned_up_and_rebuilt(fake_smollm2, tmp_cache):
    """A writer killed with SIGKILL mid-save (no clean-up runs) leaves only a temporary folder, removed by the next
    build."""
    halfway = tmp_cache.parent / "halfway"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from llm_course import assets
        def build(out):
            (out / "model.safetensors").write_bytes(b"partial" * 1000)
            Path({str(halfway)!r}).write_text("now")
            time.sleep(120)
        assets._convert_smollm2 = build
        assets.smollm2_path()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if halfway.exists() or proc.poll() is not None: break
            time.sleep(0.1)
        assert halfway.exists(), "the writer never got halfway"
    finally:
        proc.kill(); proc.wait()
    target = tmp_cache.joinpath(*TARGET)
    assert not target.exists() and not folder_ok(target)
    assert [n for n in leftovers(tmp_cache) if n.startswith(".smollm2-135m-instruct.tmp-")]   # what SIGKILL leaves
    model = load_smollm2()
    assert len(fake_smollm2) == 1 and leftovers(tmp_cache) == ["smollm2-135m-instruct"]
    assert same_weights(model, reference_weights())


@pytest.mark.parametrize(
    "damage",
    [
        "truncated weights",
        "missing file",
        "missing marker",
        "garbage header",
        "empty folder",
        "one weight byte flipped",
    ],
)
def test_damaged_cache_is_detected_and_rebuilt(fake_smollm2, tmp_cache, damage, capsys):
    load_smollm2()
    target = tmp_cache.joinpath(*TARGET)
    st = target / "model.safetensors"
    if damage == "truncated weights": st.write_bytes(st.read_bytes()[:-100])
    if damage == "missing file": (target / "config.json").unlink()
    if damage == "missing marker": (target / ".complete").unlink()
    if damage == "garbage header":   # same size: the sizes pass, the hashes catch it
        data = bytearray(st.read_bytes()); data[8:40] = b"#" * 32; st.write_bytes(bytes(data))
        assert folder_ok(target) and damaged_files(target) == ["model.safetensors"]
    if damage == "one weight byte flipped":   # would load silently with a wrong weight
        data = bytearray(st.read_bytes()); data[-3] ^= 0x40; st.write_bytes(bytes(data))
        assert folder_ok(target) and damaged_files(target) == ["model.safetensors"]
    if damage == "empty folder":
        for p in target.iterdir(): p.unlink()
    capsys.readouterr()
    model = load_smollm2()
    out = capsys.readouterr().out
    assert len(fake_smollm2) == 2, out
    same_size = damage in ("garbage header", "one weight byte flipped")
    assert ("SHA-256 differs" if same_size else "incomplete or damaged") in out
    assert folder_ok(target) and same_weights(model, reference_weights())
    assert leftovers(tmp_cache) == ["smollm2-135m-instruct"]


def test_threads_wait_for_one_builder(tmp_path):
    "A second caller blocks on the lock while the first builds, then uses its copy: one build in all."
    target, started, release, builds, results = tmp_path / "toy", threading.Event(), threading.Event(), [], []
    def build(out):
        builds.append(1); started.set(); release.wait(30)
        (out / "w.bin").write_bytes(b"w" * 10)
    t1 = threading.Thread(target=lambda: results.append(build_once(target, build, "toy")))
    t1.start(); assert started.wait(30)
    t2 = threading.Thread(target=lambda: results.append(build_once(target, build, "toy")))
    t2.start(); time.sleep(0.3)
    assert t2.is_alive() and not target.exists()     # blocked on the lock, not building a second copy
    release.set(); t1.join(30); t2.join(30)
    assert builds == [1] and results == [target, target] and folder_ok(target)


def test_two_processes_build_once(tmp_path):
    "Two processes want the same cache at once: one builds, the other waits on the lock and uses its copy."
    log, release, target = tmp_path / "builds.log", tmp_path / "release", tmp_path / "cache" / "toy"
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from llm_course.assets import build_once, folder_ok
        def build(out):
            with open({str(log)!r}, "a") as f: f.write(f"{{os.getpid()}}\\n")
            print("BUILD-STARTED", flush=True)
            while not Path({str(release)!r}).exists(): time.sleep(0.05)
            (out / "w.bin").write_bytes(b"w" * 100)
        p = build_once(Path({str(target)!r}), build, "toy")
        print("done", folder_ok(p), flush=True)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]                          # both start (and import) at the same time
    outs = [[], []]
    readers = [threading.Thread(target=lambda p=p, o=o: o.extend(p.stdout), daemon=True) for p, o in zip(procs, outs)]
    for r in readers: r.start()
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (
            any("BUILD-STARTED\n" in o for o in outs) and any(any("waiting" in l for l in o) for o in outs)
        ):
            if any(p.poll() is not None for p in procs) or sum("BUILD-STARTED\n" in o for o in outs) > 1: break
            time.sleep(0.05)
        seen = ["".join(o) for o in outs]
        assert sum("BUILD-STARTED" in o for o in seen) == 1 and sum("waiting" in o for o in seen) == 1, seen
        release.write_text("go")
        for p in procs: p.wait(60)
        for r in readers: r.join(10)
    finally:
        for p in procs: p.kill()
    seen = ["".join(o) for o in outs]
    assert all("done True" in o for o in seen), seen
    assert len(log.read_text().split()) == 1 and sum("BUILD-STARTED" in o for o in seen) == 1
    assert (target / "w.bin").read_bytes() == b"w" * 100
