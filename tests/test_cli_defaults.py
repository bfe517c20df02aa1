"""`llm-course finetune`'s defaults are the recipe bench/recipe.py measured best (bench/results/recipe.json, its
`verdict`): a default changed without a new measurement, or a measurement whose verdict changed without the default,
fails here. Nothing is timed or trained."""
import contextlib, inspect, io, json
from pathlib import Path

import pytest

from llm_course import cli
from llm_course.classifier import add_peft_lora

RECIPE = Path(__file__).parents[1] / "bench" / "results" / "recipe.json"


@pytest.fixture(scope="module")
def verdict() -> dict:
    return json.loads(RECIPE.read_text(encoding="utf-8"))["verdict"]


def test_the_verdict_is_the_default_budget_over_every_data_set(verdict):
    d = json.loads(RECIPE.read_text(encoding="utf-8"))
    assert verdict["budget"] == "1" and sorted(verdict["datasets"]) == ["bbc", "intents", "tweets"]
    for ds in verdict["datasets"]:   # the recommended recipe was measured on each, at that budget
        assert verdict["budget"] in d["results"][ds][verdict["recommended"]]


def test_finetune_defaults_are_the_measured_recipe(verdict):
    s = verdict["settings"]
    args = cli.build_parser().parse_args(["finetune", "--train", "t.csv", "--out", "m"])
    assert (args.method, args.epochs) == (s["method"], s["epochs"])
    assert {k: cli.FINETUNE_DEFAULT[k] for k in ("method", "rank", "lr", "epochs")} == {
        k: s[k] for k in ("method", "rank", "lr", "epochs")
    }
    assert cli.FINETUNE_DEFAULT["measured"] == f"bench/recipe.py on {verdict['date']}"
    if s["method"] == "lora":   # the rank finetune_csv gets is add_peft_lora's default
        assert inspect.signature(add_peft_lora).parameters["r"].default == s["rank"]


def test_finetune_passes_the_measured_lr(verdict, monkeypatch, tmp_path):
    "--lr left out: the default method trains at the measured rate; another method keeps finetune_csv's own default."
    seen = []
    def fake(*a, **k): seen.append(k); raise KeyboardInterrupt   # stop before any training
    monkeypatch.setattr("llm_course.classifier.finetune_csv", fake)
    train = tmp_path / "train.csv"; train.write_text("text,label\nhello,a\nbye,b\n", encoding="utf-8")
    other = next(m for m in ("head", "lora", "full") if m != verdict["settings"]["method"])
    with contextlib.redirect_stderr(io.StringIO()):
        for method in (verdict["settings"]["method"], other):
            assert (
                cli.main(["finetune", "--train", str(train), "--out", str(tmp_path / "m"), "--method", method]) == 130
            )
    assert [k["lr"] for k in seen] == [verdict["settings"]["lr"], None]


def test_finetune_help_says_where_the_default_comes_from(verdict):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit): cli.main(["finetune", "--help"])
    text = " ".join(out.getvalue().split())
    assert "bench/recipe.py" in text and verdict["date"] in text
