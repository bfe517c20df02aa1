"""Helpers shared by the exercise-set tests: run an answer, assert a usual mistake is named, assert doing nothing is
0."""
from llm_course.exercises import get_exercise


def run(name, answer, seed=0):
    return get_exercise(name).run(answer, seed=seed)


def assert_named(name, answer, mistake_words, seed=0):
    r = run(name, answer, seed)
    assert not r.ok and r.points < r.max_points, r.text()
    assert mistake_words in r.text(), r.text()
    return r


def assert_zero(name, answer, seed=0):
    "A do-nothing answer: 0 points, worded feedback, no exception."
    r = run(name, answer, seed)
    assert r.points == 0 and not r.ok, r.text()
    assert r.problems or r.zeroed, r.text()
    return r


def stub(*args, **kwargs): raise NotImplementedError()
def first(*args, **kwargs): return args[0] if args else next(iter(kwargs.values()))
