"""Grading throughput with isolation (bubblewrap sandbox) against without (the same grader, `sandbox="none"`).

A class of honest students, each handing in 11 notebooks shaped like the course's exercise notebooks (a first cell
importing torch and `check`, a solution, the graded check cell), graded by `llm_course.classroom.grade` with 2
workers. The two modes are graded in alternation (round 1: isolated then plain, round 2: plain then isolated, ...)
so machine noise hits both alike; the ratio compares their total times. Every student must get full marks in both.

    python bench/grading.py              # 4 students x 11 notebooks per mode, 2 rounds (about 3 minutes on 2 cores)
    python bench/grading.py --full       # 40 students x 11 notebooks per mode, 1 round (the issue's size; about an hour
                                         # on 2 loaded cores)

Target (issue 11): isolation costs at most 1.5x the time of grading without it. Exits with status 1 when missed.
Results: bench/results/grading.json.
"""
import argparse, json, os, shutil, sys, tempfile, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from llm_course.classroom import grade
from llm_course.exercise_notebooks import nbgrader_metadata
from llm_course.sandbox import SandboxWarning, sandbox_mode

TARGET = 1.5
RIGHT = '''def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == tuple(pair): out.append(new_id); i += 2
        else: out.append(ids[i]); i += 1
    return out'''


def notebook(answer):
    def cell(src, role=None):
        md = nbgrader_metadata(role, "merge_pair") if role else {}
        return {"cell_type": "code", "metadata": md, "source": src, "outputs": [], "execution_count": None}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        cell("import math\nimport torch\nfrom llm_course.exercises import check"), cell(answer, "solution"),
        cell("check(merge_pair)", "check")]}


def make_class(root: Path, students: int, notebooks: int = 11):
    names = [f"ex{i:02d}" for i in range(1, notebooks + 1)]
    (root / "release").mkdir(parents=True, exist_ok=True)
    stub = notebook("def merge_pair(ids, pair, new_id):\n    raise NotImplementedError()")
    for n in names: (root / "release" / f"{n}.ipynb").write_text(json.dumps(stub))
    for s in range(students):
        d = root / "subs" / f"student{s:02d}"; d.mkdir(parents=True)
        for n in names: (d / f"{n}.ipynb").write_text(json.dumps(notebook(RIGHT)))
    return root / "subs", root / "release"


def timed_grade(subs, release, out, mode, workers):
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = grade(subs, out, release, timeout=60, workers=workers, progress=False, sandbox=mode)
    secs = time.perf_counter() - t0
    assert all(p == m > 0 for p, m in r.totals.values()), f"{mode}: not everyone got full marks: {r.totals}"
    return secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="40 students x 11 notebooks (the issue's size), 1 round")
    ap.add_argument("--students", type=int, help="students per class (default 4, or 40 with --full)")
    ap.add_argument("--rounds", type=int, help="rounds of both modes (default 2, or 1 with --full)")
    ap.add_argument("--workers", type=int, default=2, help="students graded at once (default 2)")
    a = ap.parse_args(argv)
    students, rounds = a.students or (40 if a.full else 4), a.rounds or (1 if a.full else 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)
        isolated = sandbox_mode()
        sandbox_mode("none")
    if isolated == "none": sys.exit("no sandbox works on this machine (install bubblewrap): nothing to compare")
    root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    subs, release = make_class(root, students)
    runs = students * 11
    load0 = os.getloadavg()[0]
    times = {isolated: [], "none": []}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SandboxWarning)
            for i in range(rounds):
                for mode in ([isolated, "none"] if i % 2 == 0 else ["none", isolated]):
                    secs = timed_grade(subs, release, root / f"out-{mode}", mode, a.workers)
                    times[mode].append(secs)
                    print(f"round {i + 1} {mode:8s} {runs} notebooks in {secs:7.1f} s  ({runs / secs:.2f} notebooks/s)",
                          flush=True)
    finally: shutil.rmtree(root, ignore_errors=True)
    ti, tn = sum(times[isolated]), sum(times["none"])
    ratio, load1 = ti / tn, os.getloadavg()[0]
    print(f"{students} students x 11 notebooks, {a.workers} workers, {rounds} round(s), "
          f"load {load0:.1f} -> {load1:.1f}: "
          f"isolated ({isolated}) {rounds * runs / ti:.2f} notebooks/s, without {rounds * runs / tn:.2f} notebooks/s, "
          f"ratio {ratio:.2f}x (target <= {TARGET}x)")
    out = Path(__file__).parent / "results" / "grading.json"
    out.write_text(json.dumps(dict(students=students, notebooks=11, workers=a.workers, rounds=rounds, sandbox=isolated,
                                   seconds={k: v for k, v in times.items()}, ratio=ratio, target=TARGET,
                                   load=[load0, load1], cpus=os.cpu_count()), indent=1) + "\n")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
