"""llm_course.classroom: student versions (nbgrader conventions) and sandboxed grading, end to end (hostile cases:
test_hostile)."""
import contextlib, csv, io, json, os, signal, subprocess, sys, time, warnings
from pathlib import Path

import pytest

from llm_course import classroom as C
from llm_course import exercise_notebooks as N
from llm_course.cli import main

NBS = Path(__file__).resolve().parents[1] / "nbs" / "exercises"

RIGHT = '''def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == tuple(pair): out.append(new_id); i += 2
        else: out.append(ids[i]); i += 1
    return out'''
WRONG = RIGHT.replace("while i < len(ids):", "while i < len(ids) - 1:")   # the last token is lost


def nb(*cells):
    "A notebook from cells: a code string, or (type, source) / (type, source, tags)."
    out = []
    for c in cells:
        t, s, tags = (c + ((),))[:3] if isinstance(c, tuple) else ("code", c, ())
        cell = {"cell_type": t, "metadata": {"tags": list(tags)} if tags else {}, "source": s}
        if t == "code":
            cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "old output"}], execution_count=7)
        out.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": out}


def write(path, notebook):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook) if isinstance(notebook, dict) else notebook)
    return path


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


# --- student versions ------------------------------------------------------------------------------------------
def test_strip_markers_keeps_indentation_and_names_bad_cells():
    src = ("class A:\n    def f(self):\n        x = 1\n"
           "        ### BEGIN SOLUTION\n        return x\n        ### END SOLUTION\n")
    assert (
        N.strip_markers(src)
        == "class A:\n    def f(self):\n        x = 1\n        # YOUR CODE HERE\n        raise NotImplementedError()\n"
    )
    assert N.strip_markers("A\n### BEGIN SOLUTION\nB\n### END SOLUTION\nC", "markdown") == "A\nYOUR ANSWER HERE\nC"
    assert N.strip_markers("f()\n### BEGIN HIDDEN TESTS\nassert f() == 1\n### END HIDDEN TESTS\ng()") == "f()\ng()"
    with pytest.raises(N.MarkerError, match=r"hw.ipynb, cell 4: '### BEGIN SOLUTION' is never closed"):
        N.strip_markers("### BEGIN SOLUTION\nx = 1", where="hw.ipynb, cell 4")
    with pytest.raises(N.MarkerError, match=r"line 1 has '### END SOLUTION' without a matching '### BEGIN SOLUTION'"):
        N.strip_markers("### END SOLUTION")
    with pytest.raises(N.MarkerError, match="line 2 opens '### BEGIN HIDDEN TESTS' inside the '### BEGIN SOLUTION'"):
        N.strip_markers("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS\n### END SOLUTION")


def test_release_folder(tmp_path):
    src = tmp_path / "src"
    write(src / "hw.ipynb", nb("import math",
                               "def f(x):\n    ### BEGIN SOLUTION\n    return math.sqrt(x)\n    ### END SOLUTION",
                               ("markdown", "Why?\n\n### BEGIN SOLUTION\nbecause\n### END SOLUTION"),
                               ("code", "assert f(4) == 2", ("hidden-tests",)),
                               "#| hidden-tests\nassert f(9) == 3",
                               "f(16)\n### BEGIN HIDDEN TESTS\nassert f(1) == 1\n### END HIDDEN TESTS"))
    write(src / "week2" / "more.ipynb", nb("y = 1"))
    (src / "data.csv").write_text("a,b\n1,2\n")
    write(src / ".ipynb_checkpoints" / "hw-checkpoint.ipynb", nb("secret = 1"))
    status, out, err = run_cli("classroom", "release", src, tmp_path / "rel")
    assert status == 0 and "wrote 2 student notebooks" in out, err
    rel = json.loads((tmp_path / "rel" / "hw.ipynb").read_text())
    text = json.dumps(rel)
    assert len(rel["cells"]) == 4 and "sqrt" not in text and "because" not in text and "assert" not in text
    assert rel["cells"][1]["source"] == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert rel["cells"][2]["source"] == "Why?\n\nYOUR ANSWER HERE" and rel["cells"][3]["source"] == "f(16)"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in rel["cells"] if c["cell_type"] == "code")
    assert (tmp_path / "rel" / "data.csv").read_text() == "a,b\n1,2\n" and (
        tmp_path / "rel" / "week2" / "more.ipynb"
    ).exists()
    assert not (tmp_path / "rel" / ".ipynb_checkpoints").exists()
    # a second release refuses to overwrite, --force replaces
    assert run_cli("classroom", "release", src, tmp_path / "rel")[0] == 2
    assert run_cli("classroom", "release", src, tmp_path / "rel", "--force")[0] == 0
    # unbalanced markers: a clear error naming the file and the cell, and nothing half-written
    write(src / "week2" / "more.ipynb", nb("y = 1", "z = 2", "def g():\n    ### BEGIN SOLUTION\n    return 1\n"))
    status, out, err = run_cli("classroom", "release", src, tmp_path / "rel2")
    assert (
        status == 2
        and "week2/more.ipynb, cell 2: '### BEGIN SOLUTION' is never closed" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "rel2").exists() and not list(tmp_path.glob(".release-*"))
    with pytest.raises(ValueError, match="inside"): N.release(src, src / "out")


