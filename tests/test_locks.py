"""Run-directory locks and study cells shared by several workers.

- A process holding ``DIR/.lock`` (another process: the lock is re-entrant within one) makes
  every writing command refuse ``DIR`` with one line naming the holder, exit 2, and no change
  to the directory; once the holder is SIGKILLed the same command (or ``--resume``) runs.
- Three ``samplewise study`` workers started together on one 12-cell study run every cell
  exactly once (start markers), one of them dying inside its first cell, and their merged
  tables equal a single worker's.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from samplewise import runlock
from samplewise.cli import main
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.models import create_model, save_model

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
FAST = ["eval_n=40", "eval_steps=1", "monitor_steps=0", "progress=false", "threads=1"]

#: holds the locks of the directories in argv until its stdin closes (or it is killed)
HOLDER = r"""
import sys, contextlib
from samplewise import runlock
with contextlib.ExitStack() as stack:
    for d in sys.argv[1:]:
        stack.enter_context(runlock.hold(d))
    print("held", flush=True)
    sys.stdin.read()
"""


def _holder(*dirs) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, dirs)], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _snapshot(d: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _refusal(d: Path, pid: int) -> str:
    return (f"samplewise: error: {d} is in use by another samplewise process (host "
            f"{socket.gethostname()}, pid {pid}); wait for it to finish, or stop it (its lock "
            "is released when it exits)")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "t.pt"
    save_model(path, create_model("mlp", load_dataset("digits").card))
    return path


def _commands(d: Path, teacher: Path) -> dict:
    common = ["--dataset", "digits", "--epochs", "1", "--train-size", "200"]
    return {
        "train": ["train", *common, "--model", "mlp", "--out", d, "--set", *FAST],
        "train --resume": ["train", *common, "--model", "mlp", "--out", d, "--resume",
                           "--set", *FAST],
        "distill": ["distill", *common, "--teacher", teacher, "--student", "mlp", "--out", d,
                    "--set", *FAST],
        "score": ["score", *common, "--model", "mlp", "--out", d, "--set", *FAST],
        "eval --state": ["eval", "--model", teacher, "--attack", "clean", "--n", "20",
                         "--state", d / "eval-state.json"],
        "demo": ["demo", "--quick", "--no-progress", "--out", d, "--resume"],
    }


COMMANDS = ["train", "train --resume", "distill", "score", "eval --state", "demo"]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_held_directory_is_refused_with_one_line_and_left_unchanged(tmp_path, capsys,
                                                                      teacher, name):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("seed: 7\n")  # something a second writer could clobber
    (d / "checkpoint.pt").write_bytes(b"a run in progress")
    holder = _holder(d)
    try:
        before = _snapshot(d)
        args = [str(a) for a in _commands(d, teacher)[name]]
        if name in ("train", "distill", "score"):
            args.append("--overwrite")  # even --overwrite must not touch a held directory
        assert main(["-q", *args]) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [_refusal(d, holder.pid)]
        assert _snapshot(d) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_never_blocks_and_a_new_directory_is_not_left_behind(tmp_path, capsys):
    d = tmp_path / "run"
    holder = _holder(d)
    assert json.loads((d / ".lock").read_text())["pid"] == holder.pid
    args = ["-q", "train", "--dataset", "digits", "--model", "mlp", "--epochs", "1",
            "--train-size", "200", "--out", str(d), "--set", *FAST]
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [_refusal(d, holder.pid)]
    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
    holder.wait()
    assert main(args) == 0
    assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
    assert {p.name for p in d.iterdir()} == {".lock", "config.yaml", "checkpoint.pt",
                                            "metrics.jsonl", "model.pt", "result.json"}
    # a refused input leaves no new directory behind (the lock is taken, then rolled back)
    bad = tmp_path / "bad"
    assert main(["-q", "train", "--dataset", "nope", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_the_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path):
    d = tmp_path / "x"
    with runlock.hold(d):
        with runlock.hold(d):
            assert runlock.held(d)
        assert runlock.held(d)
        probe = subprocess.run([sys.executable, "-c", HOLDER, str(d)], env=ENV, text=True,
                               capture_output=True, input="")
        assert probe.returncode == 1 and "is in use by another samplewise process" in probe.stderr
    assert not runlock.held(d)
    with pytest.raises(SamplewiseError, match="exists and is not a directory"):
        (tmp_path / "f").write_text("")
        runlock.hold(tmp_path / "f").__enter__()


# ----------------------------------------------------------------------------- study workers
#: a study worker that records a start/end marker per cell, spends a little time in each cell
#: (so that the workers overlap), and, with DIE_IN_FIRST_CELL, SIGKILLs itself in its first one
WORKER = r"""
import os, signal, sys, time
from samplewise.studies import grid
log = os.environ["CELL_LOG"]
run_cell = grid.run_cell
def note(text):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{text} {os.getpid()} {time.monotonic()}\n".encode())
    os.close(fd)
