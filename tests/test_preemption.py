"""Graceful preemption: SIGTERM/SIGINT during training -> a mid-epoch checkpoint, one line, exit
143/130; ``--resume`` then ends bit-identical to an uninterrupted run (train, score with the
trackers' partial-epoch state, SAAD distillation with its per-sample EMA). A second signal
during the checkpoint write changes nothing.

The signal is sent at a chosen step by a hook (the loop itself has no test branch): the CLI
runs in a subprocess through a small wrapper that adds that hook to ``runs.fit``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samplewise import io, preemption
from samplewise.config import TrainConfig
from samplewise.models import create_model, save_model
from samplewise.runs import run_training
from samplewise.hooks import Hook

from runcheck import TIMING, assert_same_run

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
FAST = ["eval_n=60", "eval_steps=2", "monitor_steps=1", "progress=false", "threads=1"]

#: runs the CLI with a hook that sends itself signals at (epoch, step); optionally sends two
#: more (SIGTERM, SIGINT) halfway through writing checkpoint.pt after a stop was requested
WRAPPER = r"""
import os, signal, sys
from pathlib import Path
import samplewise.io as sio
import samplewise.runs as runs
from samplewise import preemption
from samplewise.hooks import Hook

epoch, step, sig = os.environ["STOP_AT"].split(",")
SIG = getattr(signal, sig)

class SignalAt(Hook):
    def on_batch_end(self, model, x, y, idx, out, e, s):
        if (e, s) == (int(epoch), int(step)):
            os.kill(os.getpid(), SIG)

