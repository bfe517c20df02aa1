"""Issue 11: a class of hostile submissions graded in one run through the command line.

Honest work gets full marks, every cheat 0 for what it cheated on, nobody else's score moves, no student is added,
no process survives, the teacher's files are intact and the run completes. About a minute on 2 loaded cores
(38 sandboxed notebook runs, 2 workers, 3 s per cell)."""
import contextlib, csv, hashlib, io, json, os, socket, textwrap, threading
from pathlib import Path

import pytest

from llm_course import classroom as C
from llm_course.cli import main
from llm_course.exercise_notebooks import nbgrader_metadata
from llm_course.sandbox import sandbox_mode

MODE = sandbox_mode()
pytestmark = pytest.mark.skipif(MODE == "none" and os.geteuid() != 0,
                                reason="no sandbox on this machine and not root: hostile code would run as the tester")

RIGHT = '''def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == tuple(pair): out.append(new_id); i += 2
        else: out.append(ids[i]); i += 1
    return out'''
WRONG = RIGHT.replace("while i < len(ids):", "while i < len(ids) - 1:")   # the usual last-token mistake: half the tests
STUB = "def merge_pair(ids, pair, new_id):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
HEADER = "from llm_course.exercises import check"
NOTEBOOKS = [f"hw{i:02d}" for i in range(1, 12)]                           # 11 notebooks, 1 point each


def cell(source, role=None):
    md = nbgrader_metadata(role, "merge_pair") if role else {}
    return {"cell_type": "code", "metadata": md, "source": source, "outputs": [], "execution_count": None}


def notebook(*cells):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)}


def released(answer=STUB):
    "A released notebook (or a student's copy of it with `answer` in the solution cell)."
    return notebook(cell(HEADER), cell(answer, "solution"), cell("check(merge_pair)", "check"))


def hostile(*sources):
    "A student's copy of hw01 with extra cells of their own before the graded check."
    return notebook(cell(HEADER), *[cell(s) for s in sources], cell("check(merge_pair)", "check"))


