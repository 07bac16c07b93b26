"""samplewise.checkpoint: the run checkpoint written, read back and restored on its own.

The loop's resume is tested end to end (bit-identical runs) in test_reliability.py and
test_preemption.py; here each public function is checked against planted states.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from samplewise import io
from samplewise.checkpoint import (CHECKPOINT, FORMAT, METRICS_FILE, hook_states, load_hook_states,
                                   read_checkpoint, restore_checkpoint, trim_metrics,
                                   write_checkpoint)
from samplewise.data import DatasetCard
from samplewise.errors import SamplewiseError
from samplewise.models import create_model, save_model

CARD = DatasetCard(name="toy", num_classes=3, shape=(1, 4, 4), mean=(0.5,), std=(0.25,), eps=0.1,
                   alpha=0.025, crop_pad=0, flip=False, classes=("a", "b", "c"))


class Counter:
    """A stateful hook (or objective): a tensor and a number."""

    def __init__(self, start: float = 0.0):
        self.values = torch.full((5,), start)
        self.seen = int(start)

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.values, self.seen = state["values"].clone(), state["seen"]


class Stateless:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        raise AssertionError("a stateless hook gets no state")


class Other(Counter):
    pass


def parts(seed: int, hook_start: float):
    """Model, optimizer, scheduler, objective, hooks, swa; a few SGD steps make their states
    differ from a fresh run's."""
    torch.manual_seed(seed)
    model = create_model("mlp", CARD)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    swa = AveragedModel(model)
    for _ in range(3):
        loss = model(torch.rand(8, 1, 4, 4)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        swa.update_parameters(model)
    return model, opt, sched, Counter(hook_start), [Stateless(), Counter(hook_start + 1)], swa


def flat(obj):
    """Every leaf of a nested state as (path, value), tensors as lists, for equality checks."""
    if isinstance(obj, dict):
        return [(f"{k}.{p}", v) for k in sorted(obj, key=str) for p, v in flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [(f"{i}.{p}", v) for i, o in enumerate(obj) for p, v in flat(o)]
    if isinstance(obj, torch.Tensor):
        return [("", obj.tolist())]
    return [("", obj)]


def test_a_written_checkpoint_restores_every_state_and_the_rng(tmp_path):
    model, opt, sched, objective, hooks, swa = parts(seed=0, hook_start=7.0)
    partial = {"step": 2, "steps": 5, "seen": 16, "loss_sum": torch.tensor(3.5)}
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    path = write_checkpoint(tmp_path, model, opt, sched, objective, hooks, swa, 4, partial=partial)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3).tolist())
    assert path == tmp_path / CHECKPOINT

    saved = read_checkpoint(path)
    assert set(saved) == {"format", "epoch", "model", "optimizer", "scheduler", "objective",
                          "hooks", "rng", "swa", "partial"}
    assert saved["format"] == FORMAT == "samplewise.checkpoint/1"
    assert [h["hook"] for h in saved["hooks"]] == ["Counter"]  # the stateless hook is skipped

    io.write_text(tmp_path / METRICS_FILE,
                  "".join(json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3, 4, 5)))
    fresh = parts(seed=1, hook_start=0.0)
    assert flat(fresh[0].state_dict()) != flat(model.state_dict())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    epoch, metrics, got_partial = restore_checkpoint(tmp_path, *fresh, steps=5)

    assert epoch == 4
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert [json.loads(line)["epoch"] for line in
            (tmp_path / METRICS_FILE).read_text().splitlines()] == [1, 2, 3, 4]
    assert flat(got_partial) == flat(partial)
    for mine, theirs in zip(fresh, (model, opt, sched, objective, hooks, swa)):
        if isinstance(mine, list):
            assert [flat(h.state_dict()) for h in mine] == [flat(h.state_dict()) for h in theirs]
        else:
            assert flat(mine.state_dict()) == flat(theirs.state_dict())
    assert (random.random(), np.random.rand(), torch.rand(3).tolist()) == expected_draws


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    model = create_model("mlp", CARD)
    save_model(tmp_path / "model.pt", model)  # a valid torch file, but a model file
    io.torch_save({"epoch": 1}, tmp_path / "dict.pt")
    io.write_text(tmp_path / "text.pt", "hello\n")
    for name in ("model.pt", "dict.pt"):
        with pytest.raises(SamplewiseError) as e:
            read_checkpoint(tmp_path / name)
        assert str(e.value) == f"{tmp_path / name}: not a samplewise checkpoint"
    with pytest.raises(SamplewiseError) as e:
        read_checkpoint(tmp_path / "text.pt")
    assert "\n" not in str(e.value) and str(tmp_path / "text.pt") in str(e.value)


def test_restore_refuses_a_missing_file_and_another_epoch_length(tmp_path):
    with pytest.raises(SamplewiseError, match="--resume needs an output directory"):
        restore_checkpoint(None, *parts(0, 0.0))
    with pytest.raises(SamplewiseError, match=r"nothing to resume: .*checkpoint.pt does not exist"):
        restore_checkpoint(tmp_path, *parts(0, 0.0))
    write_checkpoint(tmp_path, *parts(0, 1.0), 1, partial={"step": 3, "steps": 5})
    with pytest.raises(SamplewiseError, match="stopped at step 3 of an epoch of 5 steps, but this "
                                              "run has 6 steps per epoch"):
        restore_checkpoint(tmp_path, *parts(0, 0.0), steps=6)


def test_trim_metrics_keeps_the_lines_up_to_the_epoch_and_writes_only_when_asked(tmp_path):
    lines = "".join(json.dumps({"epoch": e, "acc": e / 10}) + "\n" for e in (1, 2, 3))
    io.write_text(tmp_path / METRICS_FILE, lines)
    assert trim_metrics(tmp_path, 2, write=False) == [{"epoch": 1, "acc": 0.1}, {"epoch": 2, "acc": 0.2}]
    assert (tmp_path / METRICS_FILE).read_text() == lines
    trim_metrics(tmp_path, 2)
    assert (tmp_path / METRICS_FILE).read_text() == "".join(lines.splitlines(True)[:2])
    assert trim_metrics(tmp_path / "nowhere", 3, write=False) == []


def test_hook_states_go_to_the_hook_of_their_class_in_order_and_leftovers_are_refused():
    a, b, c = Counter(1.0), Other(2.0), Counter(3.0)
    saved = hook_states([a, Stateless(), b, c])
    assert [(s["hook"], s["state"]["seen"]) for s in saved] == [("Counter", 1), ("Other", 2),
                                                                ("Counter", 3)]
    x, y, z = Other(0.0), Counter(0.0), Counter(0.0)
    load_hook_states([Stateless(), x, y, z], saved, "ck.pt")
    assert (x.seen, y.seen, z.seen) == (2, 1, 3)
    with pytest.raises(SamplewiseError) as e:
        load_hook_states([Counter(0.0), Counter(0.0)], saved, "ck.pt")
    assert str(e.value) == ("ck.pt: the checkpoint holds the state of Other, which this run does "
                            "not use; resume with the same settings")
