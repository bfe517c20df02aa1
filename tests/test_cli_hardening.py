"""`llm-course finetune / predict / serve` against the failures a user meets: every one ends in one line that names the
file and the fix and a non-zero exit, never a traceback; Ctrl-C during finetune leaves nothing that looks finished;
and no command path reaches for the network (sockets blocked)."""
import contextlib, csv, io, shutil
from pathlib import Path

import pytest

from llm_course import cli


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    "A small BERT encoder folder with MiniLM's tokenizer: a local --base-model that trains in seconds."
    from transformers import BertConfig, BertModel
    from llm_course.assets import load_minilm_tokenizer
    d = tmp_path_factory.mktemp("tiny_bert")
    tok = load_minilm_tokenizer()
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["text", "label"]); w.writerows(rows)
    return path


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def one_line_error(status, err, *names):
    assert status != 0
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in names: assert str(n) in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    train = write_csv(d / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 8)
    status, out, err = run(["finetune", "--train", train, "--out", d / "model", "--base-model", tiny_bert,
                            "--method", "head", "--max-steps", "2", "--batch-size", "4", "--quiet"])
    assert status == 0, err
    return d / "model"


def test_every_command_path_without_network(trained, tiny_bert, tmp_path, no_network):
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 4)
    status, _, err = run(
        [
            "finetune",
            "--train",
            train,
            "--valid",
            train,
            "--out",
            tmp_path / "m2",
            "--base-model",
            tiny_bert,
            "--method",
            "lora",
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    assert status == 0 and (tmp_path / "m2" / "head.json").is_file(), err
    texts = write_csv(
        tmp_path / "in.csv", [("a good film", "pos"), ("x" * 200_000, "neg")]
    )  # a cell over csv's 131,072
    status, out, err = run(["predict", trained, "--input", texts, "--output", tmp_path / "out.csv", "--quiet"])
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert [r["label"] in ("pos", "neg") for r in rows] == [True, True]
    assert err == "" or "Loading" not in err                                  # --quiet is quiet
    for argv in (["lessons"], ["exercises"]):
        assert run(argv)[0] == 0


def test_predict_checks_the_input_before_the_model(tmp_path):
    status, _, err = run(
        ["predict", tmp_path / "no_model", "--input", tmp_path / "missing.csv", "--output", tmp_path / "o.csv"]
    )
    one_line_error(status, err, tmp_path / "missing.csv")


@pytest.mark.parametrize(
    "damage", ["no head.json", "bad head.json", "no backbone", "truncated weights", "missing head.pt"]
)
def test_damaged_model_folder_is_one_line(trained, tmp_path, damage):
    model = Path(shutil.copytree(trained, tmp_path / "model"))
    texts = write_csv(tmp_path / "in.csv", [("fine", "pos")])
    if damage == "no head.json": (model / "head.json").unlink(); named = model
    if damage == "bad head.json": (model / "head.json").write_text("{not json"); named = model / "head.json"
    if damage == "no backbone": shutil.rmtree(model / "backbone"); named = model / "backbone"
    if damage == "missing head.pt": (model / "head.pt").unlink(); named = model / "head.pt"
    if damage == "truncated weights":
        st = next((model / "backbone").glob("*.safetensors")); st.write_bytes(st.read_bytes()[:-1000]); named = st
    for argv in (["predict", model, "--input", texts, "--output", tmp_path / "o.csv"], ["serve", model]):
        status, _, err = run(argv)
        one_line_error(status, err, named)
        assert "finetune" in err                                               # the fix


def test_finetune_interrupted_saves_nothing(tiny_bert, tmp_path, monkeypatch):
    import llm_course.classifier as classifier
    from llm_course.testing import InterruptAt
    real_fit = classifier.fit
    monkeypatch.setattr(classifier, "fit", lambda *a, **k: real_fit(*a, **{**k, "callbacks": [InterruptAt(1)]}))
    train = write_csv(tmp_path / "train.csv", [("good film", "pos"), ("bad film", "neg")] * 8)
    status, _, err = run(["finetune", "--train", train, "--out", tmp_path / "model", "--base-model", tiny_bert,
                          "--method", "head", "--max-steps", "5", "--batch-size", "4", "--quiet"])
    assert status == 130 and "nothing was saved" in err, err
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["train.csv"]               # no half-written folder left either


def test_finetune_refuses_a_foreign_out_folder(tiny_bert, tmp_path):
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "notes.txt").write_text("keep me")
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg")] * 4)
    status, _, err = run(["finetune", "--train", train, "--out", tmp_path / "mine", "--base-model", tiny_bert,
                          "--method", "head", "--max-steps", "1"])
    one_line_error(status, err, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_run_keeps_what_a_cell_ending_in_a_semicolon_printed(tmp_path):
    """execnb drops all the printed output of a cell whose code ends in `;`: `llm-course run --save` lost a print
    issued before `plt.subplots` in a cell ending with `ax.legend();` (lesson 05a). Jupyter hides only the value."""
    import json, subprocess, sys
    sources = ["import matplotlib.pyplot as plt",
               "print('before the plot')\nfig, ax = plt.subplots()\nax.plot([1, 2]);",
               "print('no plot');",
               "1 + 1;"]
    cells = [dict(cell_type="code", execution_count=None, id=f"c{i}", metadata={}, outputs=[], source=s)
             for i, s in enumerate(sources)]
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(name="python3", display_name="python3", language="python")),
              nbformat=4, nbformat_minor=5)
    (tmp_path / "tiny.ipynb").write_text(json.dumps(nb))
    # a process of its own: the run makes an IPython shell the current one, which changes how later tests display
    cli_main = "import sys; from llm_course.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.run([sys.executable, "-c", cli_main, "run", str(tmp_path / "tiny.ipynb"), "--save",
                        str(tmp_path / "out.ipynb")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    outs = [c["outputs"] for c in json.loads((tmp_path / "out.ipynb").read_text())["cells"]]
    printed = lambda o: "".join("".join(x["text"]) for x in o if x["output_type"] == "stream")
    assert printed(outs[1]) == "before the plot\n" and "display_data" in [x["output_type"] for x in outs[1]], outs[1]
    assert printed(outs[2]) == "no plot\n", outs[2]
    assert not [x for o in outs for x in o if x["output_type"] == "execute_result"]   # `;` still hides the values
