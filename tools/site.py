"""`./course site`: the course as a static web site, every lesson and released exercise executed, readable offline.

    python tools/site.py [--profile cpu] [--out _site] [--workers N] [--only 00_core ...]

Tool: nbconvert's HTML exporter with its `lab` template (tools/site_template/course_site), because it ships with
JupyterLab (no new dependency), renders every output exactly as JupyterLab does, and is maintained by the Jupyter
project itself. MathJax 2.7 comes from the `jupyter-server-mathjax` package and is copied into the site: no page
loads anything from the network. Notebooks are executed with nbclient (what nbconvert --execute uses), skipping what
`nbdev_test` skips (`#| eval: false` and the `tst_flags` of settings.ini) and an exercise's graded `check` cells (a
released exercise has no solution to check). Executed notebooks are cached in .cache/site/ by a hash of the notebook,
the package source (llm_course/*.py) and the profile, so a rebuild after one lesson's edit re-executes that lesson.
The build writes `build.json` (what was executed and how long it took) and exits 1 if a cell failed.
"""
import argparse, configparser, hashlib, html, json, os, re, shutil, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workspace import ROOT, _dump, released_exercises, start_page, student_lessons  # noqa: E402

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

VERSION = "1"  # bump to invalidate every cached execution
WIDGET = "application/vnd.jupyter.widget-view+json"


def _src(c) -> str: return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def skip_flags(root: Path = ROOT) -> set[str]:
    "The cell flags nbdev_test skips by default (settings.ini `tst_flags`), plus `eval: false`."
    cfg = configparser.ConfigParser(); cfg.read(root / "settings.ini")
    return set(cfg.get("DEFAULT", "tst_flags", fallback="notest").split())


def skipped(cell, flags: set[str]) -> bool:
    "True for a cell the site leaves unexecuted: nbdev's skip flags, `#| eval: false`, an nbgrader graded cell."
    if cell["cell_type"] != "code": return False
    if cell.get("metadata", {}).get("nbgrader", {}).get("grade"): return True
    for d in re.findall(r"^#\|\s*(.+)$", _src(cell), flags=re.M):
        d = d.strip()
        if re.fullmatch(r"eval:\s*false", d, flags=re.I) or d in flags: return True
    return False


class SiteClient(NotebookClient):
    "nbclient's executor that leaves the cells `skipped` marks alone (no outputs, no execution count)."
    flags: set[str] = set()

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if skipped(cell, self.flags): return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)


def package_hash(pkg: Path) -> str:
    "A hash of the package source: a change to any llm_course/*.py invalidates every cached execution."
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        if "__pycache__" not in p.parts: h.update(str(p.relative_to(pkg)).encode()); h.update(p.read_bytes())
    return h.hexdigest()[:16]


