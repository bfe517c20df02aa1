"""Build a notebook from a percent-format draft (a writing aid; the .ipynb is the source).

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown; each line of the
markdown cell starts with `# ` or is `#`). Usage: python tools/py2nb.py draft.py nbs/XX.ipynb
"""
import re, sys, nbformat

def convert(src: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    chunks = re.split(r"^# %%(.*)$", src, flags=re.M)
    for i in range(1, len(chunks), 2):
        kind, body = chunks[i].strip(), chunks[i + 1].strip("\n")
        if kind == "[markdown]":
            lines = [l[2:] if l.startswith("# ") else ("" if l.strip() == "#" else l) for l in body.splitlines()]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n".join(lines).strip()))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body.rstrip()))
    return nb

if __name__ == "__main__":
    nb = convert(open(sys.argv[1]).read())
    nbformat.write(nb, sys.argv[2])
    print(f"wrote {sys.argv[2]}: {len(nb.cells)} cells")
