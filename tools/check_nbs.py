"""Fail when a notebook is not clean (nbdev_clean) or llm_course/ differs from nbdev_export of nbs/.

Works on a copy in a temporary folder, so the working tree is never changed. Also checks that
README.md is what tools/make_readme.py makes of nbs/index.ipynb.
"""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def _files(d: Path, pat: str):
    return {
        p.relative_to(d): p
        for p in d.rglob(pat)
        if ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts
    }

def main() -> int:
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(ROOT / "settings.ini", tmp)
        shutil.copytree(ROOT / "nbs", tmp / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        shutil.copytree(ROOT / "llm_course", tmp / "llm_course", ignore=shutil.ignore_patterns("__pycache__"))
        for cmd in ("nbdev_clean", "nbdev_export"):
            r = subprocess.run([str(BIN / cmd)], cwd=tmp, capture_output=True, text=True)
            if r.returncode:
                print(f"{cmd} failed:\n{r.stdout}\n{r.stderr}"); return 1
        for sub, pat, fix in (("nbs", "*.ipynb", "run `nbdev_clean`"), ("llm_course", "*.py", "run `nbdev_export`")):
            a, b = _files(ROOT / sub, pat), _files(tmp / sub, pat)
            for rel in sorted(set(a) | set(b)):
                if rel not in a:
                    problems.append(f"{sub}/{rel} is missing: {fix} and commit it")
                elif rel not in b:
                    problems.append(f"{sub}/{rel} is not made by any notebook: delete it or export it from nbs/")
                elif not filecmp.cmp(a[rel], b[rel], shallow=False):
                    problems.append(f"{sub}/{rel} differs: {fix} and commit it")
    sys.path.insert(0, str(ROOT / "tools"))
    from make_readme import render
    if (ROOT / "README.md").read_text(encoding="utf-8") != render(ROOT / "nbs" / "index.ipynb"):
        problems.append("README.md differs from nbs/index.ipynb: run `python tools/make_readme.py`")
    for p in problems: print("  -", p)
    if problems: print(f"{len(problems)} problem(s): the notebooks are the source."); return 1
    print("notebooks clean, llm_course/ and README.md in sync")
    return 0

if __name__ == "__main__":
    sys.exit(main())
