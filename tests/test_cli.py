"""The command line: real jobs on the bundled digits, and one clear line for every user mistake."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from samplewise.cli import main

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "samplewise", *args], capture_output=True,
                          text=True, cwd=cwd, env=ENV, timeout=600)


def test_train_then_eval_end_to_end(tmp_path):
    out = tmp_path / "run"
    p = run("train", "--dataset", "digits", "--model", "mlp", "--objective", "pgd-at",
            "--epochs", "2", "--steps", "2", "--out", str(out), "--set", "eval_n=100", "progress=false")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert {"clean_acc", "robust_acc"} <= set(result)
    p = run("eval", "--model", str(out), "--attack", "pgd", "--steps", "3", "--n", "50")
    assert p.returncode == 0, p.stderr
    ev = json.loads(p.stdout)
    assert ev["n"] == 50 and ev["steps"] == 3 and ev["attack"] == "pgd" and ev["eps"] == pytest.approx(0.2)


def test_list_shows_every_registry():
    p = run("list")
    assert p.returncode == 0
    for word in ("datasets:", "digits", "models:", "cnn-small", "attacks:", "pgd", "objectives:",
                 "trades"):
        assert word in p.stdout


@pytest.mark.parametrize("args, fragment", [
    (["train", "--dataset", "nope", "--out", "X"], "unknown dataset 'nope'; choose from:"),
    (["train", "--model", "nope", "--out", "X"], "unknown model 'nope'; choose from:"),
    (["train", "--objective", "nope", "--out", "X"], "unknown objective 'nope'; choose from:"),
    (["train", "--epochs", "0", "--out", "X"], "epochs must be > 0"),
    (["train", "--eps", "-1", "--out", "X"], "eps must be >= 0"),
    (["train", "--epochs", "x", "--out", "X"], "invalid int value"),
    (["train", "--set", "colour=red", "--out", "X"], "unknown config key 'colour'"),
    (["train", "--config", "missing.yaml", "--out", "X"], "config file not found"),
    (["train", "--subset", "missing.npy", "--out", "X"], "not found"),
    (["eval", "--model", "missing-dir"], "not found"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes_are_one_line_and_status_2(tmp_path, capsys, args, fragment):
    code = main([a if a != "X" else str(tmp_path / "out") for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("samplewise: error:"), err
    assert fragment in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_subprocess_error_has_no_traceback(tmp_path):
    p = run("train", "--dataset", "cifar-11", "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0


def test_finished_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--model", "mlp", "--epochs", "1", "--out", str(out), "--set", "eval_n=50",
            "eval_steps=1", "monitor_steps=1", "progress=false"]
    assert main(args) == 0
    before = (out / "model.pt").read_bytes()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == before


def test_help_and_version_do_not_load_torch():
    """The parser is built, and ``import samplewise`` done, without importing torch (a 2-3 s
    import); every public name still resolves on first use."""
    code = ("import sys, samplewise, samplewise.cli as c; c.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "missing = [n for n in samplewise.__all__ if getattr(samplewise, n, None) is None]; "
            "assert not missing, missing; assert 'torch' in sys.modules; "
            "assert set(samplewise.__all__) <= set(dir(samplewise))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_closed_output_pipe_stops_quietly():
    """``samplewise list | head -0``: the reader is gone before the first write; the command
    stops with 141 (128 + SIGPIPE) and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "samplewise", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