def test_release_course_exercises_gives_stubs(tmp_path):
    written = N.release(NBS, tmp_path / "rel")
    assert len(written) >= 7
    for p in written:
        src = "\n".join(N.cell_source(c) for c in N.read_notebook(p)["cells"])
        assert "### BEGIN SOLUTION" not in src and "raise NotImplementedError()" in src and "check(" in src


# --- grading ---------------------------------------------------------------------------------------------------
HEADER = "from llm_course.exercises import check"


def assignment(d):
    "A released folder with one notebook, hw.ipynb, checking merge_pair (its check cell graded, as a release tags it)."
    released = N.student_notebook(nb(HEADER, RIGHT.replace("    out, i", "    ### BEGIN SOLUTION\n    out, i")
                                     + "\n    ### END SOLUTION", "check(merge_pair)"))
    for c in released["cells"]:
        if "".join(c["source"]).strip() == "check(merge_pair)":
            c["metadata"]["nbgrader"] = {
                "grade": True,
                "solution": False,
                "locked": True,
                "grade_id": "check_merge_pair",
                "points": 1,
                "schema_version": 3,
            }
    write(d / "assignment" / "hw.ipynb", released)
    return d / "assignment"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    "Eight fake submissions graded once through the command line, two workers."
    d = tmp_path_factory.mktemp("class")
    A, S = assignment(d), d / "subs"
    write(S / "alice" / "hw.ipynb", nb(HEADER, RIGHT, "check(merge_pair)"))
    write(S / "bob" / "hw.ipynb", nb(HEADER, WRONG, "check(merge_pair)"))
    write(
        S / "carol" / "hw.ipynb", nb(HEADER, "undefined_name + 1", RIGHT, "raise RuntimeError('boom')")
    )  # crashes, then recovers
    write(
        S / "dave" / "hw.ipynb",
        nb(HEADER, "def merge_pair(ids, pair, new_id):\n    while True: pass", "check(merge_pair)"),
    )
    write(S / "erin" / "hw.ipynb", nb(HEADER, RIGHT, "import os; os._exit(3)"))  # kills its process
    write(S / "frank.txt", "I did it on paper")  # not a notebook
    write(S / "gina" / "hw.ipynb", '{"cells": [ {"cell_type": "code", "source": "x = 1"')  # broken JSON
    write(S / "hank.ipynb", nb(RIGHT))  # one file per student
    t0 = time.time()
    status, out, err = run_cli(
        "classroom", "grade", S, "--out", d / "out", "--assignment", A, "--timeout", 1, "--workers", 2, "--quiet"
    )
    return dict(d=d, A=A, out=d / "out", status=status, stdout=out, stderr=err, seconds=time.time() - t0)


def feedback(g, student): return (g["out"] / "feedback" / f"{C.student_key(student)}.md").read_text()


def test_grade_table_and_totals(graded):
    assert graded["status"] == 0, graded["stderr"]
    rows = list(csv.DictReader(open(graded["out"] / "grades.csv")))
    assert list(rows[0]) == ["student", "exercise", "points", "max"]
    got = {(r["student"], r["exercise"]): (float(r["points"]), float(r["max"])) for r in rows}
    assert got == {("alice", "merge_pair"): (1, 1), ("bob", "merge_pair"): (0.5, 1), ("carol", "merge_pair"): (1, 1),
                   ("dave", "merge_pair"): (0, 1), ("erin", "merge_pair"): (0, 1), ("frank.txt", "merge_pair"): (0, 1),
                   ("gina", "merge_pair"): (0, 1), ("hank", "merge_pair"): (1, 1)}
    totals = {r["student"]: float(r["points"]) for r in csv.DictReader(open(graded["out"] / "totals.csv"))}
    assert totals["alice"] == 1 and totals["bob"] == 0.5
    assert "alice" in graded["stdout"] and "graded 8 student(s)" in graded["stdout"]


