"`./course site`: every lesson and released exercise as an executed page, offline, cached (tools/site.py)."
import importlib.util, json, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("course_site", ROOT / "tools" / "site.py")
S = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(S)
sys.path.insert(0, str(ROOT / "tools"))
from workspace import lesson_paths  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The whole site at the ci profile (executions cached in .cache/site/, so a second test run is quick)."
    out = tmp_path_factory.mktemp("site") / "_site"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "site.py"), "--profile", "ci", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def _pages(site: Path) -> list[Path]: return sorted(site.rglob("*.html"))


def test_every_lesson_and_exercise_has_a_page(site):
    for p in lesson_paths(ROOT / "nbs"): assert (site / f"{p.stem}.html").exists(), p.name
    exs = sorted((ROOT / "nbs" / "exercises").glob("*.ipynb"))
    assert exs and all((site / "exercises" / f"{p.stem}.html").exists() for p in exs)
    home = (site / "index.html").read_text()
    for p in lesson_paths(ROOT / "nbs"): assert f'href="{p.stem}.html"' in home, p.name
    report = json.loads((site / "build.json").read_text())
    assert report["profile"] == "ci" and len(report["notebooks"]) == len(_pages(site))


def test_no_page_shows_an_error_or_a_solution(site):
    for page in _pages(site):
        text = page.read_text()
        assert "Traceback" not in text and 'class="ansi-red-fg">-----' not in text, page.name
        if page.parent.name == "exercises":  # (the home page's prose names the markers)
            assert "BEGIN SOLUTION" not in text, page.name
    assert all(not i["errors"] for i in json.loads((site / "build.json").read_text())["notebooks"].values())


def test_outputs_are_there(site):
    "Executed pages: the lessons' printed results and figures are in the pages (the source notebooks have none)."
    imgs = 0
    for page in _pages(site):
        text = page.read_text()
        for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', text):
            assert not src.startswith(("http:", "https:", "//")), (page.name, src)
            if not src.startswith("data:"): assert (page.parent / src).is_file(), (page.name, src); imgs += 1
    assert imgs >= 10  # lessons 01-12 plot
    assert "jp-OutputArea-output" in (site / "00_core.html").read_text()


def test_pages_load_nothing_from_the_network(site):
    pat = re.compile(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    for page in _pages(site):
        text = page.read_text()
        assert not pat.search(text), (page.name, pat.search(text)[0])
        m = re.search(r'<script src="([^"]*MathJax.js)', text)
        assert m and (page.parent / m[1]).is_file(), page.name
    assert (site / "assets" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()


def test_navigation(site):
    pages = [p.stem for p in lesson_paths(ROOT / "nbs")]
    first, second = (site / f"{pages[0]}.html").read_text(), (site / "exercises").glob("*.html")
    assert 'href="index.html"' in first and f'href="{pages[1]}.html"' in first
    assert all('href="../index.html"' in p.read_text() for p in second)


def _nb(cells): return json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "P",
                                   "language": "python"}}, "nbformat": 4, "nbformat_minor": 5})


def _code(src): return {"cell_type": "code", "execution_count": None, "id": str(abs(hash(src)))[:8], "metadata": {},
                        "outputs": [], "source": src}


def test_a_rebuild_after_one_edit_executes_one_notebook(tmp_path):
    nbs, pkg = tmp_path / "nbs", tmp_path / "pkg"; nbs.mkdir(); pkg.mkdir(); (pkg / "m.py").write_text("x = 1\n")
    (nbs / "index.ipynb").write_text(_nb([{"cell_type": "markdown", "id": "a", "metadata": {},
                                           "source": "# Home\n\n| `00_a` | m | a |\n| `01_b` | m | b |"}]))
    for name in ("00_a", "01_b"):
        (nbs / f"{name}.ipynb").write_text(_nb([_code("#| default_exp m"), _code(f"print('{name}', 6 * 7)"),
                                                 _code("#| slow\nraise RuntimeError('skipped like nbdev_test')")]))
    build = lambda: S.build(tmp_path / "site", "ci", nbs, pkg, cache=tmp_path / "cache", workers=1)["notebooks"]
    ran = lambda rep: sorted(r for r, i in rep.items() if not i["cached"] and i["seconds"] > 0)
    assert ran(build()) == ["00_a.ipynb", "01_b.ipynb"]
    assert "00_a 42" in (tmp_path / "site" / "00_a.html").read_text()
    assert ran(build()) == []
    (nbs / "01_b.ipynb").write_text((nbs / "01_b.ipynb").read_text().replace("6 * 7", "6 * 8"))
    assert ran(build()) == ["01_b.ipynb"]
    assert "01_b 48" in (tmp_path / "site" / "01_b.html").read_text()
    (pkg / "m.py").write_text("x = 2\n")  # a package change re-executes everything
    assert ran(build()) == ["00_a.ipynb", "01_b.ipynb"]


def test_only_an_unwritten_exercise_counts_as_expected():
    "A released exercise may raise NotImplementedError or a NameError of its own answer; anything else is an error."
    import nbformat
    sol = nbformat.v4.new_code_cell("raise NotImplementedError()",
                                    metadata={"nbgrader": {"grade_id": "ln_ablation_solution", "solution": True}})
    err = lambda e, v: {"output_type": "error", "ename": e, "evalue": v, "traceback": []}
    nb = nbformat.v4.new_notebook(cells=[sol, nbformat.v4.new_code_cell("ln_ablation"), nbformat.v4.new_code_cell("x")])
    sol.outputs = [err("NotImplementedError", "")]
    nb.cells[1].outputs = [err("NameError", "name 'ln_ablation' is not defined")]
    assert S.errors(nb, "exercises/ex03.ipynb") == []
    nb.cells[2].outputs = [err("NameError", "name 'x' is not defined")]
    assert S.errors(nb, "exercises/ex03.ipynb") == ["cell 2: NameError: name 'x' is not defined"]
    assert len(S.errors(nb, "03_transformer.ipynb")) == 3  # in a lesson, every error counts
