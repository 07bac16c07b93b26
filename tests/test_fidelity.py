"""Fidelity to the papers and their official code (issue #12, "Baselines as published"):
fp32 configs, ccs by AUM, SAAD's student SWA from epoch 95 of 200, the official code's clean BN
pass at beta = 0, and the Tiny-ImageNet crop padding."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from samplewise.config import TrainConfig, load_config, read_yaml
from samplewise.data import load_dataset
from samplewise.data import datasets as ds
from samplewise.errors import SamplewiseError
from samplewise.models import create_model
from samplewise.objectives import StepContext, build_objective
from samplewise.passes import count_passes
from samplewise.studies.coreset_study import load_coreset_config
from samplewise.hooks import Hook
from samplewise.train import fit

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


# ---------------------------------------------------------------------------- configs
def _keys(node, prefix=""):
    """Every (dotted key, value) of a nested mapping."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _keys(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _keys(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node


def test_fp32_is_the_default():
    assert TrainConfig().amp is None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_shipped_config_sets_amp(path):
    """Paper configs run in fp32 as the official code does; bf16 is an explicit opt-in only."""
    found = [k for k, _ in _keys(read_yaml(path)) if k.split(".")[-1] == "amp"]
    assert not found, f"{path.name} sets {found}"


def _coreset_configs():
    return [p for p in CONFIGS if read_yaml(p).get("study") == "coreset"]


@pytest.mark.parametrize("path", _coreset_configs(), ids=lambda p: p.name)
def test_coreset_configs_with_ccs_say_which_variant(path):
    cfg = load_coreset_config(path)
    if "ccs" not in cfg.grid["selector"]:
        pytest.skip("no ccs in this grid")
    score = cfg.sections["selection"].options.get("ccs", {}).get("score")
    assert score in ("aum", "aign"), f"{path.name}: set selection.options.ccs.score"


def test_ccs_rerun_config_matches_the_fmnist_study():
    """The AUM rerun of the §2 ccs rows changes only the grid and the ccs score."""
    root = Path(__file__).parent.parent / "configs"
    main = load_coreset_config(root / "study-coreset-fmnist.yaml")
    rerun = load_coreset_config(root / "study-coreset-fmnist-ccs-aum.yaml")
    assert rerun.base == main.base and rerun.eval == main.eval and rerun.seeds == main.seeds
    assert rerun.sections["scoring"] == main.sections["scoring"]
    assert rerun.grid["selector"] == ("ccs",)
    assert rerun.grid["fraction"] == main.grid["fraction"]
    assert rerun.grid["objective"] == main.grid["objective"]
    assert main.sections["selection"].options["ccs"]["score"] == "aign"   # the variant rows
    assert rerun.sections["selection"].options["ccs"]["score"] == "aum"   # as published
    assert rerun.sections["selection"].class_balanced == main.sections["selection"].class_balanced


def _saad_swa_epochs():
    """(config, SWA start fraction, epochs) of every shipped SAAD recipe."""
    out = []
    for p in CONFIGS:
        raw = read_yaml(p)
        if raw.get("objective") == "saad":
            cfg = load_config(path=p)
            out.append((p.name, cfg.swa_start, cfg.epochs))
        for method, settings in (raw.get("method_settings") or {}).items():
            if method == "saad":
                out.append((p.name, settings["swa_start"], raw["base"]["epochs"]))
    return out


def test_saad_configs_average_from_epoch_95_of_200():
    found = _saad_swa_epochs()
    assert len(found) >= 5
    for name, start, epochs in found:
        assert epochs == 200 and math.floor(start * epochs + 1e-9) == 95, name


# ---------------------------------------------------------------------------- SWA start
_DIGITS = []


def _digits():
    if not _DIGITS:
        _DIGITS.append(load_dataset("digits"))
    return _DIGITS[0]


class _Snapshots(Hook):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, model, epoch):
        self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("swa_start,epochs,first", [
    (0.0, 4, 1), (0.5, 4, 2), (0.75, 4, 3),
    pytest.param(0.29, 100, 29, marks=pytest.mark.slow)])  # 0.29 * 100 < 29 in floats
