"""examples/own_loop.py runs (its main(), in-process for speed), and the AIGN its hand-written loop computes equals the
`samplewise score` command's on the same model checkpoint."""

import runpy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import samplewise as sw
from samplewise.cli import main
from samplewise.hardness import ScoreTable

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_loop.py"
FAST = ["--set", "eval_n=32", "monitor_steps=0", "eval_steps=1", "progress=false"]


def test_example_runs_and_writes_a_score_file(tmp_path, capsys):
    runpy.run_path(str(EXAMPLE), run_name="own_loop")["main"](["--epochs", "2", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("AIGN of 1347 samples over 2 epochs")
    assert "EasyCore keeps 674 samples" in lines[1] and lines[3].startswith("SAAD student")
    table = ScoreTable.load(tmp_path / "scores.npz")
    assert len(table) == 1347 and table.aign_per_epoch.shape == (1347, 2)
    inside, outside = (float(v) for v in lines[1].split("AIGN ")[1].replace(" inside,", "")
                       .replace(" outside", "").split())
    assert inside < outside  # the easiest half has the lower AIGN


def test_example_aign_equals_the_score_command_on_the_same_checkpoint(tmp_path):
    run = tmp_path / "score"
    assert main(["-q", "score", "--dataset", "digits", "--model", "mlp", "--epochs", "2",
                 "--out", str(run), *FAST]) == 0
    table = ScoreTable.load(run / "scores.npz")
    example = runpy.run_path(str(EXAMPLE), run_name="own_loop")
    train_set, _ = example["digits"]()
    loader = DataLoader(sw.IndexedDataset(train_set), batch_size=97, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    meter = sw.AIGNMeter(len(train_set))
    example["track_aign"](meter, sw.load_model(run), loader)  # the final epoch's weights
    assert np.array_equal(table.index, np.arange(len(train_set)))
    np.testing.assert_allclose(meter.scores(), table.aign_per_epoch[:, -1], rtol=1e-5, atol=1e-6)
