"""nbgrader 0.9.6 itself on every exercise notebook (nbs/exercises/ex*.ipynb), with the project's `python3` kernel:
`generate_assignment` strips every solution; `autograde` gives the reference solutions full marks, the untouched
release 0, and a submission carrying a usual mistake in each exercise 0 for that exercise; `generate_feedback` writes
the checker's worded feedback. One autograde run covers the three submissions; the test prints how long each step
took."""
import json, os, resource, shutil, subprocess, sys, time
from pathlib import Path

import pytest

from llm_course.exercise_notebooks import exercise_notebook_problems, tag_exercise_notebook
from llm_course.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
# every exercise notebook; LLM_COURSE_NBGRADER_GLOB="ex0[0-3]*.ipynb" narrows a local run (the suite runs them all)
NOTEBOOKS = sorted((ROOT / "nbs" / "exercises").glob(os.environ.get("LLM_COURSE_NBGRADER_GLOB", "ex*.ipynb")))
A = "exercises"                                         # the assignment: every exercise notebook
STUDENTS = ("solutions", "blank", "mistakes")


def cpu_seconds() -> float:
    "CPU time of the finished child processes (nbgrader and the kernels it ran): less sensitive to load than wall time."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def nbgrader(course: Path, *args: str, timeout: int):
    "Run the nbgrader command line in `course`; its output when it fails."
    exe = Path(sys.executable).with_name("nbgrader")
    p = subprocess.run(
        [str(exe) if exe.exists() else "nbgrader", *args], cwd=course, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def with_mistakes(release: dict, source: dict) -> tuple[dict, dict]:
    "The released notebook with each exercise's first usual mistake as the answer; exercise -> whether it has one."
    nb, planted = json.loads(json.dumps(release)), {}
    sol = {
        c["metadata"]["nbgrader"]["grade_id"]: c
        for c in source["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution")
    }
    for c in nb["cells"]:
        md = c["metadata"].get("nbgrader", {})
        if not md.get("solution"): continue
        name = md["grade_id"].removesuffix("_solution"); e = EXERCISES[name]
        planted[name] = bool(e.mistakes)
        if not e.mistakes: c["source"] = sol[md["grade_id"]]["source"]; continue  # no usual mistake: the right answer
        get = (f"from llm_course.exercises import get_exercise as _get\n"
               f"_wrong = list(_get({name!r}).mistakes.values())[0]\n")
        c["source"] = get + (f"def {name}(*args, **kwargs): return _wrong(*args, **kwargs)" if e.wants_function else
                             f"_c = _get({name!r}).cases(0)[0]\n{name} = _wrong(*_c.args, **_c.kwargs)")
    return nb, planted


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    "A course directory after generate_assignment, autograde (three students) and generate_feedback; step times."
    course, times = tmp_path_factory.mktemp("course"), {}
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'llm_course'\n"
                                              "c.Execute.timeout = 600\nc.Execute.kernel_name = 'python3'\n")
    src = course / "source" / A; src.mkdir(parents=True)
    for p in NOTEBOOKS: shutil.copy(p, src / p.name)
    def timed(step, timeout):
        t0, c0 = time.perf_counter(), cpu_seconds()
        nbgrader(course, step, A, "--force", timeout=timeout)
        times[step] = (time.perf_counter() - t0, cpu_seconds() - c0)
    timed("generate_assignment", 600)
    planted = {}
    for student in STUDENTS:
        sub = course / "submitted" / student / A; sub.mkdir(parents=True)
        for p in NOTEBOOKS:
            release = json.loads((course / "release" / A / p.name).read_text())
            if student == "solutions": nb = json.loads(p.read_text())
            elif student == "blank": nb = release
            else: nb, planted[p.stem] = with_mistakes(release, json.loads(p.read_text()))
            (sub / p.name).write_text(json.dumps(nb))
    timed("autograde", 3000)
    timed("generate_feedback", 600)
    print(f"\nnbgrader round trip over {len(NOTEBOOKS)} notebooks x {len(STUDENTS)} submissions (wall / CPU): "
          + ", ".join(f"{k} {w:.0f} s / {c:.0f} s" for k, (w, c) in times.items()))
    return course, planted


def scores(course: Path, student: str) -> dict:
    "notebook -> (score, max score, {exercise: score})."
    from nbgrader.api import Gradebook
    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for nb in gb.find_submission(A, student).notebooks:
            per = {g.name.removesuffix("_check"): g.score for g in nb.grades}
            out[nb.name] = (nb.score, nb.max_score, per)
    return out


def test_every_exercise_notebook_is_valid_nbgrader_metadata():
    assert NOTEBOOKS and (len(NOTEBOOKS) >= 14 or "LLM_COURSE_NBGRADER_GLOB" in os.environ)
    for p in NOTEBOOKS:
        assert exercise_notebook_problems(p) == [], p.name
        names = tag_exercise_notebook(json.loads(p.read_text()))
        assert len(names) == len(set(names)) >= 3, (p.name, names)


def test_release_strips_every_solution(graded):
    course, _ = graded
    for p in NOTEBOOKS:
        text = (course / "release" / A / p.name).read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, p.name
        rel = json.loads(text)
        for c in rel["cells"]:
            if c["metadata"].get("nbgrader", {}).get("solution"):
                assert "raise NotImplementedError()" in "".join(c["source"]), (p.name, c["source"])


def test_solutions_get_full_marks(graded):
    course, _ = graded
    got = scores(course, "solutions")
    assert set(got) == {p.stem for p in NOTEBOOKS}
    for nb, (score, top, per) in got.items():
        want = sum(e.points for e in EXERCISES.values() if e.notebook == nb)
        assert top == want and score == top, (nb, score, top, per)


def test_untouched_release_scores_0(graded):
    course, _ = graded
    for nb, (score, top, per) in scores(course, "blank").items():
        assert top > 0 and score == 0, (nb, per)


def test_usual_mistakes_score_less_than_full(graded):
    course, planted = graded
    for nb, (score, top, per) in scores(course, "mistakes").items():
        for name, has in planted[nb].items():
            assert per[name] == (0 if has else EXERCISES[name].points), (nb, name, per)
        if any(planted[nb].values()): assert score < top, (nb, per)


def test_feedback_carries_the_worded_checker_messages(graded):
    course, planted = graded
    for p in NOTEBOOKS:
        html = (course / "feedback" / "mistakes" / A / f"{p.stem}.html").read_text()
        for name, has in planted[p.stem].items():
            if has: assert f"NOT YET {name}" in html and "Hint:" in html, (p.stem, name)
        assert "PASSED" in (course / "feedback" / "solutions" / A / f"{p.stem}.html").read_text()
