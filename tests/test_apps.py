"""Lesson 11 (llm_course.apps): ranking metrics and AUROC against scikit-learn, nearest centroid against scikit-learn,
out-of-scope thresholds, the intent router, the JSON service contract (bad input, batching), served end to end by lesson
11a's app."""
import json

import httpx

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st
from sklearn.metrics import dcg_score, ndcg_score, roc_auc_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.neighbors import NearestCentroid as SkNearestCentroid

from llm_course.apps import (
    CANNED_REPLIES,
    OUT_OF_SCOPE_INTENT,
    Embedder,
    IntentRouter,
    NearestCentroid,
    Service,
    ServiceError,
    auroc,
    choose_threshold,
    confidence,
    dcg_at_k,
    drop_texts,
    evaluate_ranking,
    ndcg_at_k,
    neighbours,
    precision_at_k,
    profile_scores,
    recall_at_k,
    router_widget,
    scope_report,
    simulate_users,
    train_probe,
)
from llm_course.data import TextData, load_intents, split_data


# ---------- ranking metrics ----------
@st.composite
def rankings(draw):
    "Graded relevance and distinct scores for 1-4 users over 2-20 items, and a k (possibly beyond the item count)."
    u, n = draw(st.integers(1, 4)), draw(st.integers(2, 20))
    rel = np.array(draw(st.lists(st.integers(0, 3), min_size=u * n, max_size=u * n)), dtype=float).reshape(u, n)
    perm = np.array(draw(st.permutations(range(u * n)))).reshape(u, n)   # distinct scores: no tie-handling differences
    return rel, perm / (u * n), draw(st.integers(1, n + 3))

@settings(max_examples=60, deadline=None, derandomize=True)
@given(rankings())
def test_ndcg_dcg_match_sklearn(case):
    rel, scores, k = case
    assert abs(ndcg_at_k(rel, scores, k) - ndcg_score(rel, scores, k=k)) < 1e-12
    assert abs(dcg_at_k(rel, scores, k) - dcg_score(rel, scores, k=k)) < 1e-12
    np.testing.assert_allclose(ndcg_at_k(rel, scores, k, average=False).mean(), ndcg_at_k(rel, scores, k), atol=1e-12)

def test_precision_recall_by_hand():
    rel, s = np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.5, 0.3])   # ranking: 0, 1, 3, 4, 2
    assert precision_at_k(rel, s, 1) == 1.0 and precision_at_k(rel, s, 2) == 0.5 and precision_at_k(rel, s, 5) == 0.4
    assert recall_at_k(rel, s, 2) == 0.5 and recall_at_k(rel, s, 4) == 0.5 and recall_at_k(rel, s, 5) == 1.0
    assert abs(ndcg_at_k(rel, s, 5) - (1 + 1 / np.log2(6)) / (1 + 1 / np.log2(3))) < 1e-12
    assert ndcg_at_k(rel, rel, 3) == 1.0 and ndcg_at_k([[0, 0, 0]], [[1, 2, 3]], 2) == 0.0
    two = evaluate_ranking(np.array([s, -s]), np.array([rel, rel]), k=2)  # second user: reversed ranking 2, 4, 3, 1, 0
    assert two == {
        "precision@2": 0.5,
        "recall@2": 0.5,
        "nDCG@2": pytest.approx((1 / (1 + 1 / np.log2(3)) + 1 / (1 + 1 / np.log2(3))) / 2),
    }

def test_ranking_bad_input():
    with pytest.raises(ValueError, match="must have the same shape"): precision_at_k([1, 0], [0.1, 0.2, 0.3], 1)
    with pytest.raises(ValueError, match="k must be a positive integer"): ndcg_at_k([1, 0], [0.1, 0.2], 0)
    with pytest.raises(ValueError, match="non-negative"): ndcg_at_k([-1, 0], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match=r"user\(s\) \[1\] have no relevant item"):
        recall_at_k([[1, 0], [0, 0]], [[1, 2], [1, 2]], 1)
    with pytest.raises(ValueError, match="empty"): ndcg_at_k(np.zeros((1, 0)), np.zeros((1, 0)), 1)


# ---------- recommender pieces ----------
def test_simulate_users_and_profile_scores():
    topics = np.repeat([0, 1, 2], 6)
    ut, read = simulate_users(topics, 40, n_read=3, seed=0)
    assert read.shape == (40, 3) and all((topics[r] == t).all() and len(set(r)) == 3 for t, r in zip(ut, read))
    ut2, read2 = simulate_users(topics, 40, n_read=3, seed=0)
    assert (ut == ut2).all() and (read == read2).all()                    # seeded
    with pytest.raises(ValueError, match="each needs more than n_read=6"): simulate_users(topics, 2, n_read=6)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(18, 8)); X /= np.linalg.norm(X, axis=1, keepdims=True)
    sc = profile_scores(X, read[:5])
    prof = X[read[:5]].mean(1); prof /= np.linalg.norm(prof, axis=1, keepdims=True)
    want = X @ prof.T
    for u in range(5):
        assert np.isneginf(sc[u, read[u]]).all()
        keep = np.setdiff1d(np.arange(18), read[u]); np.testing.assert_allclose(sc[u, keep], want[keep, u], atol=1e-12)
    np.testing.assert_allclose(profile_scores(sp.csr_matrix(X), read[:5]), sc, rtol=0, atol=1e-12)   # TF-IDF path
    nb = neighbours(X, 4, k=3)
    assert [j for j, _ in nb] == [int(j) for j in np.argsort(-(X @ X[4]))[1:4]] and 4 not in [j for j, _ in nb]


