"""The repository's own promises: README made from index.ipynb, notebooks clean and exported,
the set-up installs what settings.ini declares, and every lesson is a module."""
import configparser, re, subprocess, sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def test_readme_is_generated_from_index():
    from make_readme import render
    assert (ROOT / "README.md").read_text(encoding="utf-8") == render(ROOT / "nbs" / "index.ipynb"), \
        "README.md is stale: run `python tools/make_readme.py`"


def test_notebooks_clean_and_exported():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "check_nbs.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_declared_requirements_installed():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    reqs = cfg["DEFAULT"]["requirements"].split() + cfg["DEFAULT"]["dev_requirements"].split()
    reqs += [
        l.strip()
        for l in (ROOT / "requirements-nodeps.txt").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    missing = []
    for r in reqs:
        name = re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0]
        try: version(name)
        except PackageNotFoundError: missing.append(name)
    assert not missing, f"declared but not installed: {missing}"


def test_every_lesson_exports_its_module():
    "Each numbered notebook names a module with default_exp, and that module imports."
    import importlib, json
    for nb in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")):
        src = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        m = re.search(r"#\|\s*default_exp\s+(\S+)", src)
        assert m, f"{nb.name}: first cell must be `#| default_exp <module>`"
        assert m.group(1) not in {"peft", "evaluate", "tokenizers", "datasets", "transformers"}, (
            f"{nb.name} shadows a dependency"
        )
        importlib.import_module(f"llm_course.{m.group(1)}")


def test_readme_commands_exist():
    text = (ROOT / "README.md").read_text()
    assert "./course lab" in text and "./course test" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./course test" in ci


def test_readme_lists_every_notebook_with_its_module():
    "The README's lesson table names every numbered notebook and the module it exports (a new lesson needs a row)."
    import json
    table = (ROOT / "README.md").read_text().split("## The lessons", 1)[1].split("\n## ", 1)[0]
    missing = []
    for nb in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")):
        first = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        mod = re.search(r"#\|\s*default_exp\s+(\S+)", first).group(1)
        if mod.startswith("exercise_sets."):   # one row for all the sets (`95a_exercises_*`, ...)
            row_ok = "`llm_course.exercise_sets.*`" in table and f"`{nb.name[:3]}_exercises_*`" in table
        else:
            row_ok = f"| `{nb.stem}` | `llm_course.{mod}` |" in table
        if not row_ok: missing.append(f"{nb.stem} (llm_course.{mod})")
    assert not missing, (f"README's lesson table lacks {missing}: add a row to nbs/index.ipynb, "
                         "then python tools/make_readme.py")