def execute(rel: str, text: bytes, run_dir: Path, profile: str, flags: set[str], threads: int, timeout: int):
    "Execute one notebook in `run_dir` (a copy of the workspace layout) at `profile`; returns (notebook, seconds)."
    nb = nbformat.reads(text.decode("utf-8"), as_version=4)
    env = {"LLM_COURSE_PROFILE": profile, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    client = SiteClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=False,
                        resources={"metadata": {"path": str((run_dir / rel).parent)}})
    client.flags = flags
    t0 = time.perf_counter()
    if not any(c.cell_type == "code" and not skipped(c, flags) for c in nb.cells): return nb, 0.0  # nothing to run
    env = {**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"}, **env}  # inline plots, not Agg
    client.execute(env=env)
    return nb, time.perf_counter() - t0


NOT_DONE = ("NotImplementedError", "ExerciseFailed")  # what a released exercise raises before the student's work


def answers(nb) -> set[str]:
    "The names a student defines in a released exercise: its nbgrader solution cells' ids without `_solution`."
    return {c.get("metadata", {}).get("nbgrader", {}).get("grade_id", "").removesuffix("_solution") for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def expected(rel: str, out, names: set[str] = frozenset()) -> bool:
    "True for what a released exercise raises before the student's work: a stub, a check, an unwritten answer's name."
    if not rel.startswith("exercises/"): return False
    m = re.fullmatch(r"name '(\w+)' is not defined", str(out.get("evalue", "")))
    return out.get("ename") in NOT_DONE or (out.get("ename") == "NameError" and bool(m) and m[1] in names)


def errors(nb, rel: str = "") -> list[str]:
    "Every unexpected error output of an executed notebook, as 'cell N: ExcType: message'."
    names = answers(nb)
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error" and not expected(rel, o, names)]


def for_reader(nb, rel: str = ""):
    "What a reader sees: no `#| hide` cells, no `#|` directive lines, a sentence where a widget or a stub's error was."
    cells, names = [], answers(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            src = _src(c)
            if re.search(r"^#\|\s*hide\s*$", src, flags=re.M): continue
            c.source = re.sub(r"^#\|.*\n?", "", src, flags=re.M).strip("\n")
            for o in c.get("outputs", []):
                if WIDGET in o.get("data", {}):
                    o["data"] = {"text/html": '<p class="site-widget">An interactive widget: run this lesson in '
                                              "JupyterLab (<code>./course lab</code>) to use it.</p>"}
            c["outputs"] = [o if not expected(rel, o, names) else nbformat.v4.new_output(
                "display_data", data={"text/html": f'<p class="site-widget">Runs once you have written the exercise '
                                                   f'({o["ename"]} until then).</p>'}) for o in c.get("outputs", [])]
        cells.append(c)
    nb.cells = cells; nb.metadata.pop("widgets", None)
    return nb


def nav(pages: list[tuple[str, str]], rel: str, bottom: bool = False) -> str:
    "The navigation bar of page `rel`: home, previous, next, and every lesson."
    up = "../" * rel.count("/")
    names = [r for r, _ in pages]; i = names.index(rel)
    link = lambda r, t: f'<a href="{up}{html.escape(r)}">{html.escape(t)}</a>'
    parts = [f'<span class="title">{link("index.html", "llm_course")}</span>']
    if i > 0: parts.append("&larr; previous: " + link(*pages[i - 1]))
    if i + 1 < len(pages): parts.append("next: " + link(*pages[i + 1]) + " &rarr;")
    if not bottom: parts += ["<span>| lessons:</span>"] + [link(r, t.split("_")[0]) for r, t in pages
                                                             if r != "index.html" and not r.startswith("exercises/")]
    return f'<nav class="site{" bottom" if bottom else ""}">' + " ".join(parts) + "</nav>"


def render(nb, rel: str, pages: list[tuple[str, str]], out: Path) -> Path:
    "Write page `rel` (e.g. 'exercises/ex02_tokenization.html') and its figures under `out`; returns the page path."
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor
    page = out / rel; page.parent.mkdir(parents=True, exist_ok=True)
    up = "../" * rel.count("/"); stem = Path(rel).stem
    ex = HTMLExporter(template_name="course_site", extra_template_basedirs=[str(ROOT / "tools" / "site_template")],
                      mathjax_url=f"{up}assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe")
    ex.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    resources = {"output_files_dir": f"{stem}_files",
                 "site_nav": nav(pages, rel), "site_nav_bottom": nav(pages, rel, bottom=True),
                 "metadata": {"name": stem}}
    body, res = ex.from_notebook_node(for_reader(nb, rel), resources=resources)
    for name, data in res.get("outputs", {}).items():
        (page.parent / name).parent.mkdir(parents=True, exist_ok=True); (page.parent / name).write_bytes(data)
    body = re.sub(r'href="([^":#]+)\.ipynb(#[^"]*)?"', lambda m: f'href="{m[1]}.html{m[2] or ""}"', body)
    page.write_text(body, encoding="utf-8")
    return page


def sources(nbs: Path) -> dict[str, bytes]:
    "Every notebook of the site by its path in the site: the start page, the lessons, the released exercises."
    files = student_lessons(nbs)
    files.update({r: b for r, b in released_exercises(nbs).items() if r.endswith(".ipynb")})
    exs = sorted(Path(r).stem for r in files if r.startswith("exercises/"))
    return {"index.ipynb": _dump(start_page(nbs, exs, ext=".html")).encode(), **files}


def title(text: bytes, rel: str) -> str:
    "A page's title in the navigation: the lesson's file stem (the index: 'Home')."
    return "Home" if rel == "index.ipynb" else Path(rel).stem


def build(out: Path, profile: str = "cpu", nbs: Path = ROOT / "nbs", pkg: Path = ROOT / "llm_course",
          cache: Path = ROOT / ".cache" / "site", workers: int = 1, only: list[str] | None = None,
          timeout: int = 1800) -> dict:
    "Build the site into `out`; returns the build report (also written to out/build.json)."
    t0, flags, phash = time.perf_counter(), skip_flags(), package_hash(pkg)
    srcs = sources(nbs)
    if only: srcs = {r: b for r, b in srcs.items() if Path(r).stem in only or r == "index.ipynb"}
    pages = [(str(Path(r).with_suffix(".html")), title(b, r)) for r, b in srcs.items()]
    cache.mkdir(parents=True, exist_ok=True); report = {"profile": profile, "notebooks": {}}
    with tempfile.TemporaryDirectory() as run_dir:
        run_dir = Path(run_dir)
        for r, b in srcs.items(): (run_dir / r).parent.mkdir(parents=True, exist_ok=True); (run_dir / r).write_bytes(b)
        threads = 1 if workers > 1 else int(os.environ.get("OMP_NUM_THREADS", 2))

        def one(item):
            r, b = item
            key = hashlib.sha256(b + phash.encode() + profile.encode() + VERSION.encode()).hexdigest()[:20]
            hit = cache / f"{r.replace('/', '__')[:-6]}-{key}.ipynb"
            if hit.exists(): return r, nbformat.read(hit, as_version=4), {"cached": True, "seconds": 0.0, "key": key}
            nb, secs = execute(r, b, run_dir, profile, flags, threads, timeout)
            if not errors(nb, r): nbformat.write(nb, hit)
            print(f"[site] executed {r} in {secs:.0f} s", file=sys.stderr, flush=True)
            return r, nb, {"cached": False, "seconds": round(secs, 1), "key": key}

        with ThreadPoolExecutor(max(1, workers)) as pool: done = list(pool.map(one, srcs.items()))
    if out.exists(): shutil.rmtree(out)
    mj = Path(__import__("jupyter_server_mathjax").__file__).parent / "static"
    shutil.copytree(mj, out / "assets" / "mathjax")
    for r, nb, info in done:
        info["errors"] = errors(nb, r)
        render(nb, str(Path(r).with_suffix(".html")), pages, out); report["notebooks"][r] = info
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "build.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"], help="the run profile (default cpu)")
    ap.add_argument("--out", type=Path, default=ROOT / "_site", help="the site folder (default _site/)")
    ap.add_argument("--workers", type=int, default=None, help="notebooks executed at once (default: 2 at ci, else 1)")
    ap.add_argument("--only", nargs="*", help="build only these lessons/exercises (file stems), plus the home page")
    ap.add_argument("--nbs", type=Path, default=ROOT / "nbs", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "site", help="the cache of executed notebooks")
    a = ap.parse_args(argv)
    workers = a.workers or (2 if a.profile == "ci" else 1)
    rep = build(a.out.resolve(), a.profile, a.nbs.resolve(), cache=a.cache.resolve(), workers=workers, only=a.only)
    nbs = rep["notebooks"]; bad = {r: i["errors"] for r, i in nbs.items() if i["errors"]}
    ran = sum(not i["cached"] for i in nbs.values())
    print(f"[site] {len(nbs)} pages in {a.out}/ ({ran} executed, {len(nbs) - ran} from the cache) "
          f"at profile {a.profile} in {rep['seconds']:.0f} s; open {a.out / 'index.html'}", file=sys.stderr)
    for r, errs in bad.items(): print(f"[site] ERROR in {r}: " + "; ".join(errs), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