def test_feedback_in_words(graded):
    assert "✅ merge_pair" in feedback(graded, "alice") and "Total: 1 / 1" in feedback(graded, "alice")
    bob = feedback(graded, "bob")
    assert "❌ merge_pair" in bob and "the last token is dropped" in bob and "Hint:" in bob and "Traceback" not in bob
    carol = feedback(graded, "carol")
    assert (
        "cell 2 (`undefined_name + 1`) raised NameError" in carol
        and "cell 4 (`raise RuntimeError('boom')`) raised RuntimeError: boom" in carol
    )
    assert "stopped after 10 s: is there an endless loop?" in feedback(graded, "dave")        # the exercise's own limit
    assert "the Python process running the notebook died (exit code 3) in cell 3" in feedback(graded, "erin")
    assert "hw.ipynb is missing from the submission (handed in: frank.txt)" in feedback(graded, "frank.txt")
    assert "hw.ipynb is not valid notebook JSON (line 1" in feedback(graded, "gina")
    assert "✅ merge_pair" in feedback(graded, "hank")
    log = (graded["out"] / "logs" / f"{C.student_key('bob')}__hw.log").read_text()
    assert "NOT YET merge_pair" not in log                # the graded check cell is not run in the sandbox


def test_grade_is_resumable(graded):
    out = graded["out"]
    (out / "results" / "bob.json").unlink()                        # as if the run had stopped before bob
    before = (out / "results" / "alice.json").stat().st_mtime_ns
    seed = json.loads((out / "run.json").read_text())["seed"]
    status, stdout, _ = run_cli(
        "classroom", "grade", graded["d"] / "subs", "--out", out, "--assignment", graded["A"], "--timeout", 1, "--quiet"
    )
    assert status == 0 and "graded 1 student(s), skipped 7" in stdout
    assert (out / "results" / "alice.json").stat().st_mtime_ns == before and json.loads((out / "run.json").read_text())[
        "seed"
    ] == seed
    assert ("bob", "0.5") in [(r["student"], r["points"]) for r in csv.DictReader(open(out / "grades.csv"))]


def test_interrupted_run_keeps_finished_students(tmp_path, monkeypatch):
    A, S = assignment(tmp_path), tmp_path / "subs"
    for s in ("ann", "ben", "cid"): write(S / s / "hw.ipynb", nb(RIGHT, "check(merge_pair)"))
    real = C.grade_student
    def stop_at_ben(student, *a, **k):
        if student == "ben": raise KeyboardInterrupt
        return real(student, *a, **k)
    monkeypatch.setattr(C, "grade_student", stop_at_ben)
    with pytest.raises(KeyboardInterrupt): C.grade(S, tmp_path / "out", A, timeout=2, progress=False)
    assert sorted(p.stem for p in (tmp_path / "out" / "results").glob("*.json")) == ["ann"]
    assert [r["student"] for r in csv.DictReader(open(tmp_path / "out" / "grades.csv"))] == ["ann"]
    monkeypatch.setattr(C, "grade_student", real)
    r = C.grade(S, tmp_path / "out", A, timeout=2, progress=False)
    assert (
        r.skipped == ["ann"]
        and sorted(r.graded) == ["ben", "cid"]
        and r.totals == {"ann": (1, 1), "ben": (1, 1), "cid": (1, 1)}
    )
    # a changed submission is regraded; force=True draws a new seed and regrades everyone
    write(S / "cid" / "hw.ipynb", nb(WRONG, "check(merge_pair)"))
    r = C.grade(S, tmp_path / "out", A, timeout=2, progress=False)
    assert r.graded == ["cid"] and r.totals["cid"] == (0.5, 1)
    seed = r.seed
    assert C.grade(S, tmp_path / "out", A, timeout=2, progress=False, force=True).seed != seed


def test_default_assignment_is_the_whole_course(tmp_path):
    "Without --assignment a student is graded on every exercise notebook of the course: missing ones count 0."
    write(tmp_path / "subs" / "ann" / "ex02_tokenization.ipynb", nb(RIGHT))
    r = C.grade(tmp_path / "subs", tmp_path / "out", timeout=2, progress=False)
    best = sum(e.points for e in C.list_exercises())
    assert r.totals["ann"][1] == best and r.totals["ann"][0] == C.EXERCISES["merge_pair"].points


def test_reference_use_and_output_inside_submissions(tmp_path):
    A, S = assignment(tmp_path), tmp_path / "subs"
    cheat = "import llm_course.exercises as X\nX.EXERCISES['merge_pair'].reference = merge_pair"
    write(S / "mallory" / "hw.ipynb", nb(WRONG, cheat, "check(merge_pair)"))
    (S / "mallory" / "data.csv").write_text("a\n1\n")                   # a data file next to the notebook is no problem
    r = C.grade(S, S / "graded", A, timeout=30, progress=False)           # the output folder inside is not a student
    assert r.totals == {"mallory": (0, 1)}
    text = (S / "graded" / "feedback" / "mallory.md").read_text()
    assert (
        "cell 2 reads the course's exercise registry (it has the answers) (`EXERCISES`)" in text
        and "data.csv" not in text
    )


