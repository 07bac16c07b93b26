"""Distillation runs end to end: TAS in every metrics line, per-sample transfer history,
a frozen teacher, and the held-out transfer measurement."""

import json

import numpy as np
import pytest
import torch

from samplewise import io
from samplewise.cli import main
from samplewise.config import TrainConfig
from samplewise.data import load_dataset
from samplewise.models import load_model
from samplewise.runs import run_training
from samplewise.transfer import transfer_rate

QUICK = ["eval_n=64", "eval_steps=2", "monitor_steps=1", "progress=false"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t"
    run_training(TrainConfig(dataset="digits", model="cnn-small", objective="pgd-at", epochs=3,
                             attack_steps=3, batch_size=64, eval_n=64, eval_steps=2,
                             monitor_steps=1, progress=False), out)
    return out


@pytest.mark.parametrize("method", ["ard", "saad"])
def test_distill_command_logs_tas_and_keeps_the_teacher(tmp_path, teacher_dir, method, capsys):
    before = {k: v.clone() for k, v in load_model(teacher_dir).state_dict().items()}
    out = tmp_path / method
    code = main(["distill", "--teacher", str(teacher_dir), "--student", "mlp", "--method", method,
                 "--epochs", "2", "--steps", "2", "--out", str(out), "--set", *QUICK])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["seconds"] > 0 for line in lines)
    result = json.loads((out / "result.json").read_text())
    assert result["tas_per_epoch"] == [l["tas"] for l in lines]
    hist = io.np_load(out / "transfer.npz")
    bundle = load_dataset("digits")
    assert hist["transfer"].shape == (len(bundle.train), 2)
    assert np.array_equal(hist["index"], np.sort(bundle.train.index.numpy()))
    assert set(np.unique(hist["transfer"])) <= {0, 1}
    # every epoch's TAS is the mean of that epoch's per-sample flags (recomputed from the file)
    for epoch, line in enumerate(lines):
        assert hist["transfer"][:, epoch].mean() == pytest.approx(line["tas"], abs=1e-6), epoch
    after = load_model(teacher_dir).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "weight_decay: 0.0002" in (out / "config.yaml").read_text()


def test_transfer_rate_definitions(teacher_dir):
    teacher = load_model(teacher_dir)
    bundle = load_dataset("digits")
    self_tas = transfer_rate(teacher, teacher, bundle.test, eps=0.2, steps=5, n=128, per_sample=True)
    # a model's own adversarial examples transfer to itself exactly when they fool it
    assert self_tas["tas"] == pytest.approx(1 - self_tas["teacher_acc_on_student_adv"])
    assert self_tas["tas_given_student_fooled"] == pytest.approx(1.0)
    flags = self_tas["per_sample"]
    assert flags["transfer"] == flags["student_fooled"]
    none = transfer_rate(teacher, teacher, bundle.test, eps=0.0, alpha=0.01, steps=1, n=128)
    assert none["tas"] == pytest.approx(1 - none["teacher_clean_acc"])


def test_distill_needs_a_teacher_that_exists(tmp_path, capsys):
    code = main(["distill", "--teacher", str(tmp_path / "none"), "--method", "saad",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "samplewise: error:" in err
    assert not (tmp_path / "o").exists()


def test_analyze_transfer_command(tmp_path, teacher_dir, capsys):
    out = tmp_path / "tas.json"
    code = main(["analyze", "transfer", "--teacher", str(teacher_dir), "--student",
                 str(teacher_dir), "--n", "64", "--steps", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["n"] == 64 and printed["dataset"] == "digits" and printed["eps"] == 0.2
    assert printed["tas_given_student_fooled"] == pytest.approx(1.0)  # a model against itself
    assert len(saved["per_sample"]["transfer"]) == 64
