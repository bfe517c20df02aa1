"""Make README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).

Markdown cells are copied; code cells become ```python blocks; their saved text outputs (if any)
follow as plain blocks. Cells whose first line is `#| hide` are left out.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"

def render(nb_path: Path) -> str:
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip("\n")
        if not src: continue
        if cell["cell_type"] == "markdown": parts.append(src); continue
        if cell["cell_type"] != "code": continue
        lines = src.splitlines()
        if lines and lines[0].replace(" ", "").startswith("#|hide"): continue
        code = "\n".join(l for l in lines if not l.replace(" ", "").startswith("#|"))
        parts.append(f"```python\n{code}\n```")
        out = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        if out.strip(): parts.append(f"```\n{out.rstrip()}\n```")
    return HEADER + "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    (ROOT / "README.md").write_text(render(ROOT / "nbs" / "index.ipynb"), encoding="utf-8")
    print("wrote README.md", file=sys.stderr)
