"""The drop-in API for hand-written loops (issue 14 §1): input_grad_norms, AIGNMeter, objectives
called as obj(model, x, y), select on a plain array, run_training(subset=indices) and
IndexedDataset. Each is checked against an independent computation or the framework path."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import samplewise as sw
from samplewise import io
from samplewise.cli import main as cli_main
from samplewise.errors import SamplewiseError
from samplewise.formats.subset import checksum, read_subset, write_subset
from samplewise.hardness.scoring import score
from samplewise.hardness.trackers import OnlineAIGNTracker
from samplewise.runinfo import derived_generator
from samplewise.hooks import Hook
from samplewise.train import fit

FAST = dict(batch_size=64, lr=0.05, schedule="constant", augment=False, eval_n=32,
            monitor_steps=0, eval_steps=1, progress=False)


@pytest.fixture(scope="module")
def digits():
    return sw.load_dataset("digits")


def _cfg(**kw):
    return sw.TrainConfig(**{"dataset": "digits", "model": "mlp", "epochs": 2, **FAST, **kw})


def _float(split):
    return split.x.float() / 255


class _BNDropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.bn(self.conv(x))).flatten(1)))


# ------------------------------------------------------------------ input_grad_norms
@pytest.mark.parametrize("p", [2, 1, float("inf")])
def test_input_grad_norms_equal_a_per_sample_loop(digits, p):
    torch.manual_seed(0)
    model = _BNDropNet()
    x, y = _float(digits.train)[:24], digits.train.y[:24]
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        model(_float(digits.train)[:200])
    F.cross_entropy(model(x), y).backward()  # parameters hold a gradient before the call
    before = [q.grad.clone() for q in model.parameters()]
    model.train()
    norms = sw.input_grad_norms(model, x, y, p=p)
    assert model.training and model.drop.training and model.bn.training
    assert all(torch.equal(q.grad, b) for q, b in zip(model.parameters(), before))
    assert norms.shape == (24,) and norms.dtype == torch.float32 and not norms.requires_grad
    model.eval()
    ref = []
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)
        ref.append(torch.linalg.vector_norm(g.flatten(), ord=p))
    torch.testing.assert_close(norms, torch.stack(ref), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ AIGNMeter
class _Snapshots(Hook):
    def __init__(self):
        self.states = []

    def on_epoch_end(self, model, epoch):
        self.states.append(copy.deepcopy(model.state_dict()))


def test_meter_in_a_hand_loop_equals_checkpoint_scoring(tmp_path, digits):
    snaps = _Snapshots()
    table = score(_cfg(epochs=3), tmp_path / "s", hooks=[snaps])
    model = sw.create_model("mlp", digits.card)
    data = sw.IndexedDataset(TensorDataset(_float(digits.train), digits.train.y))
    loader = DataLoader(data, batch_size=100, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    meter = sw.AIGNMeter(len(data))
    for state in snaps.states:
        model.load_state_dict(state)
        for x, y, idx in loader:
            meter.update(digits.train.index[idx], model, x, y)
        meter.end_epoch()
    assert np.array_equal(table.index, np.arange(len(data)))
    np.testing.assert_allclose(meter.matrix(), table.aign_per_epoch, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(meter.scores(), table.get("aign"), rtol=1e-5, atol=1e-6)


class _OnlineMeterHook(Hook):
    needs_input_grad = True

    def __init__(self, n):
        self.meter = sw.AIGNMeter(n)

    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        self.meter.update_from_grad(idx, x.grad)

    def on_epoch_end(self, model, epoch):
        self.meter.end_epoch()


def test_online_meter_equals_the_online_tracker_and_the_batched_norms(digits):
    hook, tracker = _OnlineMeterHook(len(digits.train)), OnlineAIGNTracker(p=2)
    torch.manual_seed(0)
    fit(sw.create_model("mlp", digits.card), digits,
        sw.build_objective("standard", eps=0.1), _cfg(), hooks=[tracker, hook])
    np.testing.assert_allclose(hook.meter.matrix(), tracker.aign_matrix(), rtol=1e-5, atol=1e-6)
    # independent: B * x.grad of the mean CE is each sample's own gradient (no BN, no dropout)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    x = _float(digits.train)[:50].requires_grad_(True)
    y = digits.train.y[:50]
    F.cross_entropy(model(x), y).backward()
    for p in (2, 1, "sq"):
        online = sw.AIGNMeter(50, p=p).update_from_grad(torch.arange(50), x.grad)
        torch.testing.assert_close(online, sw.input_grad_norms(model, x, y, p=p),
                                   rtol=1e-5, atol=1e-7)


def test_meter_scores_table_and_select_cli(tmp_path):
    meter = sw.AIGNMeter(10)
    meter.update_from_grad([0, 1, 2, 3], torch.tensor([[1.0], [2.0], [3.0], [4.0]]), reduction="sum")
    meter.update_from_grad([0, 5], torch.tensor([[3.0], [6.0]]), reduction="sum")  # 0 twice: mean 2
    meter.end_epoch()
    meter.update_from_grad([0, 1, 6, 7], torch.tensor([[4.0], [0.0], [7.0], [8.0]]), reduction="sum")
    meter.end_epoch()
    want = np.array([3.0, 1.0, 3.0, 4.0, np.nan, 6.0, 7.0, 8.0, np.nan, np.nan], np.float32)
    np.testing.assert_array_equal(meter.scores(), want)
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    table = meter.to_table(labels)
    assert list(table.index) == [0, 1, 2, 3, 5, 6, 7] and table.aign_per_epoch is None
    np.testing.assert_array_equal(table.labels, labels[table.index])
    table.save(tmp_path / "scores.npz")
    assert cli_main(["-q", "select", "--scores", str(tmp_path / "scores.npz"), "--method",
                     "easycore", "--fraction", "0.5", "--class-balanced",
                     "--out", str(tmp_path / "core.npy")]) == 0
    chosen = io.np_load(tmp_path / "core.npy", "subset")
    # class 0 seen: 0 (3), 2 (3), 6 (7) -> 2 easiest: 0, 2; class 1: 1 (1), 3 (4), 5 (6), 7 (8) -> 1, 3
    assert list(chosen) == [0, 1, 2, 3]
    with pytest.raises(SamplewiseError, match=r"\[0, 10\)"):
        meter.update_from_grad([10], torch.ones(1, 1))
    with pytest.raises(SamplewiseError, match="end_epoch"):
        sw.AIGNMeter(3).scores()


# ------------------------------------------------------------------ select on an array
@pytest.mark.parametrize("balanced", [False, True])
def test_select_on_an_array_equals_the_table_path(balanced):
    rng = np.random.default_rng(0)
    scores = rng.random(200).astype(np.float32)
    scores[::7] = scores[3]  # ties, broken by index on both paths
    labels = rng.integers(0, 4, 200)
    table = sw.ScoreTable(np.arange(200), labels, {n: scores for n in ("aign", "el2n", "aum")})
    for method, opts in [("easycore", {}), ("hardcore", {}), ("el2n", {}), ("aum", {"keep": "easiest"}),
                         ("random", {}), ("ccs", {"beta": 0.2})]:
        a = sw.select(scores, method, 0.3, labels=labels, class_balanced=balanced, seed=3, **opts)
        b = sw.select(table, method, 0.3, class_balanced=balanced, seed=3, **opts)
        assert np.array_equal(a, b), method
    easiest = np.lexsort((np.arange(200), scores))[:60]
    assert np.array_equal(sw.select(scores, "easycore", 0.3), np.sort(easiest))


def test_select_on_an_array_refuses_what_it_cannot_do():
    with pytest.raises(SamplewiseError, match="features"):
        sw.select(np.random.rand(20), "moderate", 0.5)
    with pytest.raises(SamplewiseError, match="labels="):
        sw.select(np.random.rand(20), "easycore", 0.5, class_balanced=True)
    with pytest.raises(SamplewiseError, match="NaN"):
        sw.select(np.array([0.1, np.nan, 0.3]), "easycore", 0.5)


# ------------------------------------------------------------------ objectives in any loop
def test_objective_call_without_context(digits):
    torch.manual_seed(0)
    model = sw.create_model("mlp", digits.card)
    x, y = _float(digits.train)[:32], digits.train.y[:32]
    obj = sw.build_objective("pgd-at", eps=0.2, steps=3)
    assert obj.alpha == 0.05
    out = obj(model, x, y, generator=torch.Generator().manual_seed(5))
    ref = obj.forward(model, x, y, None, sw.StepContext(generator=torch.Generator().manual_seed(5)))
    assert out["loss"].dim() == 0 and torch.equal(out["loss"], ref["loss"])
    teacher = sw.create_model("mlp", digits.card)
    for name, opts, missing in [("saad-measured", {"ema": 0.9, "alpha_ig": 0.0}, "idx="),
                                ("saad", {}, "epoch= and epochs="),
                                ("igdm", {}, "epoch= and epochs="), ("iad", {}, "epoch=")]:
        obj = sw.build_objective(name, teacher=teacher, eps=0.2, steps=2, **opts)
        with pytest.raises(SamplewiseError, match=missing):
            obj(model, x, y)
    fine = sw.build_objective("saad", teacher=teacher, eps=0.2, steps=2, ramp=False)
    assert fine(model, x, y)["loss"].dim() == 0
    with pytest.raises(SamplewiseError, match="epoch < epochs"):
        sw.build_objective("igdm", teacher=teacher, eps=0.2)(model, x, y, epoch=3, epochs=3)


class _FirstStep(Hook):
    def on_fit_start(self, model, loader, cfg):
        self.before = copy.deepcopy(model.state_dict())
        self.out = None

    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        if self.out is None:
            self.batch = (x.detach().clone(), y.clone(), idx.clone())
            self.out = {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor)}


def test_saad_loss_in_a_hand_loop_equals_fit(digits):
    torch.manual_seed(0)
    teacher = sw.create_model("mlp", digits.card)
    kw = dict(eps=0.2, alpha=0.05, steps=3, ema=0.9, beta=0.5)
    cap = _FirstStep()
    cfg = _cfg(epochs=2, seed=4)
    fit(sw.create_model("mlp", digits.card, hidden=32), digits,
        sw.build_objective("saad-measured", teacher=teacher, **kw), cfg, hooks=[cap])
    student = sw.create_model("mlp", digits.card, hidden=32)
    student.load_state_dict(cap.before)
    student.train()
    x, y, idx = cap.batch
    mine = sw.build_objective("saad-measured", teacher=teacher, **kw)
    out = mine(student, x, y, idx=idx, epoch=0, epochs=cfg.epochs,
               generator=derived_generator(cfg.seed, 104729, 0, 0))
    torch.testing.assert_close(out["loss"].detach(), cap.out["loss"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out["weights"], cap.out["weights"])
    assert out["loss"].item() > 0


# ------------------------------------------------------------------ run_training(subset=...)
def test_run_training_with_a_loaded_bundle_equals_loading_it_there(tmp_path):
    from samplewise.runs import load_bundle
    cfg = _cfg(epochs=1)
    a = sw.run_training(cfg, tmp_path / "loads")
    b = sw.run_training(cfg, tmp_path / "given", bundle=load_bundle(cfg))
    assert {k: a[k] for k in ("clean_acc", "robust_acc")} == {k: b[k] for k in ("clean_acc", "robust_acc")}
    ma, mb = sw.load_model(tmp_path / "loads"), sw.load_model(tmp_path / "given")
    assert all(torch.equal(u, v) for u, v in zip(ma.state_dict().values(), mb.state_dict().values()))
    ca, cb = ((tmp_path / d / "config.yaml").read_text() for d in ("loads", "given"))
    assert ca.split("git:")[0] == cb.split("git:")[0]


def test_run_training_with_indices_equals_a_subset_file(tmp_path, digits):
    idx = np.random.default_rng(0).choice(len(digits.train), 300, replace=False)
    write_subset(tmp_path / "core.npy", idx)
    cfg = _cfg(epochs=1)
    a = sw.run_training(sw.TrainConfig(**{**cfg.__dict__, "subset": str(tmp_path / "core.npy")}),
                        tmp_path / "file")
    b = sw.run_training(cfg, tmp_path / "direct", subset=torch.as_tensor(idx))
    assert a["clean_acc"] == b["clean_acc"] and a["robust_acc"] == b["robust_acc"]
    ma, mb = sw.load_model(tmp_path / "file"), sw.load_model(tmp_path / "direct")
    assert all(torch.equal(u, v) for u, v in zip(ma.state_dict().values(), mb.state_dict().values()))
    saved = io.np_load(tmp_path / "direct" / "subset.npy", "subset")
    assert np.array_equal(saved, np.sort(idx))
    meta = read_subset(tmp_path / "direct" / "subset.npy").summary
    assert meta["checksum"] == checksum(idx) and meta["fingerprint"] == digits.fingerprint
    assert "direct/subset.npy" in (tmp_path / "direct" / "config.yaml").read_text()
    (tmp_path / "direct" / "result.json").unlink()  # pretend it was killed after its checkpoint
    with pytest.raises(SamplewiseError, match="other subset indices"):
        sw.run_training(cfg, tmp_path / "direct", subset=idx[:200], resume=True)
    with pytest.raises(SamplewiseError, match="not in this split"):
        sw.run_training(cfg, tmp_path / "bad", subset=[0, 1, 99999])
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------ IndexedDataset
class _PILDigits(Dataset):
    """torchvision-style: (PIL image, int) items, an optional transform."""

    def __init__(self, x, y, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = Image.fromarray(self.x[i, 0].numpy(), mode="L")
        return (self.transform(img) if self.transform else img), int(self.y[i])


def test_indexed_dataset_tensor_and_torchvision_style(digits):
    x, y = _float(digits.train)[:40], digits.train.y[:40]
    ds = sw.IndexedDataset(TensorDataset(x, y))
    seen = torch.zeros(40, dtype=torch.long)
    for xb, yb, ib in DataLoader(ds, batch_size=16, shuffle=True):
        assert torch.equal(xb, x[ib]) and torch.equal(yb, y[ib])
        seen[ib] += 1
    assert bool((seen == 1).all())
    from torchvision.transforms import ToTensor
    pil = _PILDigits(digits.train.x[:40], digits.train.y[:40])
    img, label, i = sw.IndexedDataset(pil)[7]
    assert isinstance(img, Image.Image) and label == int(y[7]) and i == 7
    tv = sw.IndexedDataset(_PILDigits(digits.train.x[:40], digits.train.y[:40], ToTensor()))
    xb, yb, ib = next(iter(DataLoader(tv, batch_size=8, shuffle=True,
                                      generator=torch.Generator().manual_seed(0))))
    torch.testing.assert_close(xb, x[ib])
    assert torch.equal(yb, y[ib])
    with pytest.raises(SamplewiseError, match=r"items \(x, y\)"):
        sw.IndexedDataset(TensorDataset(x, y, y))[0]