def test_swa_averages_from_epoch_floor_start_times_epochs(swa_start, epochs, first):
    """Weights after epochs s..E (1-based, s = floor(swa_start * E), at least 1) are averaged:
    SAAD's official `epoch >= 95` over a 1-based loop of 200."""
    data = _digits()
    torch.manual_seed(0)
    model = create_model("mlp", data.card)
    snaps = _Snapshots()
    cfg = TrainConfig(dataset="digits", model="mlp", epochs=epochs, batch_size=1024, lr=0.1,
                      schedule="constant", augment=False, eval_n=32, monitor_steps=0,
                      swa_start=swa_start, progress=False)
    fit(model, data, build_objective("standard", eps=0.1, alpha=0.025, steps=0), cfg,
        hooks=[snaps])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    kept = snaps.weights[first - 1:]
    for name, value in model.state_dict().items():
        if value.is_floating_point() and name.startswith("net."):
            want = torch.stack([w[name] for w in kept]).mean(0)
            torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)
            # and not the average that starts one epoch later
            later = torch.stack([w[name] for w in snaps.weights[first:]]).mean(0)
            assert not torch.allclose(value, later, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- SAAD at beta = 0
def _bn_student(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Tanh(),
                         nn.Linear(32, 10))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y, torch.arange(16)


def _ctx():
    return StepContext(epoch=4, epochs=10, step=0, steps_per_epoch=1,
                       generator=torch.Generator().manual_seed(3))


def _step(x, y, idx, **opts):
    S, T = _bn_student(0), _bn_student(7).eval()
    S.train()
    before = copy.deepcopy(S)
    obj = build_objective("saad", teacher=T, eps=0.1, alpha=0.025, steps=3, beta=0.0, **opts)
    out = obj(S, x, y, idx, _ctx())
    out["loss"].backward()
    return before, S, out


def test_clean_bn_pass_changes_neither_loss_nor_gradient(batch):
    x, y, idx = batch
    _, s0, out0 = _step(x, y, idx)
    _, s1, out1 = _step(x, y, idx, clean_bn_pass=True)
    assert torch.equal(out0["loss"], out1["loss"])
    assert torch.equal(out0["x_adv"], out1["x_adv"])
    for p0, p1 in zip(s0.parameters(), s1.parameters()):
        assert torch.equal(p0.grad, p1.grad)


def test_running_stats_follow_the_forwards_each_mode_runs(batch):
    """Default: BN statistics move by the two train-mode forwards the loss needs (x', x - delta).
    clean_bn_pass: a third on x, in the official code's order (x', x - delta, x)."""
    x, y, idx = batch
    for opt, inputs in ((False, ("adv", "minus")), (True, ("adv", "minus", "clean"))):
        before, after, out = _step(x, y, idx, clean_bn_pass=opt)
        x_adv = out["x_adv"]
        named = {"adv": x_adv, "minus": x - (x_adv - x), "clean": x}
        ref = before.train()
        with torch.no_grad():
            for k in inputs:
                ref(named[k])
        bn, bn_ref = after[2], ref[2]
        torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
        torch.testing.assert_close(bn.running_var, bn_ref.running_var)
        assert int(bn.num_batches_tracked) == len(inputs)


def test_clean_bn_pass_costs_one_student_forward_and_no_backward(batch):
    x, y, idx = batch

    def passes(**opts):
        S, T = _bn_student(0), _bn_student(7).eval()
        obj = build_objective("saad", teacher=T, eps=0.1, alpha=0.025, steps=3, **opts)
        c = count_passes(obj, S, T, x, y, idx, _ctx())
        return c["student_forward"], c["student_backward"], c["teacher_forward"]

    off, on = passes(), passes(clean_bn_pass=True)
    assert on == (off[0] + 1, off[1], off[2])
    assert passes(beta=0.5, clean_bn_pass=True) == passes(beta=0.5)   # beta > 0 runs it anyway


def test_clean_bn_pass_must_be_a_bool():
    with pytest.raises(SamplewiseError, match="clean_bn_pass"):
        build_objective("saad", teacher=_bn_student(7), eps=0.1, alpha=0.025, steps=1,
                        clean_bn_pass="yes")


# ---------------------------------------------------------------------------- Tiny-ImageNet
def test_tiny_imagenet_card_pads_the_crop_by_8(monkeypatch, tmp_path):
    """SAAD's official Tiny-ImageNet pipeline: RandomCrop(64, padding=8) + flip."""
    x = np.zeros((4, 3, 64, 64), np.uint8)
    y = np.array([0, 1, 0, 1])
    monkeypatch.setattr(ds, "read_tiny_imagenet", lambda root, download: (x, y, x, y, ["a", "b"]))
    card = ds.load_tiny_imagenet_raw(tmp_path, False).card
    assert card.crop_pad == 8 and card.flip and card.shape == (3, 64, 64)
    assert card.eps == pytest.approx(8 / 255) and card.alpha == pytest.approx(2 / 255)
