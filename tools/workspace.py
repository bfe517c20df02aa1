"""The student workspace: the lessons and the released exercises, outside the source tree.

`./course lab` calls `python tools/workspace.py`, which makes (first run) or updates (later runs) the workspace
and prints its path on the last line of stdout. The workspace is `workspace/` in the clone (git-ignored), or the
folder named by `LLM_COURSE_WORKSPACE`. What was copied is tracked by hash in `.llm_course_workspace.json`:
- a notebook the student has not changed (same cell types and sources as copied) is replaced by its new version;
- a notebook the student changed keeps the student's version, and the new one goes beside it (`NAME.new.ipynb`);
- lessons never export to the package: the `#| default_exp` directive and the `nbdev_export()` cell are removed.
Also installs tools/jupyterlab/overrides.json (widget state saved, no news pop-up) into the venv's lab settings.
"""
import argparse, hashlib, json, os, re, shutil, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ".llm_course_workspace.json"
START = "index.ipynb"


def default_workspace() -> Path:
    "The workspace folder: $LLM_COURSE_WORKSPACE, else workspace/ in the clone."
    return Path(os.environ.get("LLM_COURSE_WORKSPACE") or ROOT / "workspace").expanduser().resolve()


def lesson_paths(nbs: Path) -> list[Path]:
    "The lesson notebooks of `nbs` (00_core ... 12_multimodal; the 90+ reference notebooks are for authors)."
    return [p for p in sorted(nbs.glob("*.ipynb")) if re.match(r"^(\d\d)[a-z]?_", p.name) and int(p.name[:2]) < 90]


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def student_lesson(nb: dict) -> dict:
    "A copy of lesson `nb` that cannot write the package: no `#| default_exp` line and no `nbdev_export()` cell."
    nb = json.loads(json.dumps(nb)); cells = []
    for c in nb["cells"]:
        s = _src(c)
        if c["cell_type"] == "code" and re.search(r"\bnbdev_export\s*\(", s): continue
        if c["cell_type"] == "code" and re.search(r"^#\|\s*default_exp\b", s, re.M):
            s = re.sub(r"^#\|\s*default_exp\b.*\n?", "", s, flags=re.M)
            if not s.strip(): continue
            c["source"] = s
        cells.append(c)
    nb["cells"] = cells
    return nb


