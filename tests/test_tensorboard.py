"""``--tensorboard``: the event file's scalars read back equal ``metrics.jsonl``; a SAAD
distillation also writes the epoch's weights as a histogram; without the package the flag is one
error line (exit 2) and nothing is written."""

from __future__ import annotations

import json
import sys

import pytest

from samplewise.cli import main


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _accumulator(run):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed "
                        "(pip install 'samplewise[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


_FAST = ["--dataset", "digits", "--epochs", "2", "--batch-size", "128", "--set", "eval_n=32",
         "eval_steps=1", "monitor_steps=1", "progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed "
                        "(pip install 'samplewise[tensorboard]')")
    root = tmp_path_factory.mktemp("tb")
    teacher, student = root / "teacher", root / "student"
    assert main(["-q", "train", "--model", "mlp", "--steps", "1", "--tensorboard",
                 "--out", str(teacher), *_FAST]) == 0
    assert main(["-q", "distill", "--teacher", str(teacher), "--student", "mlp",
                 "--method", "saad", "--steps", "1", "--out", str(student), *_FAST,
                 "tensorboard=true"]) == 0
    return teacher, student


@pytest.mark.parametrize("which", [0, 1])
def test_scalars_read_back_equal_metrics_jsonl(runs, which):
    run = runs[which]
    acc = _accumulator(run)
    lines = _lines(run)
    keys = {k for line in lines for k in line if k != "epoch"}
    assert {"loss", "train_acc", "lr", "seconds"} <= keys
    if which == 1:
        assert "tas" in keys
    assert set(acc.Tags()["scalars"]) == keys
    for key in keys:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [line["epoch"] for line in lines if key in line]
        for e, line in zip(events, [line for line in lines if key in line]):
            assert e.value == pytest.approx(line[key], rel=1e-6, abs=1e-7)


def test_saad_distillation_writes_a_weights_histogram_per_epoch(runs):
    teacher, student = runs
    assert "saad/weights" not in _accumulator(teacher).Tags()["histograms"]
    hist = _accumulator(student).Histograms("saad/weights")
    assert [h.step for h in hist] == [1, 2]
    n_train = json.loads((student / "result.json").read_text())["n_train"]
    for h in hist:  # every training sample's weight of that epoch, once
        assert h.histogram_value.num == n_train
        assert 0 <= h.histogram_value.min < h.histogram_value.max and h.histogram_value.sum > 0


def test_without_the_package_the_flag_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    out = tmp_path / "run"
    assert main(["-q", "train", "--model", "mlp", "--tensorboard", "--out", str(out),
                 *_FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samplewise: error:")
    assert "pip install 'samplewise[tensorboard]'" in err[0]
    assert not out.exists()