def test_hard_limit_kills_a_notebook_that_ignores_the_alarm(tmp_path):
    from llm_course.autograde import run_submission

    p = write(
        tmp_path / "hw.ipynb",
        nb(RIGHT, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass"),
    )
    t0 = time.time()
    # start-up may take up to 60 s on a loaded machine; the cells' 1 s each count from the first cell's start
    r = run_submission(p, ["merge_pair"], seed=1, timeout=1, startup=60)
    assert time.time() - t0 < 60 or os.getloadavg()[0] > 4  # stopped a few seconds after cell 2 began
    assert (
        "the notebook was stopped: no answer in time in cell 2" in r["errors"][-1]
        and r["answers"]["merge_pair"] is None
    )


def _runs():
    "Processes of sandboxed runs (their environment carries a run token)."
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"LLM_COURSE_RUN=" in (d / "environ").read_bytes(): out.append(int(d.name))
        except OSError: pass
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killed_grader_leaves_nothing_and_resumes(tmp_path):
    A, S, out = assignment(tmp_path), tmp_path / "subs", tmp_path / "out"
    write(S / "ann" / "hw.ipynb", nb(RIGHT))
    write(
        S / "bob" / "hw.ipynb",
        nb(
            RIGHT,
            "import subprocess\nsubprocess.Popen(['sleep', '600'], start_new_session=True)\n"
            "import time\nwhile True: time.sleep(0.1)",
        ),
    )
    cmd = [
        str(Path(sys.executable).parent / "llm-course"),
        "classroom",
        "grade",
        str(S),
        "--out",
        str(out),
        "--assignment",
        str(A),
        "--timeout",
        "60",
        "--quiet",
    ]
    grader = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "results" / "ann.json").exists() and time.time() - t0 < 120: time.sleep(0.2)
    while not _runs() and time.time() - t0 < 120: time.sleep(0.2)                # bob's run has started
    assert _runs(), "bob's run never started"
    os.kill(grader.pid, signal.SIGKILL); grader.wait()
    t0 = time.time()
    while _runs() and time.time() - t0 < 60: time.sleep(0.2)
    left = _runs()
    for pid in left: os.kill(pid, signal.SIGKILL)
    assert not left, "processes of the killed grader's run survived"
    seed = json.loads((out / "run.json").read_text())["seed"]
    write(S / "bob" / "hw.ipynb", nb(WRONG))                                        # bob hands in a finished version
    r = C.grade(S, out, A, timeout=60, progress=False)
    assert (
        r.skipped == ["ann"] and r.graded == ["bob"] and r.seed == seed and r.totals == {"ann": (1, 1), "bob": (0.5, 1)}
    )


def test_fallback_modes_warn_and_still_grade(tmp_path):
    from llm_course import sandbox as X
    A, S = assignment(tmp_path), tmp_path / "subs"
    write(S / "ann" / "hw.ipynb", nb(RIGHT))
    X.sandbox_mode.cache_clear()
    try:
        with pytest.warns(X.SandboxWarning, match="SANDBOX REDUCED to 'none'.*install bubblewrap"):
            X.sandbox_mode("none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", X.SandboxWarning)
            assert C.grade(S, tmp_path / "out", A, timeout=5, progress=False, sandbox="none").totals == {"ann": (1, 1)}
    finally: X.sandbox_mode.cache_clear()


def test_bad_submissions_folder(tmp_path):
    status, _, err = run_cli("classroom", "grade", tmp_path / "nothing", "--out", tmp_path / "out")
    assert status == 2 and "is not a folder of submissions" in err


def test_unshare_fallback_cuts_the_network(tmp_path):
    "Where bubblewrap is missing but `unshare` works, the notebook still runs with no network."
    import socket, warnings
    from llm_course import sandbox as X
    from llm_course.autograde import run_submission
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", X.SandboxWarning)
        try: X.sandbox_mode("unshare")
        except X.SandboxError as e: pytest.skip(f"unshare does not work here: {e}")
        listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(1)
        code = (f"import socket\ntry: socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=3); "
                "print('CONNECTED')\nexcept OSError as e: print('NO NETWORK', e)\n" + RIGHT)
        p = write(tmp_path / "hw.ipynb", nb(code))
        r = run_submission(p, ["merge_pair"], seed=3, timeout=10, sandbox="unshare", log=tmp_path / "log")
    listener.close()
    assert "NO NETWORK" in (tmp_path / "log").read_text() and r["answers"]["merge_pair"] is not None