if os.environ.get("SIGNAL_DURING_WRITE"):
    plain = sio.write_bytes
    def write_bytes(path, data):
        if Path(path).name != "checkpoint.pt" or not preemption.requested():
            return plain(path, data)
        with sio.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                Path(os.environ["SIGNAL_DURING_WRITE"]).write_text(str(preemption.signals_received()))
                fh.write(data[len(data) // 2:])
    sio.write_bytes = write_bytes

fit = runs.fit
runs.fit = lambda *a, hooks=(), **k: fit(*a, hooks=[*hooks, SignalAt()], **k)
from samplewise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _twin(args) -> subprocess.Popen:
    """The uninterrupted run, started in the background beside the one that is stopped."""
    return subprocess.Popen([sys.executable, "-m", "samplewise", "-q", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)


def _run(args, *, stop_at=None, during_write=None) -> subprocess.CompletedProcess:
    env = dict(ENV)
    if stop_at is None:
        cmd = [sys.executable, "-m", "samplewise", "-q", *map(str, args)]
    else:
        cmd = [sys.executable, "-c", WRAPPER, "-q", *map(str, args)]
        env["STOP_AT"] = ",".join(map(str, stop_at))
    if during_write:
        env["SIGNAL_DURING_WRITE"] = str(during_write)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _resume_args(stderr: str) -> list[str]:
    """The command the stop message says to run, as arguments after ``samplewise``."""
    words = shlex.split(stderr.strip().split("; resume with: ", 1)[1])
    assert words[0] == "samplewise"
    return words[1:]


def _resume_matches_twin(cut, twin, a: Path, b: Path) -> None:
    """Run the resume command ``cut``'s stop line gives; the result equals the uninterrupted
    ``twin`` run in ``a``."""
    again = _run(_resume_args(cut.stderr))
    assert again.returncode == 0, again.stderr
    assert twin.wait(timeout=600) == 0
    assert_same_run(a, b)


def _stopped_checkpoint(run: Path, epoch: int, step: int) -> dict:
    state = io.torch_load(run / "checkpoint.pt", "checkpoint")
    assert state["epoch"] == epoch and state["partial"]["step"] == step
    assert not (run / "model.pt").exists() and not (run / "result.json").exists()
    assert [m["epoch"] for m in io.read_jsonl(run / "metrics.jsonl")] == list(range(1, epoch + 1))
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    return state


TRAIN = ["train", "--dataset", "digits", "--model", "cnn-small", "--objective", "pgd-at",
         "--steps", "2", "--epochs", "2", "--train-size", "400", "--batch-size", "64"]


def test_sigterm_mid_epoch_train_checkpoints_then_resume_is_bit_identical(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    twin = _twin([*TRAIN, "--out", a, "--set", *FAST])
    cut = _run([*TRAIN, "--out", b, "--set", *FAST], stop_at=(1, 2, "SIGTERM"))
    assert cut.returncode == 143, cut.stderr
    lines = cut.stderr.strip().splitlines()
    assert len(lines) == 1
    want = (f"samplewise: stopped by SIGTERM at epoch 2, step 3 of 7; checkpoint saved to "
            f"{b}/checkpoint.pt; resume with: samplewise -q {' '.join(TRAIN)} --out {b} --set "
            f"{' '.join(FAST)} --resume")
    assert lines[0] == want
    _stopped_checkpoint(b, epoch=1, step=3)
    _resume_matches_twin(cut, twin, a, b)


def test_sigterm_mid_epoch_score_keeps_the_trackers_partial_epoch(tmp_path):
    """Online AIGN sums and training dynamics are per batch: their partial epoch must survive."""
    args = ["score", "--dataset", "digits", "--model", "cnn-small", "--epochs", "2",
            "--batch-size", "32", "--train-size", "300", "--mode", "online"]
    a, b = tmp_path / "A", tmp_path / "B"
    twin = _twin([*args, "--out", a, "--set", *FAST])
    cut = _run([*args, "--out", b, "--set", *FAST], stop_at=(1, 4, "SIGTERM"))
    assert cut.returncode == 143, cut.stderr
    state = _stopped_checkpoint(b, epoch=1, step=5)
    online = next(h["state"] for h in state["hooks"] if h["hook"] == "OnlineAIGNTracker")
    assert online["partial"]["epoch"] == 1 and int(online["partial"]["count"].sum()) == 5 * 32
    assert _resume_args(cut.stderr)[-1] == "--resume"
    _resume_matches_twin(cut, twin, a, b)
    sa, sb = np.load(a / "scores.npz"), np.load(b / "scores.npz")
    assert sorted(sa.files) == sorted(sb.files)
    for k in sa.files:
        assert np.array_equal(sa[k], sb[k], equal_nan=sa[k].dtype.kind == "f"), k


def test_second_signals_during_the_checkpoint_write_change_nothing(tmp_path):
    """SIGINT stops the run (exit 130); a SIGTERM and a SIGINT that land halfway through the
    checkpoint's write are ignored: the write completes, nothing is left half-written."""
    args = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2",
            "--train-size", "300", "--batch-size", "50"]
    a, b, marker = tmp_path / "A", tmp_path / "B", tmp_path / "signals"
    twin = _twin([*args, "--out", a, "--set", *FAST])
    cut = _run([*args, "--out", b, "--set", *FAST], stop_at=(0, 3, "SIGINT"),
               during_write=marker)
    assert cut.returncode == 130, cut.stderr
    assert marker.read_text() == "3"  # the handler saw all three signals, and the write went on
    assert cut.stderr.startswith("samplewise: stopped by SIGINT at epoch 1, step 4 of 6; ")
    _stopped_checkpoint(b, epoch=0, step=4)
    _resume_matches_twin(cut, twin, a, b)


class _SignalAt(Hook):
    def __init__(self, epoch: int, step: int, signum=signal.SIGTERM):
        self.at, self.signum = (epoch, step), signum

    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        if (epoch, step) == self.at:
            os.kill(os.getpid(), self.signum)


def test_sigterm_mid_epoch_saad_distillation_keeps_the_per_sample_ema(tmp_path):
    from samplewise.data import load_dataset
    torch.manual_seed(1)
    save_model(tmp_path / "teacher.pt", create_model("mlp", load_dataset("digits").card))
    cfg = TrainConfig(dataset="digits", model="mlp", objective="saad-measured",
                      objective_args={"ema": 0.9}, teacher=str(tmp_path / "teacher.pt"),
                      epochs=3, attack_steps=2, train_size=400, eval_n=50, eval_steps=2,
                      monitor_steps=1, progress=False)
    full = run_training(cfg, tmp_path / "full")
    with pytest.raises(preemption.Preempted) as info:
        run_training(cfg, tmp_path / "cut", hooks=[_SignalAt(1, 2)])
    assert info.value.exit_status == 143
    assert str(info.value) == (f"stopped by SIGTERM at epoch 2, step 3 of 4; checkpoint saved "
                               f"to {tmp_path / 'cut' / 'checkpoint.pt'}")
    state = _stopped_checkpoint(tmp_path / "cut", epoch=1, step=3)
    assert state["objective"]["ema_seen"].sum() == 400  # every sample seen in epoch 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = run_training(cfg, tmp_path / "cut", resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    assert {k: v for k, v in full.items() if k not in TIMING} == \
           {k: v for k, v in resumed.items() if k not in TIMING}
    tas = [json.loads((tmp_path / d / "result.json").read_text())["tas_per_epoch"]
           for d in ("full", "cut")]
    assert tas[0] == tas[1]
    ema = [io.torch_load(tmp_path / d / "checkpoint.pt")["objective"] for d in ("full", "cut")]
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])
    hist = [np.load(tmp_path / d / "transfer.npz")["transfer"] for d in ("full", "cut")]
    assert np.array_equal(hist[0], hist[1]) and (hist[0] >= 0).any()


def test_sigterm_with_augmentation_twice_and_on_an_epoch_s_last_step(tmp_path):
    """Fashion-MNIST crops and flips (drawn per epoch from (seed, epoch)); stopped twice, the
    second time on the last step of an epoch (resumed with no batch left in it)."""
    from samplewise.data import load_dataset
    try:
        load_dataset("fashion-mnist", train_size=200, seed=0)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"fashion-mnist not installed: {exc}")
    cfg = TrainConfig(dataset="fashion-mnist", model="cnn-small", objective="pgd-at", epochs=3,
                      attack_steps=2, train_size=200, batch_size=50, eval_n=50, eval_steps=2,
                      monitor_steps=1, progress=False)
    run_training(cfg, tmp_path / "full")
    with pytest.raises(preemption.Preempted, match="at epoch 1, step 2 of 4;"):
        run_training(cfg, tmp_path / "cut", hooks=[_SignalAt(0, 1)])
    with pytest.raises(preemption.Preempted, match="at epoch 2, step 4 of 4;"):
        run_training(cfg, tmp_path / "cut", resume=True, hooks=[_SignalAt(1, 3)])
    _stopped_checkpoint(tmp_path / "cut", epoch=1, step=4)
    run_training(cfg, tmp_path / "cut", resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut")