# ---------- intents: centroid, thresholds, AUROC ----------
def test_nearest_centroid_matches_sklearn():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    Xt = rng.normal(size=(25, 5))
    ours = NearestCentroid("euclidean").fit(X, y)
    np.testing.assert_allclose(ours.centroids_, SkNearestCentroid().fit(X, y).centroids_, atol=1e-12)
    assert (ours.predict(Xt) == SkNearestCentroid().fit(X, y).predict(Xt)).all()
    cos = NearestCentroid().fit(X, y)
    np.testing.assert_allclose(cos.decision_function(Xt), cosine_similarity(Xt, cos.centroids_), atol=1e-12)
    names = np.array(["a", "b", "c", "d"])[y]                             # string labels come back as labels
    assert set(NearestCentroid().fit(X, names).predict(Xt)) <= set(names)
    with pytest.raises(ValueError, match="'cosine' or 'euclidean'"): NearestCentroid("l1")
    with pytest.raises(RuntimeError, match=r"call \.fit\(X, y\) first"): NearestCentroid().predict(Xt)

@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=15), st.lists(st.integers(0, 5), min_size=1, max_size=15))
def test_auroc_matches_sklearn(pos, neg):   # small integer scores: many ties
    assert abs(auroc(pos, neg) - roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)) < 1e-12

@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.sampled_from([0.5, 0.8, 0.95, 1.0]))
def test_choose_threshold_keeps_enough(scores, keep):
    t = choose_threshold(scores, keep)
    s = np.array(scores)
    assert np.mean(s >= t) >= keep                                         # keeps at least `keep`
    assert np.mean(s > t) < keep                                           # and no higher threshold would

def test_threshold_and_scope_errors():
    with pytest.raises(ValueError, match="got none"): choose_threshold([], 0.9)
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"): choose_threshold([0.2], 0)
    with pytest.raises(ValueError, match="got 2 and 0"): auroc([1, 2], [])
    r = scope_report([0.9, 0.8, 0.2], [0.1, 0.5], threshold=0.6)
    assert r == {"in_scope_kept": pytest.approx(2 / 3), "out_of_scope_rejected": 1.0, "auroc": pytest.approx(5 / 6)}


# ---------- the router, with a fake embedder (fast, exact) ----------
def fake_embed(texts):
    "Bag-of-letters vectors: enough to route toy messages."
    out = np.zeros((len(texts), 26))
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z": out[i, ord(ch) - 97] += 1
    return out

def test_router_routes_and_rejects():
    X = fake_embed(["aaa", "aab", "zzz", "zzy"]); y = np.array([0, 0, 1, 1])
    router = IntentRouter(fake_embed, NearestCentroid().fit(X, y), ["card_lost", "check_balance"], threshold=0.9)
    out = router.predict(["aaaa", "zzzz", "mmm"])
    assert [o["intent"] for o in out] == ["card_lost", "check_balance", OUT_OF_SCOPE_INTENT]
    assert out[0]["reply"] == CANNED_REPLIES["card_lost"] and out[2]["reply"] == CANNED_REPLIES[OUT_OF_SCOPE_INTENT]
    assert out[2]["confidence"] == 0.0 and router.predict([]) == []
    with pytest.raises(ValueError, match=r"replies has no text for \['check_balance', 'out_of_scope'\]"):
        IntentRouter(
            fake_embed, NearestCentroid().fit(X, y), ["card_lost", "check_balance"], 0.5, replies={"card_lost": "ok"}
        )
    ids, s = confidence(NearestCentroid().fit(X, np.array(["x", "x", "y", "y"])), fake_embed(["zz"]))
    assert ids.tolist() == ["y"] and abs(s[0] - 2.5 / np.sqrt(6.5)) < 1e-12   # centroid (z 2.5, y 0.5)

def test_router_widget():
    X = fake_embed(["aaa", "zzz"])
    router = IntentRouter(fake_embed, NearestCentroid().fit(X, [0, 1]), ["card_lost", "check_balance"], threshold=0.9,
                          replies={"card_lost": "frozen <now>", "check_balance": "b", OUT_OF_SCOPE_INTENT: "sorry"})
    box, out = router_widget(router, "aaaa").children
    assert "<b>card_lost</b>" in out.value and "frozen &lt;now&gt;" in out.value       # replies escaped
    box.value = "mmm"; assert "<b>out_of_scope</b>" in out.value and "sorry" in out.value
    box.value = " "; assert "type a message" in out.value