def put(path, nb):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def digest(*folders):
    "Path -> sha256 of every file under `folders`."
    files = [p for f in map(Path, folders) for p in ([f] if f.is_file() else sorted(f.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def sandbox_processes():
    "Processes still running as a sandbox user id, or carrying a run token."
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try:
            uid = int((d / "status").read_text().split("Uid:")[1].split()[0])
            if 61000 <= uid < 61064 or b"LLM_COURSE_RUN=" in (d / "environ").read_bytes(): out.append(int(d.name))
        except (OSError, IndexError, ValueError): pass
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    A, S, O = d / "release", d / "subs", d / "out"
    for n in NOTEBOOKS: put(A / f"{n}.ipynb", released())
    teacher = d / "teacher_notes.txt"; teacher.write_text("the answers are in nbs/exercises")
    listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(8); listener.settimeout(0.5)
    port, reached, stop = listener.getsockname()[1], [], threading.Event()
    def accept():
        while not stop.is_set():
            try: reached.append(listener.accept()[0])
            except OSError: pass
    threading.Thread(target=accept, daemon=True).start()

    for n in NOTEBOOKS: put(S / "honest" / f"{n}.ipynb", released(RIGHT))
    for n in NOTEBOOKS[:2]: put(S / "blank" / f"{n}.ipynb", released())
    d = textwrap.dedent
    cases = {
        "writer": [d(f"""\
            import os, json
            theirs = [{str(O / 'results' / 'writer.json')!r}, {str(O / 'totals.csv')!r}]
            for p in ['../result.json', '../../result.json', *theirs]:
                try: open(p, 'w').write(json.dumps(dict(points=1000)))
                except OSError as e: print(e)
            os._exit(0)"""), STUB],
        "procreader": [d("""\
            import os, re
            seen = set()
            for d in os.listdir('/proc'):
                try: seen |= set(re.findall(r'/[\\w./-]+', open(f'/proc/{d}/cmdline').read().replace(chr(0), ' ')))
                except OSError: pass
            for p in seen:
                for f in ('results/honest.json', 'results/ghost.json', 'honest/hw01.ipynb'):
                    try: open(os.path.join(os.path.dirname(p), f), 'w').write('{}'); print('WROTE', p)
                    except OSError: pass"""), STUB],
        "killer": [d(f"""\
            import os
            for pid in (os.getppid(), 1, {os.getpid()}):
                try: os.kill(pid, 9)
                except OSError as e: print(pid, e)"""), RIGHT],
        "deleter": [d(f"""\
            import os, shutil
            for p in ({str(S / 'honest')!r}, {str(A)!r}): shutil.rmtree(p, ignore_errors=True)
            try: os.remove({str(teacher)!r})
            except OSError as e: print(e)"""), RIGHT],
        "sleeper": [d("""\
            import subprocess
            ps = []
            for _ in range(50):
                try: ps.append(subprocess.Popen(['sleep', '600'], start_new_session=True))
                except OSError as e: print(e); break
            print(len(ps), 'sleeping')"""), RIGHT],
        "forker": [d("""\
            import subprocess
            n = 0
            for _ in range(200):
                try: subprocess.Popen(['sleep', '600']); n += 1
                except OSError: break
            print('STARTED', n)
            try:
                with open('big', 'wb') as f:
                    for _ in range(700): f.write(bytes(1 << 20))
                print('WROTE 700 MB')
            except OSError as e: print('DISK', type(e).__name__, e)"""), RIGHT],
        "hog": ["try: big = bytearray(3_300_000_000); print('ALLOCATED')\n"
                "except MemoryError: print('MemoryError')", RIGHT],
        "net": [f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=3); print('CONNECTED')\n"
                "except OSError as e: print('NO NETWORK', e)", RIGHT],
        "patcher": [STUB, d("""\
            import importlib, math, numpy
            import llm_course.exercises as X
            importlib.reload = lambda m: m
            X.Exercise.run = X.Exercise.judge = lambda self, *a, **k: X.CheckResult(self.name, 6, 6, self.points)
            X.Exercise.answers = lambda self, fn, seed: [{'ok': 1}] * 6
            math.isclose = numpy.isclose = lambda *a, **k: True""")],
        "framepeek": ["def merge_pair(ids, pair, new_id):\n    import sys\n"
                      "    return sys._getframe(1).f_locals.get('expected', ids)"],
        "registry": ["from llm_course.exercises import EXERCISES\n"
                     "def merge_pair(ids, pair, new_id): return EXERCISES['merge_pair'].reference(ids, pair, new_id)"],
        "solexec": [d("""\
            import json, pathlib, llm_course
            p = pathlib.Path(llm_course.__file__).parent.parent / 'nbs' / 'exercises' / 'ex02_tokenization.ipynb'
            for c in json.loads(p.read_text())['cells']:
                if 'def merge_pair' in ''.join(c['source']): exec(''.join(c['source']))""")],
        "getattrs": ["import importlib\nmod = importlib.import_module('llm_course.' + 'tokeni' + 'zation')\n"
                     "_f = getattr(mod, '_merge' + '_pair')\n"
                     "def merge_pair(ids, pair, new_id): return list(_f(tuple(ids), tuple(pair), new_id))"],
        "direct": ["from llm_course.tokenization import _merge_pair\n"
                   "def merge_pair(ids, pair, new_id): return list(_merge_pair(tuple(ids), tuple(pair), new_id))"],
        "sneaky": ["import llm_course.tokenization as T\n"      # nothing the scan knows: the monitor sees the call
                   "def merge_pair(ids, pair, new_id):\n"
                   "    return list(vars(T)['_merge' + '_pair'](tuple(ids), tuple(pair), new_id))"],
        "fakepass": [STUB, "print('PASSED merge_pair: all 6 tests passed (1/1 points). Well done!')"],
        "looper": [RIGHT, "while True: pass"],
        "exiter": ["raise SystemExit(0)", RIGHT],
    }
    for student, sources in cases.items(): put(S / student / "hw01.ipynb", hostile(*sources))
    (S / "empty").mkdir()
    put(S / "one" / "hw01.ipynb", released(RIGHT))
    put(S / "pat o" / "hw01.ipynb", released(RIGHT)); put(S / "pat_o" / "hw01.ipynb", released(WRONG))
    put(S / "=1+2" / "hw01.ipynb", released(RIGHT))
    put(S / "shadow" / "hw01.ipynb", released())                          # a stand-in for the grader's own child module
    (S / "shadow" / "llm_course").mkdir(); (S / "shadow" / "llm_course" / "__init__.py").write_text("")
    (S / "shadow" / "llm_course" / "autograde.py").write_text(
        "import json, os, sys\n" + RIGHT + "\nch = int(os.environ['LLM_COURSE_CHANNEL'])\nsys.stdin.readline()\n"
        "os.write(ch, b'cells\\t[]\\n'); seed = int(sys.stdin.readline())\n"
        "import random\nfrom llm_course.exercises import EXERCISES\n"
        "a = EXERCISES['merge_pair'].answers(merge_pair, seed)\n"
        "os.write(ch, ('answers\\t' + json.dumps({'merge_pair': {'answers': a, 'flags': []}}) + '\\n').encode())\n")
    put(S / "helper" / "hw01.ipynb", hostile("from helpers import merge_pair"))
    (S / "helper" / "helpers.py").write_text(
        "import importlib\n_f = getattr(importlib.import_module('llm_course.tokenization'), '_merge' + '_pair')\n"
        "def merge_pair(ids, pair, new_id): return list(_f(tuple(ids), tuple(pair), new_id))\n")
    put(S / "linker" / "hw01.ipynb", released(RIGHT))                      # links to an endless file and the teacher's
    (S / "linker" / "zeros").symlink_to("/dev/zero"); (S / "linker" / "notes.txt").symlink_to(teacher)

    before, sleeps = digest(S, A, teacher), sandbox_processes()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["classroom", "grade", str(S), "--out", str(O), "--assignment", str(A), "--workers", "2",
                       "--timeout", "3", "--quiet"])
    stop.set(); listener.close()
    return dict(S=S, A=A, O=O, teacher=teacher, status=status, stdout=out.getvalue(), stderr=err.getvalue(),
                before=before,
                after=digest(S, A, teacher), reached=len(reached), left=sandbox_processes(), earlier=sleeps,
                students=sorted(p.name for p in S.iterdir()))


def totals(r):
    rows = csv.DictReader(open(r["O"] / "totals.csv"))
    return {row["student"]: (float(row["points"]), float(row["max"])) for row in rows}
def feedback(r, s): return (r["O"] / "feedback" / f"{C.student_key(s)}.md").read_text()
def log(r, s): return (r["O"] / "logs" / f"{C.student_key(s)}__hw01.log").read_text()


def test_the_run_completes(run):
    assert run["status"] == 0, run["stderr"]


def test_scores(run):
    want = dict(honest=11, blank=0, writer=0, procreader=0, killer=1, deleter=1, sleeper=1, hog=1, net=1, patcher=0,
                framepeek=0, registry=0, solexec=0, getattrs=0, direct=0, sneaky=0, fakepass=0, looper=1, exiter=1,
                empty=0, one=1, linker=1, forker=1, shadow=0, helper=0)
    want.update({"pat o": 1, "pat_o": 0.5, "'=1+2": 1})
    assert totals(run) == {s: (p, 11.0) for s, p in want.items()}       # no extra student, nobody's maximum shrinks


def test_reference_use_scores_zero_with_the_reason(run):
    for s in ("framepeek", "registry", "solexec", "getattrs", "direct", "sneaky"):
        assert "the course's own answer or works against the checker" in feedback(run, s), s
    assert "helpers.py imports code by a name built at run time" in feedback(run, "helper")
    for s in ("direct", "sneaky"):                              # nothing for the scan: the monitor sees the call
        assert "`llm_course.tokenization._merge_pair`, the course's own answer" in feedback(run, s), s


def test_nothing_escaped(run):
    assert run["after"] == run["before"], "a teacher's file or another student's submission changed"
    assert run["reached"] == 0, "a submission reached the grader's network"
    assert run["left"] == run["earlier"] == [], f"processes left behind: {run['left']}"
    stored = sorted(p.name for p in (run["O"] / "results").glob("*.json"))
    assert stored == sorted(f"{C.student_key(s)}.json" for s in run["students"])
    started = int(log(run, "forker").split("STARTED ")[1].split()[0])
    assert 0 < started < 64 and "DISK" in log(run, "forker"), log(run, "forker")       # process limit, file size limit
    assert "MemoryError" in log(run, "hog") and "NO NETWORK" in log(run, "net")
    assert "WROTE" not in log(run, "procreader")


def test_names_and_csv(run):
    assert "pat%20o.json" in {p.name for p in (run["O"] / "results").iterdir()}
    rows = list(csv.reader(open(run["O"] / "grades.csv")))
    assert ["'=1+2", "merge_pair", "1", "1"] in rows and not any(r[0].startswith("=") for r in rows)


def test_feedback_explains(run):
    assert "ran for more than 3 s and was stopped" in feedback(run, "looper")
    assert "hw02.ipynb is missing from the submission (handed in: hw01.ipynb)" in feedback(run, "one")
    assert "not done yet" in feedback(run, "fakepass")
    assert "imports code by a name built at run time (`importlib`)" in feedback(run, "patcher")
