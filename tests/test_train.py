"""The one training loop: parity with a hand-written loop, resume bit for bit, faults."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from samplewise import io
from samplewise.config import TrainConfig
from samplewise.data import InMemoryLoader, load_dataset
from samplewise.errors import SamplewiseError
from samplewise.models import create_model
from samplewise.objectives import OBJECTIVES, build_objective
from samplewise.runs import run_training
from samplewise.hooks import Hook
from samplewise.train import NonFiniteLoss, fit, lr_lambda


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(**kw):
    base = dict(dataset="digits", model="mlp", epochs=2, batch_size=64, lr=0.05, schedule="constant",
                augment=False, eval_n=64, monitor_steps=2, eval_steps=2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_standard_equals_hand_written_loop(digits):
    torch.manual_seed(0)
    model = create_model("mlp", digits.card)
    ref = copy.deepcopy(model)
    cfg = _cfg(weight_decay=5e-4, momentum=0.9)
    fit(model, digits, build_objective("standard", eps=0.1, alpha=0.025, steps=0), cfg)

    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = InMemoryLoader(digits.train, batch_size=64, shuffle=True, augment=False, seed=0)
    for epoch in range(2):
        ref.train()
        loader.set_epoch(epoch)
        for x, y, _ in loader:
            loss = F.cross_entropy(ref(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_schedules():
    cfg = _cfg(epochs=4, schedule="multistep", milestones=(0.5, 0.75))
    f = lr_lambda(cfg, 100)
    assert [f(0), f(49), f(50), f(75), f(99)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.01),
                                                 pytest.approx(0.01)]
    cos = lr_lambda(_cfg(schedule="cosine"), 100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    one = lr_lambda(_cfg(schedule="onecycle"), 100)
    assert one(40) == pytest.approx(1.0) and one(0) == 0.0 and one(100) == pytest.approx(0.0)
    warm = lr_lambda(_cfg(epochs=10, schedule="constant", warmup_epochs=1.0), 100)
    assert warm(0) == pytest.approx(0.1) and warm(9) == 1.0 and warm(50) == 1.0


class _Recorder(Hook):
    def __init__(self):
        self.seen = []

    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        self.seen.append(idx.clone())


def test_hooks_receive_dataset_indices(digits):
    torch.manual_seed(0)
    rec = _Recorder()
    subset = digits.train.index[::3].numpy()
    fit(create_model("mlp", digits.card), digits, build_objective("standard", eps=0.1, alpha=0.025,
        steps=0), _cfg(epochs=1), hooks=[rec], subset=subset)
    got = torch.cat(rec.seen).sort().values
    assert torch.equal(got, torch.as_tensor(subset).sort().values)


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names()
                                  if not getattr(OBJECTIVES.get(n), "needs_teacher", False)])
def test_every_objective_trains_and_reports(digits, name):
    torch.manual_seed(0)
    model = create_model("mlp", digits.card)
    obj = build_objective(name, eps=0.1, alpha=0.025, steps=2)
    res = fit(model, digits, obj, _cfg(epochs=1))
    rec = res.metrics[-1]
    for key in ("loss", "train_acc", "test_clean_acc", "test_pgd_acc", "seconds", "lr"):
        assert key in rec
    assert torch.isfinite(torch.tensor(rec["loss"]))


def test_pgd_at_is_more_robust_than_standard(digits):
    """Planted answer: adversarial training buys PGD accuracy at the training ε."""
    accs = {}
    for name in ("standard", "pgd-at"):
        torch.manual_seed(0)
        model = create_model("mlp", digits.card)
        obj = build_objective(name, eps=0.2, alpha=0.05, steps=5)
        res = fit(model, digits, obj, _cfg(epochs=6, lr=0.1, monitor_steps=10, eval_n=256))
        accs[name] = res.metrics[-1]["test_pgd_acc"]
    assert accs["pgd-at"] > accs["standard"] + 0.1, accs


def test_unknown_objective_option_is_refused():
    with pytest.raises(SamplewiseError, match="unknown option"):
        build_objective("trades", eps=0.1, alpha=0.025, steps=1, betta=3)
    with pytest.raises(SamplewiseError, match="unknown objective 'nope'; choose from: standard"):
        build_objective("nope", eps=0.1, alpha=0.025, steps=1)


class _Boom(Hook):
    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        if epoch == 1 and step == 2:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits):
    torch.manual_seed(0)
    model = create_model("mlp", digits.card)
    obj = build_objective("standard", eps=0.1, alpha=0.025, steps=0)
    with pytest.raises(NonFiniteLoss, match="epoch 2, step 4"):
        fit(model, digits, obj, _cfg(epochs=3), out_dir=tmp_path, hooks=[_Boom()])
    state = io.torch_load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"]["state_dict"].values()
               if v.is_floating_point())


def test_resume_is_bit_identical(tmp_path, digits):
    cfg = _cfg(epochs=4, objective="pgd-at", attack_steps=2, augment=True, schedule="multistep")
    full = run_training(cfg, tmp_path / "full")

    class _Kill(Hook):
        def on_epoch_end(self, model, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", hooks=[_Kill()])
    with pytest.raises(SamplewiseError, match="already holds a run"):
        run_training(cfg, tmp_path / "cut")
    resumed = run_training(cfg, tmp_path / "cut", resume=True)
    a = io.torch_load(tmp_path / "full" / "model.pt")["state_dict"]
    b = io.torch_load(tmp_path / "cut" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["clean_acc"] == resumed["clean_acc"] and full["robust_acc"] == resumed["robust_acc"]
    ma = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda m: {k: v for k, v in m.items() if k != "seconds"}
    assert [strip(m) for m in ma] == [strip(m) for m in mb] and len(ma) == 4


def test_run_directory_contents(tmp_path):
    res = run_training(_cfg(epochs=1, objective="trades", attack_steps=2), tmp_path / "r")
    out = tmp_path / "r"
    for f in ("config.yaml", "model.pt", "metrics.jsonl", "result.json", "checkpoint.pt"):
        assert (out / f).is_file(), f
    assert 0 <= res["robust_acc"] <= res["clean_acc"] <= 1
    assert res["eval"]["steps"] == 2 and res["eval"]["eps"] == pytest.approx(0.2)
    text = (out / "config.yaml").read_text()
    assert "samplewise_version" in text and "fingerprint" in text and "seed" in text
    assert torch.load(out / "model.pt", weights_only=True)["arch"] == "mlp"


def test_budget_iterations_scales_epochs(tmp_path, digits):
    import numpy as np
    sub = digits.train.index[: len(digits.train) // 2].numpy()
    io.np_save(tmp_path / "half.npy", sub)
    res = run_training(_cfg(epochs=1, budget="iterations", subset=str(tmp_path / "half.npy")),
                       tmp_path / "r")
    # same iterations: ceil(1 epoch x 1347 samples / 673 samples) = 3 epochs of the half set
    assert res["epochs"] == math.ceil(len(digits.train) / len(sub)) == 3
    assert res["n_train"] == len(sub) and res["budget"] == "iterations"


def test_channels_last_gives_the_same_training(digits):
    """NHWC is a layout, not a different computation: weights agree to float tolerance."""
    states = []
    for cl in (False, True):
        torch.manual_seed(0)
        model = create_model("cnn-small", digits.card)
        fit(model, digits, build_objective("pgd-at", eps=0.2, alpha=0.05, steps=2),
            _cfg(epochs=1, model="cnn-small", channels_last=cl))
        states.append({k: v.float() for k, v in model.state_dict().items()})
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-3, atol=1e-4)


def test_channels_last_auto_is_on_for_conv_nets_on_the_cpu_only(digits):
    from samplewise.models.layout import run_in_nhwc
    conv, mlp = create_model("cnn-small", digits.card), create_model("mlp", digits.card)
    auto = _cfg()
    assert auto.channels_last is None  # the default is auto
    assert run_in_nhwc(None, conv, "cpu") is True
    assert run_in_nhwc(None, mlp, "cpu") is False          # no convolution: nothing to gain
    assert run_in_nhwc(None, conv, "cuda") is False        # untested on CUDA: opt in only
    assert run_in_nhwc(None, conv, "cpu", ddp=True) is False
    assert run_in_nhwc(False, conv, "cpu") is False
    assert run_in_nhwc(True, mlp, "cuda") is True
    # and fit really trains the conv net in NHWC by default
    fit(conv, digits, build_objective("standard", eps=0.2, alpha=0.05, steps=0),
        _cfg(epochs=1, model="cnn-small"))
    weight = [m.weight for m in conv.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert weight.shape[1] > 1  # with one input channel both layouts count as contiguous
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_bf16_autocast_trains(digits):
    """bf16 autocast (the GPU fast path) also runs on the CPU: it must still learn."""
    torch.manual_seed(0)
    model = create_model("mlp", digits.card)
    res = fit(model, digits, build_objective("standard", eps=0.2, alpha=0.05, steps=0),
              _cfg(epochs=3, amp="bf16", lr=0.1))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert res.metrics[-1]["test_clean_acc"] > 0.8


@pytest.mark.slow
def test_torch_compile_matches_eager(digits):
    """torch.compile (inductor, needs a C compiler) gives the same training to float tolerance."""
    states = []
    for comp in (False, True):
        torch.manual_seed(0)
        model = create_model("mlp", digits.card)
        fit(model, digits, build_objective("standard", eps=0.2, alpha=0.05, steps=0),
            _cfg(epochs=1, compile=comp))
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-4, atol=1e-5)