def test_train_probe_picks_C_on_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score as sk_f1
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(120, 40)), rng.integers(0, 2, 120)          # one informative feature among 40: C matters
    X[:, 0] += 1.5 * y
    Cs = (1e-3, 0.03, 1.0, 100.0)
    m = train_probe(X[:60], y[:60], X[60:], y[60:], Cs=Cs)
    f1s = [
        sk_f1(
            y[60:],
            LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(X[:60], y[:60]).predict(X[60:]),
            average="macro",
        )
        for C in Cs
    ]
    assert len(set(np.round(f1s, 9))) == len(Cs), f1s  # the Cs really differ here, so the choice is tested
    assert m.C == Cs[int(np.argmax(f1s))] == 1.0, (
        m.C,
        dict(zip(Cs, f1s)),
    )  # the C with the best validation macro-F1, not the first or last


def test_drop_texts():
    a = TextData(["x", "y", "z"], [0, 1, 0], ["n", "p"], "a")
    assert drop_texts(a, ["y"]).texts == ["x", "z"] and drop_texts(a, TextData(["x"], [0], ["n", "p"])).texts == [
        "y",
        "z",
    ]
    with pytest.raises(ValueError, match="empty"): drop_texts(a, a)


# ---------- the service ----------
def make_echo(**kw):
    calls = []
    return Service(lambda b: calls.append(len(b)) or [{"n": len(t)} for t in b], **kw), calls

BAD_BODIES = [
    (b"", "the body is empty"),
    (b"{", "not valid JSON"),
    (b'{"text": "hi"', "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b'"hello"', "must be a JSON object"),
    (b'{"query": "hi"}', "unknown field(s) ['query']"),
    (b'{"text": "a", "texts": ["b"]}', "exactly one of"),
    (b'{"text": ["a"]}', '"text" must be a string'),
    (b'{"texts": "a"}', '"texts" must be a list'),
    (b'{"texts": []}', '"texts" is empty'),
    (b'{"texts": ["a", null]}', "text 1 is NoneType"),
    (b'{"text": ""}', "text 0 is empty"),
    (b'{"texts": ["ok", " \\n "]}', "text 1 is empty"),
    (b'{"text": "' + b"x" * 21 + b'"}', "text 0 has 21 characters; the limit is 20"),
    (json.dumps({"texts": ["a"] * 6}).encode(), "6 texts in one request; the limit is 5"),
]

@pytest.mark.parametrize("body,msg", BAD_BODIES)
def test_service_rejects_bad_input(body, msg):
    svc, calls = make_echo(max_chars=20, max_texts=5)
    status, reply = svc.handle(body)
    assert status == 400 and msg in reply["error"], reply
    assert calls == []                                                     # the model never saw bad input

def test_service_batches():
    svc, calls = make_echo(batch_size=2)
    assert svc.handle('{"texts": ["a", "bb", "ccc", "d", "e"]}') == (
        200,
        {"predictions": [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 1}, {"n": 1}]},
    )
    assert calls == [2, 2, 1]
    assert svc.handle(b'{"text": "hello"}') == (200, {"predictions": [{"n": 5}]})
    with pytest.raises(ServiceError, match="text 0 is empty"): svc.predict([" "])
    with pytest.raises(ValueError, match="at least 1"): Service(len, batch_size=0)

# ---------- end to end with MiniLM ----------
@pytest.fixture(scope="module")
def embedder():
    return Embedder(max_length=64)

def test_embedder_sorted_batches_match_sentence_embeddings(embedder):
    from llm_course.assets import sentence_embeddings
    texts = ["short", "a much longer sentence about parcels, cards and bank transfers", "medium length text", "x"]
    np.testing.assert_allclose(
        embedder(texts), sentence_embeddings(embedder.model, embedder.tokenizer, texts, 64).numpy(), atol=1e-5
    )
    assert embedder([]).shape == (0, 384)
    with pytest.raises(TypeError, match="wrap it"): embedder("one string")
    with pytest.raises(ValueError, match="no tokenizer"): Embedder(embedder.model)

def test_intent_service_end_to_end(embedder, no_network):
    tr, va, te = split_data(load_intents(per_intent=20), valid=0.2, test=0.2, seed=0)
    clf = NearestCentroid().fit(embedder(tr.texts), tr.labels)
    thr = choose_threshold(confidence(clf, embedder(va.texts))[1], 0.95)
    router = IntentRouter(embedder, clf, tr.label_names, thr)
    acc = np.mean([r["intent"] == tr.label_names[y] for r, y in zip(router.predict(te.texts), te.labels)])
    assert acc >= 0.9, acc                                                  # templated test utterances are easy
    from llm_course.serving import create_app, run_in_thread
    with run_in_thread(create_app(router.predict, name="intents")) as url:
        r = httpx.post(
            url + "/predict",
            json={"texts": ["I lost my credit card", "where is my parcel?", "tell me a joke about cats"]},
        )
    status, reply = r.status_code, r.json()
    assert status == 200
    assert [p["intent"] for p in reply["predictions"]] == ["card_lost", "delivery_status", OUT_OF_SCOPE_INTENT], reply
