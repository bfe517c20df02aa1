"""The claims check (tools/claims.py): a claim that holds passes, one that does not fails, one that cannot be evaluated
fails with a message, a lesson that breaks fails, and every entry of the table names an existing lesson and compiles."""
import importlib.util, json, sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("claims", ROOT / "tools" / "claims.py")
claims = sys.modules["claims"] = importlib.util.module_from_spec(_spec)   # dataclasses look their module up there
_spec.loader.exec_module(claims)
Claim = claims.Claim


def _lesson(folder: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A toy lesson")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, folder / name)
    return folder / name


def test_claims_hold_fail_or_cannot_be_evaluated(tmp_path):
    _lesson(tmp_path, "98_toy.ipynb", "import os\nx = 2\nprofile = os.environ['LLM_COURSE_PROFILE']",
            "#| notest\nraise RuntimeError('a skipped cell')", "#| hide\nimport nbdev; nbdev.nbdev_export()")
    table = {"98": [Claim("x is 2", "x == 2", "x"), Claim("x is 3", "x == 3", "x"), Claim("y is positive", "y > 0"),
                    Claim("runs at the profile asked for", "profile == 'ci'", "profile")]}
    [r] = claims.check_lessons(["98"], "ci", table, nbs=tmp_path, save=tmp_path / "out", log=lambda *a: None)
    assert r["error"] is None and r["seconds"] >= 0
    assert [c["ok"] for c in r["claims"]] == [True, False, False, True]
    assert r["claims"][0]["value"] == "2" and r["claims"][1]["value"] == "2"
    assert "NameError" in r["claims"][2]["error"] and "update tools/claims.py" in r["claims"][2]["error"]
    assert not claims.passed([r])
    text = claims.report([r])
    assert "ok   x is 2: 2" in text and "FAIL x is 3: 2" in text and "FAIL y is positive" in text
    executed = json.loads((tmp_path / "out" / "98_toy.ipynb").read_text())
    assert executed["cells"][1]["cell_type"] == "code"
    assert claims.passed([dict(r, claims=r["claims"][:1])])


def test_a_lesson_that_breaks_fails_every_claim(tmp_path):
    _lesson(tmp_path, "97_broken.ipynb", "x = 1", "1 / 0", "x = 2")
    table = {"97": [Claim("x is 1", "x == 1", "x")]}
    [r] = claims.check_lessons(["97"], "ci", table, nbs=tmp_path, log=lambda *a: None)
    assert "ZeroDivisionError" in r["error"] and "cell 2" in r["error"]
    assert r["claims"][0]["ok"] is False and not claims.passed([r])


def test_the_table_names_real_lessons_and_compiles():
    for lesson, items in claims.CLAIMS.items():
        assert len(list((ROOT / "nbs").glob(f"{lesson}_*.ipynb"))) == 1, lesson
        assert items, lesson
        for c in items:
            compile(c.check, "<check>", "eval")
            if c.value: compile(c.value, "<value>", "eval")
    assert {"04", "06", "07", "08", "09", "12"} <= set(claims.CLAIMS)


def test_command_line(capsys):
    assert claims.main(["--list", "06"]) == 0
    assert "macro-F1 >= 0.90" in capsys.readouterr().out
    assert claims.main(["00"]) == 2
    assert "no claims recorded" in capsys.readouterr().err
