"""Two-process CPU runs with the gloo backend, launched by torchrun as a user would."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from samplewise import distributed, io
from samplewise.data import load_dataset
from samplewise.hardness import ScoreTable
from samplewise.hardness.scoring import scores_from_model
from samplewise.models import load_model

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(*args, timeout=600):
    p = subprocess.run([*TORCHRUN, "-m", "samplewise", *args], capture_output=True, text=True,
                       env=ENV, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def two_process_scoring(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "score"
    _torchrun("score", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--out", str(out),
              "--set", "eval_n=64", "monitor_steps=1", "eval_steps=1", "progress=false")
    return out


def test_score_file_covers_every_index_once(two_process_scoring):
    table = ScoreTable.load(two_process_scoring / "scores.npz")
    bundle = load_dataset("digits")
    assert len(table) == len(bundle.train)
    assert np.array_equal(np.sort(table.index), np.sort(bundle.train.index.numpy()))
    assert len(np.unique(table.index)) == len(table.index)
    for name in ("aign", "el2n", "grand", "forgetting", "aum", "loss"):
        assert np.isfinite(table.get(name)).all(), name
    # the dynamics counters merged across ranks: every sample was presented in both epochs
    assert table.meta["tracked_epochs"] == [0, 1]


def test_distributed_pass_equals_single_process_on_the_same_checkpoint(two_process_scoring):
    """The last AIGN column was computed by two ranks on the final weights and gathered by
    index; one process on the same weights must give the same numbers."""
    table = ScoreTable.load(two_process_scoring / "scores.npz")
    model = load_model(two_process_scoring)
    single = scores_from_model(model, load_dataset("digits"))
    order = np.argsort(table.index)
    np.testing.assert_allclose(table.aign_per_epoch[order, -1], single.get("aign"), rtol=1e-5,
                               atol=1e-6)


def test_only_rank_zero_writes(two_process_scoring):
    names = sorted(p.name for p in two_process_scoring.iterdir())
    assert names == sorted([".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt",
                            "result.json", "scores.npz"])  # .lock: rank 0's run-directory lock
    assert "world_size: 2" in (two_process_scoring / "config.yaml").read_text()


def test_gather_by_index_single_process():
    values = torch.tensor([[1.0], [2.0], [3.0]])
    table, seen = distributed.gather_by_index(values, torch.tensor([4, 0, 2]), 5)
    assert table[:, 0].tolist() == [2.0, 0.0, 3.0, 0.0, 1.0]
    assert seen.tolist() == [True, False, True, False, True]
    assert distributed.shard(10) == slice(0, 10)


def test_a_command_leaves_the_process_group_it_joined(tmp_path):
    """A gloo group still alive at exit can abort a finished rank (SIGABRT after its output was
    written); every command leaves the group before the interpreter exits, also on an error."""
    import socket

    import torch.distributed as dist

    from samplewise.cli import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    assert dist.is_initialized()
    assert main(["eval", "--run", str(tmp_path / "absent")]) == 2
    assert not dist.is_initialized()