def lesson_rows(nbs: Path) -> dict[str, str]:
    "What each lesson teaches, read from the lesson table of nbs/index.ipynb: {'00_core': 'devices, seeds, ...'}."
    cells = json.loads((nbs / "index.ipynb").read_text(encoding="utf-8"))["cells"]
    text = "\n".join(_src(c) for c in cells if c["cell_type"] == "markdown")
    return {m[0]: m[2].strip() for m in re.findall(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|", text, flags=re.M)}


def start_page(nbs: Path, exercises: list[str], ext: str = ".ipynb", note: str = "") -> dict:
    "The start page: nbs/index.ipynb, then a linked list of the lessons and their exercises (links end in `ext`)."
    nb = json.loads((nbs / "index.ipynb").read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if not _src(c).lstrip().startswith("## For course developers")]
    rows, lines = lesson_rows(nbs), ["## Read the lessons", "", "| lesson | teaches | exercises |", "|---|---|---|"]
    for p in lesson_paths(nbs):
        n = p.name.split("_")[0]
        exs = [e for e in exercises if e.split("_")[0] == f"ex{n}"]
        links = ", ".join(f"[{e}](exercises/{e}{ext})" for e in exs) or "-"
        lines.append(f"| [{p.stem}]({p.stem}{ext}) | {rows.get(p.stem, '')} | {links} |")
    cells = [{"cell_type": "markdown", "id": "ws-lessons", "metadata": {}, "source": "\n".join(lines)}]
    if note: cells.insert(0, {"cell_type": "markdown", "id": "ws-note", "metadata": {}, "source": note})
    nb["cells"] = nb["cells"][:1] + cells + nb["cells"][1:]
    return nb


NOTE = """**Your workspace** is `{ws}`: your own copies of the lessons and of the exercises (without solutions).
Edit and run them freely: nothing here changes the course's source. When the course is updated, `./course lab`
brings in the new lessons; a notebook you changed is never overwritten (the new version is put beside it as
`NAME.new.ipynb`). Start with [00_core](00_core.ipynb)."""


def _dump(nb: dict) -> str: return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def content_hash(path: Path) -> str:
    "What counts as the student's work: cell types and sources for a notebook (outputs don't), all bytes otherwise."
    if path.suffix == ".ipynb":
        try: cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (ValueError, KeyError): return "unreadable"
        data = json.dumps([(c["cell_type"], _src(c)) for c in cells]).encode()
    else: data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _place(ws: Path, rel: str, text: bytes, manifest: dict, msgs: list[str]):
    "Write one course file into the workspace unless the student changed the copy there."
    dest = ws / rel
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / dest.name).write_bytes(text); new = content_hash(Path(tmp) / dest.name)
    old, cur = manifest.get(rel), content_hash(dest) if dest.exists() else None
    if cur is None:
        dest.parent.mkdir(parents=True, exist_ok=True); dest.write_bytes(text); manifest[rel] = new
        msgs.append(f"added     {rel}" if old is None else f"restored  {rel} (it had been deleted)")
    elif cur == new: manifest[rel] = new
    elif cur == old:
        dest.write_bytes(text); manifest[rel] = new; msgs.append(f"updated   {rel}")
    elif new != old and manifest.get(rel + "|offered") != new:
        beside = dest.with_name(dest.stem + ".new" + dest.suffix); beside.write_bytes(text)
        manifest[rel + "|offered"] = new
        msgs.append(f"kept      {rel}: you changed it; the course's new version is beside it: {beside.relative_to(ws)}")


def released_exercises(nbs: Path) -> dict[str, bytes]:
    "The student versions of nbs/exercises (`llm-course classroom release`): {'exercises/ex02_....ipynb': bytes}."
    sys.path.insert(0, str(ROOT))
    from llm_course.exercise_notebooks import release
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "exercises"
        if (nbs / "exercises").is_dir(): release(nbs / "exercises", out)
        for p in sorted(out.rglob("*")) if out.exists() else []:
            if p.is_file(): files[str(Path("exercises") / p.relative_to(out))] = p.read_bytes()
    return files


def student_lessons(nbs: Path) -> dict[str, bytes]:
    "Every lesson of `nbs` as the student gets it (`student_lesson`): {'00_core.ipynb': bytes}."
    return {p.name: _dump(student_lesson(json.loads(p.read_text(encoding="utf-8")))).encode()
            for p in lesson_paths(nbs)}


def course_files(nbs: Path, ws: Path) -> dict[str, bytes]:
    "Every file the workspace gets from the course: the start page, the student lessons, the released exercises."
    files = student_lessons(nbs)
    files.update(released_exercises(nbs))
    exs = sorted(Path(r).stem for r in files if r.startswith("exercises/") and r.endswith(".ipynb"))
    files[START] = _dump(start_page(nbs, exs, note=NOTE.format(ws=ws))).encode()
    return files


def sync(ws: Path | None = None, nbs: Path = ROOT / "nbs") -> list[str]:
    "Make or update the workspace `ws`; returns one message per file added, updated or kept."
    ws = Path(ws or default_workspace()).resolve()
    for inside in (nbs.resolve(), (ROOT / "llm_course").resolve()):
        if ws == inside or ws.is_relative_to(inside):
            raise ValueError(f"the workspace {ws} is inside {inside}: choose a folder outside the source "
                             "(set LLM_COURSE_WORKSPACE)")
    ws.mkdir(parents=True, exist_ok=True)
    mpath = ws / MANIFEST
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    msgs: list[str] = []
    for rel, text in course_files(nbs, ws).items(): _place(ws, rel, text, manifest, msgs)
    mpath.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return msgs


def install_lab_settings(prefix: Path = Path(sys.prefix)) -> Path:
    "Copy tools/jupyterlab/overrides.json into the environment's JupyterLab settings (the defaults every user gets)."
    dest = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    src = ROOT / "tools" / "jupyterlab" / "overrides.json"
    if not dest.exists() or dest.read_bytes() != src.read_bytes():
        dest.parent.mkdir(parents=True, exist_ok=True); shutil.copy(src, dest)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path,
                    help="the folder (default: $LLM_COURSE_WORKSPACE or workspace/ in the clone)")
    ap.add_argument("--settings-only", action="store_true", help="only install the JupyterLab settings")
    args = ap.parse_args(argv)
    ws = Path(args.workspace or default_workspace()).resolve()
    install_lab_settings()
    if args.settings_only: return 0
    fresh = not (ws / MANIFEST).exists()
    for m in sync(ws): print(f"[workspace] {m}", file=sys.stderr)
    print(f"[workspace] {'made' if fresh else 'up to date:'} {ws}" + (" (first use)" if fresh else ""), file=sys.stderr)
    print(ws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