def marked(cell, path, ev, **kw):
    note(f"start {cell.id}")
    if os.environ.get("DIE_IN_FIRST_CELL"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(os.environ.get("CELL_DELAY", "0")))
    status = run_cell(cell, path, ev, **kw)
    note(f"end {cell.id}")
    return status
grid.run_cell = marked
from samplewise.cli import main
sys.exit(main(sys.argv[1:]))
"""

STUDY = {"study": "coreset",
         "base": {"dataset": "digits", "model": "mlp", "epochs": 1, "train_size": 300,
                  "monitor_steps": 0, "progress": False, "threads": 1},
         "scoring": {"epochs": 1},
         "selection": {"full_data": False},
         "grid": {"selectors": ["random", "easycore"], "fractions": [0.3, 0.5],
                  "objectives": ["standard"]},
         "seeds": [0, 1, 2], "eval": {"n": 40, "pgd_steps": 1}}


def _worker(config: Path, out: Path, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, "-q", "study", "coreset",
                             "--config", str(config), "--out", str(out)],
                            env={**ENV, "CELL_LOG": str(log), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _table(out: Path) -> list[dict]:
    with open(out / "results.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_three_workers_share_a_study_each_cell_once(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    shared, single, log = tmp_path / "shared", tmp_path / "single", tmp_path / "cells.log"
    one = _worker(config, single, tmp_path / "single.log")
    workers = [_worker(config, shared, log, CELL_DELAY="0.3") for _ in range(2)]
    deadline = time.monotonic() + 300
    while not (log.exists() and "start" in log.read_text()):  # the others are at work
        assert time.monotonic() < deadline and workers[0].poll() is None
        time.sleep(0.05)
    dying = _worker(config, shared, log, DIE_IN_FIRST_CELL="1")
    for w in [*workers, one]:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    dying.wait(timeout=600)

    events = [line.split() for line in log.read_text().splitlines()]
    starts, ends = {}, {}
    for kind, cell, pid, t in events:
        (starts if kind == "start" else ends).setdefault(cell, []).append((int(pid), float(t)))
    cells = sorted(starts)
    assert len(cells) == 12 and sorted(ends) == cells
    assert all(len(ends[c]) == 1 for c in cells)  # every cell finished exactly once
    died = [c for c in cells if len(starts[c]) == 2]
    if dying.returncode == -signal.SIGKILL:  # its cell was claimed again, after it died
        assert len(died) == 1 and starts[died[0]][0][0] == dying.pid
        assert ends[died[0]][0][0] != dying.pid
    else:  # it started after the two others had claimed every cell
        assert dying.returncode == 0 and died == []
    assert all(len(starts[c]) == 1 for c in cells if c not in died)
    assert {pid for c in cells for pid, _ in ends[c]} <= {w.pid for w in workers}
    record = json.loads((shared / "results.json").read_text())
    assert record["cells_finished"] == 12 and record["missing"] == []
    assert _table(shared) == _table(single) and len(_table(single)) == 12


def test_cells_i_of_n_still_partitions_and_a_dead_workers_cell_is_rerun(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    out, log = tmp_path / "s", tmp_path / "cells.log"
    dead = _worker(config, out, log, DIE_IN_FIRST_CELL="1")
    assert dead.wait(timeout=600) == -signal.SIGKILL
    first = log.read_text().split()[1]
    shares = [subprocess.Popen([sys.executable, "-c", WORKER, "-q", "study", "coreset",
                                "--config", str(config), "--out", str(out), "--cells", f"{i}/2"],
                               env={**ENV, "CELL_LOG": str(log)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for s in shares:
        assert s.wait(timeout=600) == 0, s.stderr.read()
    ends = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("end")]
    assert sorted(ends) == sorted(set(ends)) and len(ends) == 12 and first in ends
