"""`./course gpu-check` as a dry run on the CPU: the same steps at the ci profile, and its summary."""
import json, subprocess, sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402


def test_lesson_order_puts_training_first():
    order = gpu_check.lessons(ROOT / "nbs")
    assert order[:len(gpu_check.TRAINING_FIRST)] == gpu_check.TRAINING_FIRST
    assert "00" in order and "11a" in order and not any(n.startswith("9") for n in order)
    assert len(order) == len(set(order))


def test_dry_run_writes_a_summary(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--lessons", "00",
                        "--out", str(tmp_path), "--budget", "400"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["profile"], s["dry_run"], s["passed"], s["failed"]) == ("ci", True, 1, [])
    assert s["lessons"][0]["lesson"] == "00" and s["lessons"][0]["status"] == "ok"
    assert (tmp_path / "00.ipynb").is_file()                                  # the executed notebook, with outputs
    assert any(c.get("outputs") for c in json.loads((tmp_path / "00.ipynb").read_text())["cells"])
    assert s["train_step"]["status"] == "ok" and "results" in s["train_step"]


def test_budget_too_small_skips_and_says_so(tmp_path):
    assert gpu_check.main(["--dry-run", "--lessons", "00", "01", "--out", str(tmp_path), "--budget", "5"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in s["lessons"]] == ["skipped (budget)"] * 2 and s["passed"] == 0


def test_without_cuda_it_refuses_with_the_fix(tmp_path, capsys):
    if torch.cuda.is_available(): return
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
