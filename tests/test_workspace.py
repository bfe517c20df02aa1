"The student workspace (tools/workspace.py, `./course lab`): made from the source, updated safely, never writing it."
import hashlib, json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import workspace as W  # noqa: E402


def _cells(p: Path) -> list[str]: return ["".join(c["source"]) for c in json.loads(p.read_text())["cells"]]


def _snapshot(*dirs: Path) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(d.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}


def test_lessons_in_the_workspace_cannot_export(tmp_path):
    W.sync(tmp_path)
    lessons = W.lesson_paths(ROOT / "nbs")
    assert len(lessons) >= 13 and all((tmp_path / p.name).exists() for p in lessons)
    for p in lessons:
        src = "\n".join(_cells(tmp_path / p.name))
        assert "nbdev_export(" not in src and "default_exp" not in src, p.name
        assert any("#| default_exp" in s for s in _cells(p)), f"{p.name}: the source lost its default_exp?"


def test_released_exercises_have_no_solutions(tmp_path):
    W.sync(tmp_path)
    exs = sorted((tmp_path / "exercises").glob("*.ipynb"))
    assert len(exs) == len(list((ROOT / "nbs" / "exercises").glob("*.ipynb"))) >= 11
    for p in exs:
        assert "BEGIN SOLUTION" not in p.read_text(), p.name
    assert any("BEGIN SOLUTION" in p.read_text() for p in (ROOT / "nbs" / "exercises").glob("*.ipynb"))


def test_start_page_links_every_lesson_and_exercise(tmp_path):
    W.sync(tmp_path)
    text = "\n".join(_cells(tmp_path / "index.ipynb"))
    assert str(tmp_path) in text  # the page says where the workspace is
    for p in W.lesson_paths(ROOT / "nbs"): assert f"]({p.name})" in text, p.name
    for p in (tmp_path / "exercises").glob("*.ipynb"): assert f"](exercises/{p.name})" in text, p.name


def _edit(p: Path, text: str):
    "Replace the first markdown cell of notebook `p` (its title) by `text`."
    nb = json.loads(p.read_text())
    next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"] = text
    p.write_text(json.dumps(nb))


def _title(p: Path) -> str:
    return next("".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown")


def test_updates_never_overwrite_the_students_work(tmp_path):
    nbs, ws = tmp_path / "nbs", tmp_path / "ws"
    shutil.copytree(ROOT / "nbs", nbs, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    W.sync(ws, nbs=nbs)
    assert W.sync(ws, nbs=nbs) == []  # nothing new, nothing said
    # the student edits 02, only runs 03 (outputs, no source change), deletes 04
    _edit(ws / "02_tokenization.ipynb", "my notes")
    nb = json.loads((ws / "03_transformer.ipynb").read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran"}]
    (ws / "03_transformer.ipynb").write_text(json.dumps(nb))
    (ws / "04_training.ipynb").unlink()
    # the course updates 02 and 03
    _edit(nbs / "02_tokenization.ipynb", "new course text 02")
    _edit(nbs / "03_transformer.ipynb", "new course text 03")
    msgs = W.sync(ws, nbs=nbs)
    assert _title(ws / "02_tokenization.ipynb") == "my notes"
    assert _title(ws / "02_tokenization.new.ipynb") == "new course text 02"
    assert _title(ws / "03_transformer.ipynb") == "new course text 03"
    assert (ws / "04_training.ipynb").exists()
    said = "\n".join(msgs)
    assert "02_tokenization.new.ipynb" in said and "you changed it" in said
    assert "updated   03_transformer.ipynb" in said and "restored  04_training.ipynb" in said
    assert W.sync(ws, nbs=nbs) == []  # the new version is offered once, not at every start
    assert _title(ws / "02_tokenization.ipynb") == "my notes"


def test_workspace_inside_the_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="inside"): W.sync(ROOT / "nbs" / "ws")
    with pytest.raises(ValueError, match="inside"): W.sync(ROOT / "llm_course")


def test_lab_settings_save_widget_state_and_fetch_no_news(tmp_path):
    dest = W.install_lab_settings(tmp_path)
    assert dest == tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    s = json.loads(dest.read_text())
    assert s["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    assert s["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


def test_running_and_saving_a_workspace_lesson_leaves_the_source_alone(tmp_path):
    "Run a lesson in a workspace inside the clone (like workspace/), edit it, save it: nbs/ and llm_course/ unchanged."
    import nbformat
    from nbclient import NotebookClient
    ws = ROOT / f".cache/test-workspace-{tmp_path.name}"
    check = lambda: subprocess.run([sys.executable, str(ROOT / "tools" / "check_nbs.py")],
                                   capture_output=True, text=True)
    before, clean_before = _snapshot(ROOT / "nbs", ROOT / "llm_course"), check()
    try:
        W.sync(ws)
        p = ws / "00_core.ipynb"
        nb = nbformat.read(p, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("def set_seed(seed): return 'edited by the student'\nset_seed(1)"))
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ws)}}).execute()
        nbformat.write(nb, p)  # what JupyterLab's save does
        assert nb.cells[-1].outputs[0]["data"]["text/plain"] == "'edited by the student'"
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
        assert _snapshot(ROOT / "nbs", ROOT / "llm_course") == before
        # ./course test's clean check gives the same verdict as before (it passes on a clean checkout, as in CI;
        # in a tree with someone's unexported edits it fails before and after alike)
        clean_after = check()
        assert (clean_after.returncode, clean_after.stdout) == (clean_before.returncode, clean_before.stdout)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
