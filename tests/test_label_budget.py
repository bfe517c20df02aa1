"""Lesson 09a's nested label budgets (`llm_course.label_budget.labelled_sets`): every budget holds the smaller ones,
also on pools where rounding each budget on its own takes an example away from a class (the Alabama paradox of lesson
01's largest remainders); the counts stay within one example of each class's share; and where the counts are those
`TextData.sample` gives, so are the examples (the lesson's own budgets draw what they drew before the fix)."""
import itertools, random

import pytest

from llm_course.data import TextData
from llm_course.label_budget import labelled_sets


def pool_of(sizes, seed=0):
    "A pool with `sizes[c]` examples of class c, the classes interleaved at random."
    labels = [c for c, s in enumerate(sizes) for _ in range(s)]
    random.Random(seed).shuffle(labels)
    return TextData([f"t{i}" for i in range(len(labels))], labels, [f"c{c}" for c in range(len(sizes))], "pool")


def assert_nested(pool, sets, budgets):
    "Sizes, distinct examples of the pool with their labels, nesting, and counts within one of n x share."
    label_of, sizes = dict(zip(pool.texts, pool.labels)), list(pool.counts().values())
    assert list(sets) == list(budgets)
    before = set()
    for n in budgets:
        texts = set(sets[n].texts)
        assert len(sets[n]) == len(texts) == n, (sizes, n)
        assert all(label_of[t] == y for t, y in zip(sets[n].texts, sets[n].labels)), (sizes, n)
        assert before <= texts, f"pool {sizes}: budget {n} drops {len(before - texts)} of the smaller budget's labels"
        for k, s in zip(sets[n].counts().values(), sizes): assert abs(k - n * s / len(pool)) < 1, (sizes, n, k)
        before = texts


def test_the_alabama_pool_nests():
    pool = TextData([f"t{i}" for i in range(7)], [0, 1, 1, 1, 2, 2, 2], ["a", "b", "c"], "seven")
    counts = lambda d: list(d.counts().values())
    assert [counts(pool.sample(n, 0)) for n in (3, 4)] == [[1, 1, 1], [0, 2, 2]]   # the paradox, one budget at a time
    sets = labelled_sets(pool, (3, 4), with_all=False)
    assert [counts(sets[n]) for n in (3, 4)] == [[1, 1, 1], [1, 2, 1]]
    assert set(sets[3].texts) < set(sets[4].texts)


def test_every_budget_of_small_pools_nests():
    "All pools of 2 classes up to 6 each and of 3 classes up to 6 each, every budget from 1 to the whole pool."
    pools = [*itertools.product(range(1, 7), repeat=2), *itertools.product(range(1, 7), repeat=3)]
    for i, sizes in enumerate(pools):
        pool = pool_of(sizes, i)
        budgets = range(1, len(pool) + 1)
        assert_nested(pool, labelled_sets(pool, budgets, seed=i), budgets)


def test_random_budgets_and_empty_classes_nest():
    r = random.Random(0)
    for trial in range(300):
        sizes = [r.randint(0, 9) for _ in range(r.randint(2, 6))]
        sizes[0] = max(sizes[0], 1)
        pool = pool_of(sizes, trial)
        budgets = sorted(r.sample(range(1, len(pool) + 1), r.randint(1, min(len(pool), 5))))
        sets = labelled_sets(pool, budgets, seed=trial)
        assert_nested(pool, sets, budgets + ([len(pool)] if budgets[-1] < len(pool) else []))
        assert sets[len(pool)].counts() == pool.counts()


def test_same_examples_as_sample_wherever_largest_remainders_nest():
    "Where `sample`'s counts (largest remainders, one budget at a time) never shrink, the sets are exactly its draws."
    r, compared = random.Random(1), 0
    for trial in range(200):
        sizes = [r.choice([r.randint(0, 40), 12]) for _ in range(r.randint(2, 8))]   # equal classes: tied remainders
        sizes[0] = max(sizes[0], 1)
        pool = pool_of(sizes, trial)
        budgets = sorted(r.sample(range(1, len(pool) + 1), r.randint(1, min(len(pool), 4))))
        old = {n: pool.sample(n, trial) for n in budgets}
        counts = [list(d.counts().values()) for d in old.values()]
        if any(a > b for x, y in zip(counts, counts[1:]) for a, b in zip(x, y)): continue   # the paradox: they differ
        sets, compared = labelled_sets(pool, budgets, trial, with_all=False), compared + 1
        assert all(sets[n].texts == old[n].texts for n in budgets), (sizes, budgets)
    assert compared > 150


LESSON_POOLS = [((429, 388, 183), (16, 64, 256)), ((80,) * 10, (16, 64, 256)),            # cpu: tweets, intents
                ((10, 9, 5), (8,)), ((3,) * 10, (8,)),                                   # ci
                ((12781, 11558, 5445), (16, 64, 256))]                                   # gpu: the whole tweets split


@pytest.mark.parametrize("sizes,budgets", LESSON_POOLS)
def test_same_examples_as_sample_where_the_counts_agree(sizes, budgets):
    "The class sizes of lesson 09a's pools (tweets, intents) at cpu, ci and gpu: the same sets as `sample` drew."
    pool = pool_of(sizes)
    for seed in (0, 1):
        sets = labelled_sets(pool, budgets, seed)
        for n, d in sets.items():
            old = pool.sample(n, seed)
            assert d.texts == old.texts and d.labels == old.labels and d.name == f"pool-{n}"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="is empty"): labelled_sets(TextData([], [], ["a"], "none"), ())
    with pytest.raises(ValueError, match="increasing order"): labelled_sets(pool_of((3, 3)), (4, 2))
    with pytest.raises(ValueError, match="does not fit a pool of 6"): labelled_sets(pool_of((3, 3)), (7,))
