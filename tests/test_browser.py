"""A student's session in a real browser: `./course lab` in headless Chromium (Playwright), then the course site.

Needs Playwright's Python package and Debian's chromium (`./course setup` installs both when it runs as root);
never `playwright install`. Screenshots go to .cache/browser/ (the path is printed).
"""
import http.server, json, os, signal, socket, subprocess, threading, time, urllib.request
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LLM_COURSE_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ART = ROOT / ".cache" / "browser"
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
HOW = ("browser tests skipped: they need Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`, "
       "which ./course setup does when run as root) and Playwright's Python package (`.venv/bin/pip install "
       "playwright`); never `playwright install`")
pytestmark = pytest.mark.skipif(sync_playwright is None or not CHROMIUM.exists(), reason=HOW)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    ART.mkdir(parents=True, exist_ok=True); print(f"\nscreenshots in {ART}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "`./course lab` on a free port with a fresh workspace; yields (base url, token, workspace)."
    tmp = tmp_path_factory.mktemp("lab"); ws, port, token = tmp / "workspace", _free_port(), "browser-test"
    env = {**os.environ, "LLM_COURSE_WORKSPACE": str(ws), "LLM_COURSE_PROFILE": "ci",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "user-settings")}
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen([str(ROOT / "course"), "lab", "--port", str(port), f"--ServerApp.token={token}",
                             "--LabApp.expose_app_in_browser=True"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2); break
            except OSError:
                assert proc.poll() is None, (tmp / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        else: pytest.fail("JupyterLab did not start in 120 s:\n" + (tmp / "lab.log").read_text()[-3000:])
        yield base, token, ws
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(5)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        log.close()


APP = "window.jupyterapp"
NB = f"{APP}.shell.currentWidget"


def new_page(browser):
    "A page with room for a notebook and timeouts for a loaded machine (JupyterLab loads in seconds when quiet)."
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(90_000); page.set_default_navigation_timeout(120_000)
    return page


def open_notebook(page, lab, path: str):
    "Open `path` of the workspace in JupyterLab and wait for its kernel."
    base, token, _ = lab
    page.goto(f"{base}/lab/tree/{path}?token={token}")
    page.wait_for_function(f"() => {APP} && {NB} && {NB}.context && {NB}.context.path === {json.dumps(path)}",
                           timeout=60_000)
    page.evaluate(f"async () => {{ await {NB}.context.ready; await {NB}.sessionContext.ready; }}")


def run_all(page, timeout_s: int = 120) -> list[dict]:
    "Run every cell of the open notebook; returns its error outputs (from the notebook model)."
    page.evaluate(f"async () => {{ await {APP}.commands.execute('notebook:run-all-cells'); }}")
    page.wait_for_function(f"() => {NB}.sessionContext.session.kernel.status === 'idle' && "
                           "![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))",
                           timeout=timeout_s * 1000)
    return page.evaluate(f"() => {NB}.context.model.toJSON().cells.flatMap(c => c.outputs || [])"
                         ".filter(o => o.output_type === 'error')")


def scroll_to(page, source: str) -> int:
    "Scroll the open notebook to the cell whose source is `source` (JupyterLab renders only the cells near the view)."
    return page.evaluate(f"""async (src) => {{ const nb = {NB}.content, cells = nb.model.cells;
        for (let i = 0; i < cells.length; i++) if (cells.get(i).sharedModel.getSource().trim() === src) {{
            nb.activeCellIndex = i; await nb.scrollToItem(i, 'center'); return i; }}
        return -1; }}""", source)


def save_and_close(page):
    page.evaluate(f"async () => {{ const w = {NB}; await {APP}.commands.execute('docmanager:save'); "
                  "await w.sessionContext.shutdown(); w.dispose(); }")


def test_workspace_opens_on_the_start_page(browser, lab):
    base, token, ws = lab
    page = new_page(browser)
    page.goto(f"{base}/lab?token={token}".replace("/lab?", "/?"))
    page.wait_for_function(f"() => {APP} && {NB} && {NB}.context && {NB}.context.path === 'index.ipynb'",
                           timeout=60_000)
    assert page.locator(".jp-Launcher").count() == 0  # a start page, not the launcher
    page.locator(".jp-RenderedMarkdown h2", has_text="Read the lessons").first.wait_for(timeout=60_000)
    page.screenshot(path=ART / "start_page.png")
    hrefs = page.evaluate("() => [...document.querySelectorAll('.jp-RenderedMarkdown a')]"
                          ".map(a => a.getAttribute('href'))")
    assert any("/files/exercises/ex02_tokenization.ipynb" in h for h in hrefs), hrefs  # the lesson list links
    page.locator(".jp-RenderedMarkdown a[href*='/files/00_core.ipynb']").first.click()  # and opens lessons in the lab
    page.wait_for_function(f"() => {NB}.context && {NB}.context.path === '00_core.ipynb'", timeout=60_000)
    page.screenshot(path=ART / "start_page.png")
    assert not page.locator(".jp-Notification-Toast, .Toastify__toast").count()  # no news pop-up
    assert (ws / "exercises").is_dir() and (ws / "00_core.ipynb").exists()
    page.close()


def test_router_lesson_runs_types_saves_and_reopens(browser, lab):
    "Lesson 11: run all (no error), type into the router and see its reply change, save, reopen: the saved view."
    _, _, ws = lab
    page = new_page(browser)
    open_notebook(page, lab, "11_applications.ipynb")
    errs = run_all(page, timeout_s=420)
    page.screenshot(path=ART / "lesson11_ran.png")
    assert errs == [], errs
    router = (page.locator(".widget-vbox").filter(has=page.locator(".widget-text input"))
              .filter(has_text="confidence").first)
    router.scroll_into_view_if_needed()
    reply = router.locator(".widget-html")
    page.wait_for_function("(el) => el.innerText.includes('confidence')", arg=reply.element_handle(), timeout=60_000)
    before = reply.inner_text()
    message = "please close my account, I am moving abroad"
    router.locator("input").fill(message); router.locator("input").press("Enter")
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[reply.element_handle(), before], timeout=60_000)
    after = reply.inner_text()
    assert after != before and "confidence" in after
    page.screenshot(path=ART / "lesson11_router.png")
    save_and_close(page)
    saved_nb = json.loads((ws / "11_applications.ipynb").read_text())
    state = saved_nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value") for m in state.values()]
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for c in saved_nb["cells"]
             for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views and all(v in state for v in views)  # closed widgets' views dropped on save (jupyter_server_config)
    intent = after.split()[0]
    assert message in values and f"<b>{intent}</b>" in " ".join(map(str, values))  # the widget state is in the file
    page.close()
    page = new_page(browser)
    open_notebook(page, lab, "11_applications.ipynb")
    # the reopened lesson (a new kernel that has run nothing) shows the saved view: the typed message and its reply
    shown = ("([m, r]) => [...document.querySelectorAll('.widget-text input')].some(e => e.value === m) && "
             "[...document.querySelectorAll('.widget-html')].some(e => e.innerText === r)")
    for _ in range(12):  # the first scrolls may come before the notebook's layout is ready: scroll until it shows
        assert scroll_to(page, "router_widget(router)") >= 0
        if page.evaluate(shown, [message, after]): break
        page.wait_for_timeout(5000)
    page.wait_for_function(shown, arg=[message, after], timeout=10_000)
    page.screenshot(path=ART / "lesson11_reopened.png")
    assert "model not found" not in page.inner_text(".jp-NotebookPanel")
    page.close()


def test_released_exercise_gives_feedback_on_a_wrong_solution(browser, lab):
    page = new_page(browser)
    open_notebook(page, lab, "exercises/ex02_tokenization.ipynb")
    wrong = "def merge_pair(ids, pair, new_id):\n    return list(ids)  # forgets to merge\n"
    n = page.evaluate(f"""(src) => {{ let n = 0; const cells = {NB}.content.model.cells;
        for (let i = 0; i < cells.length; i++) {{ const c = cells.get(i);
          if (c.sharedModel.getSource().includes('def merge_pair')) {{ c.sharedModel.setSource(src); n++; }} }}
        return n; }}""", wrong)
    assert n == 1
    run_all(page, timeout_s=240)
    outputs = page.evaluate(f"() => {NB}.context.model.toJSON().cells.filter(c => (Array.isArray(c.source) ? "
                            "c.source.join('') : c.source).includes('check(merge_pair')).flatMap(c => c.outputs || [])")
    text = json.dumps(outputs)
    page.screenshot(path=ART / "exercise_feedback.png")
    assert "merge_pair" in text and "expected" in text, text[:2000]
    page.close()


def test_site_pages_show_typeset_math_and_figures(browser, tmp_path):
    out, lessons = tmp_path / "site", ["01_data", "02_tokenization", "03_transformer"]
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tools" / "site.py"), "--profile", "ci",
                        "--out", str(out), "--only", *lessons], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler,
                                                                       directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page, figures = new_page(browser), 0
    try:
        for name in lessons:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/{name}.html")
            page.wait_for_function("() => window.MathJax && MathJax.Hub", timeout=60_000)
            page.evaluate("() => new Promise(done => MathJax.Hub.Queue(() => done(true)))")  # after all typesetting
            assert page.locator(".MathJax, .MathJax_Display").count() > 0, f"{name}: no typeset math"
            assert page.locator(".MathJax_Error, .merror").count() == 0, name
            imgs = page.evaluate("() => [...document.images]"
                                 ".map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
            assert all(ok for _, ok in imgs), (name, [s for s, ok in imgs if not ok])
            figures += len(imgs)
            page.screenshot(path=ART / f"site_{name}.png", full_page=False)
        assert figures > 0
    finally:
        page.close(); server.shutdown()
