"""Distillation objectives (ARD, RSLAD, IAD, AdaAD, IGDM, SAAD): formulas recomputed by hand,
planted SAAD weights, counted passes, a frozen teacher, the per-sample EMA state, and fit()."""

import copy
import io as pyio

import pytest
import torch
from torch import nn

from samplewise.errors import SamplewiseError
from samplewise.objectives import OBJECTIVES, StepContext, build_objective
from samplewise.objectives.saad import saad_weights
from samplewise.passes import PassCounter, count_passes

EPS, ALPHA, K = 0.1, 0.025, 3
DISTILLERS = [n for n in OBJECTIVES.names() if getattr(OBJECTIVES.get(n), "needs_teacher", False)]


def _mlp(seed, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, 32)] + ([nn.BatchNorm1d(32)] if bn else []) + \
             [nn.Tanh(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def batch():
    """Random 1x8x8 inputs; half of the labels agree with the teacher, so transfer flags are mixed."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    teacher = _mlp(7)
    with torch.no_grad():
        pred = teacher(x).argmax(1)
    y = torch.where(torch.arange(16) % 2 == 0, pred, (pred + 1 + torch.arange(16) % 9) % 10)
    idx = torch.arange(100, 116)
    return x, y, idx


def _ctx(epoch=4, epochs=10, seed=3):
    return StepContext(epoch=epoch, epochs=epochs, step=0, steps_per_epoch=1,
                       generator=torch.Generator().manual_seed(seed))


# ---------------- independent reference formulas (explicit softmax / log / sums) ----------------
def _p(z):
    z = z.double()
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def _kl(zp, zq, tau=1.0):
    p, q = _p(zp / tau), _p(zq / tau)
    return (p * (torch.log(p) - torch.log(q))).sum(1)


def _entropy(z):
    p = _p(z)
    return -(p * torch.log(p)).sum(1)


def _reference(name, opts, S, T, x, y, x_adv, ctx):
    """The method's per-sample loss written out from methods.md §4."""
    with torch.no_grad():
        zs_adv, zs, zs_minus = S(x_adv), S(x), S(x - (x_adv - x))
        zt, zt_adv, zt_minus = T(x), T(x_adv), T(x - (x_adv - x))
    r = (ctx.epoch + 1) / ctx.epochs
    ig = _kl(zt_adv - zt_minus, zs_adv - zs_minus)
    if name == "ard":
        a, tau = opts["kd_weight"], opts["temperature"]
        ce = -torch.log(_p(zs)[torch.arange(len(y)), y])
        return a * tau ** 2 * _kl(zt, zs_adv, tau) + (1 - a) * ce
    if name == "rslad":
        return 5 / 6 * _kl(zt, zs_adv) + 1 / 6 * _kl(zt, zs)
    if name == "iad":
        loss = _kl(zt, zs_adv)
        if ctx.epoch >= int(opts["warmup"] * ctx.epochs):
            trust = _p(zt_adv)[torch.arange(len(y)), y] ** 0.1
            loss = loss + (1 - trust) * _kl(zs, zs_adv)
        return loss
    if name == "adaad":
        return _kl(zt_adv, zs_adv)
    if name == "igdm":
        return _kl(zt_adv, zs_adv) + opts["alpha_ig"] * r * ig
    if name == "saad":
        h = _entropy(zt_adv)
        w = torch.clamp(5 * (h - h.min()), min=0)
        w_t = (w - w.min()) / (w.max() - w.min() + 1e-8)
        return w * (_kl(zt_adv, zs_adv) + r * ig) + opts["beta"] * (1 - w_t) * _kl(zt, zs)
    if name == "saad-measured":
        w = (zt_adv.argmax(1) != y).double()
        return w * (_kl(zt_adv, zs_adv) + r * ig) + 1.0 * (1 - w) * _kl(zt, zs)
    raise AssertionError(name)


PARITY = [("ard", {"kd_weight": 0.7, "temperature": 2.0}, 4), ("rslad", {}, 4),
          ("iad", {"warmup": 0.5}, 2), ("iad", {"warmup": 0.5}, 7), ("adaad", {}, 4),
          ("igdm", {"alpha_ig": 2.0}, 4), ("saad", {"beta": 0.0}, 4), ("saad", {"beta": 0.5}, 9),
          ("saad-measured", {}, 4)]


@pytest.mark.parametrize("name,opts,epoch", PARITY)
def test_loss_matches_formula(batch, name, opts, epoch):
    x, y, idx = batch
    S, T = _mlp(0), _mlp(7)
    obj = build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=K, **opts)
    ctx = _ctx(epoch)
    out = obj(S, x, y, idx, ctx)
    full = {"beta": 0.0, **obj.options}
    ref = _reference(name, full, S, T, x, y, out["x_adv"], ctx)
    assert torch.allclose(out["loss_per_sample"].double(), ref, atol=1e-5, rtol=1e-4)
    assert out["loss"].item() == pytest.approx(ref.mean().item(), abs=1e-5, rel=1e-4)
    with torch.no_grad():
        expect_transfer = T(out["x_adv"]).argmax(1) != y
    assert torch.equal(out["transfer"], expect_transfer)
    assert 0 < out["transfer"].sum() < len(y)  # the planted labels give a mixed batch
    assert torch.equal(out["epoch_metrics"]["tas"], expect_transfer.float())
    again = obj(S, x, y, idx, _ctx(epoch))  # same generator seed -> same x'
    assert torch.equal(again["x_adv"], out["x_adv"])


def _inner_by_hand(S, x, target_fn, steps, seed):
    """PGD on sum_i KL(target(x') || S(x')) from x + 0.001 N(0, I), written out independently."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g)
    lo, hi = torch.clamp(x - EPS, min=0), torch.clamp(x + EPS, max=1)
    xa = torch.minimum(torch.maximum(x + 0.001 * noise, lo), hi)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        grad, = torch.autograd.grad(_kl(target_fn(xa), S(xa)).sum(), xa)
        xa = torch.minimum(torch.maximum(xa.detach() + ALPHA * torch.sign(grad), lo), hi)
    return xa.detach()


@pytest.mark.parametrize("name", ["adaad", "saad"])
def test_inner_maximisation_matches_hand_written(batch, name):
    """AdaAD: exact teacher in the loop. SAAD: z_T(x) with the true-class logit moved by
    <grad_x z_T(x)_y, x' - x> (the linearised teacher of the official code)."""
    x, y, idx = batch
    S, T = _mlp(0), _mlp(7)
    out = build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=K)(S, x, y, idx, _ctx(seed=5))
    if name == "adaad":
        target = T
    else:
        x0 = x.clone().requires_grad_(True)
        zt = T(x0)
        grad_y, = torch.autograd.grad(zt[torch.arange(len(y)), y].sum(), x0)

        def target(xa):
            shift = ((xa - x) * grad_y).sum(dim=(1, 2, 3))
            z = zt.detach().clone()
            return z + torch.nn.functional.one_hot(y, 10) * shift[:, None]
    ref = _inner_by_hand(S, x, target, K, seed=5)
    same = (out["x_adv"] - ref).abs() < 1e-6
    assert same.float().mean() > 0.99  # a sign may flip where a gradient coordinate is ~0


# ---------------- SAAD weights on planted teacher logits ----------------
PRESETS = {"saad": dict(scale=5.0, center="min", normalize="minmax"),
           "saad-measured": dict(scale=1.0, center="none", normalize="clip")}


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("signal,gamma", [("hard", 1.0), ("soft", 1.0), ("entropy", 1.0), ("entropy", 2.0)])
def test_transferring_sample_gets_more_adversarial_and_less_clean_weight(signal, gamma, preset):
    y = torch.zeros(4, dtype=torch.long)
    logits = torch.tensor([[0.4, 0.6, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],   # transfers, unsure
                           [6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # does not, confident
                           [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    w, w_tilde = saad_weights(logits, y, signal, gamma, **PRESETS[preset])
    assert w[0] > w[1] and (1 - w_tilde[0]) < (1 - w_tilde[1])
    assert not w.requires_grad and (w >= 0).all() and ((w_tilde >= 0) & (w_tilde <= 1)).all()


def test_official_weights_by_hand():
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.arange(8) % 10
    w, w_tilde = saad_weights(logits, y)
    h = _entropy(logits)
    ref = torch.clamp(5 * (h - h.min()), min=0)
    assert torch.allclose(w.double(), ref, atol=1e-5)
    assert torch.allclose(w_tilde.double(), (ref - ref.min()) / (ref.max() - ref.min() + 1e-8), atol=1e-5)
    hard, _ = saad_weights(logits, y, "hard", scale=1.0, center="none", normalize="clip")
    assert torch.equal(hard, (logits.argmax(1) != y).float())


# ---------------- counted passes ----------------
def _table(k):
    """Passes per step (student fwd, student bwd, teacher fwd, teacher bwd); docs/distillation.md."""
    return {
        ("ard", ()): (k + 1, k + 1, 2, 0),
        ("ard", (("measure_tas", False),)): (k + 1, k + 1, 1, 0),
        ("ard", (("kd_weight", 0.5),)): (k + 2, k + 2, 2, 0),
        ("rslad", ()): (k + 2, k + 2, 2, 0),
        ("iad", (("warmup", 0.5),), 2): (k + 1, k + 1, 2, 0),   # warm-up
        ("iad", (("warmup", 0.5),), 7): (k + 2, k + 2, 2, 0),   # introspection on
        ("adaad", ()): (k + 1, k + 1, k + 1, k),
        ("igdm", ()): (k + 2, k + 2, k + 2, k),
        ("saad", ()): (k + 2, k + 2, 3, 1),
        ("saad", (("inner", "teacher"),)): (k + 2, k + 2, k + 2, k),
        ("saad-measured", ()): (k + 3, k + 3, 3, 1),
        ("saad-measured", (("inner", "teacher"),)): (k + 3, k + 3, k + 3, k),
    }


def _count(batch, name, opts=(), epoch=4):
    x, y, idx = batch
    S, T = _mlp(0), _mlp(7)
    obj = build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=K, **dict(opts))
    c = count_passes(obj, S, T, x, y, idx, _ctx(epoch))
    assert c["student_forward_samples"] == len(y) * c["student_forward"]
    return (c["student_forward"], c["student_backward"], c["teacher_forward"], c["teacher_backward"])


@pytest.mark.parametrize("key", list(_table(K)))
def test_pass_counts_match_table(batch, key):
    name, opts = key[0], key[1]
    epoch = key[2] if len(key) > 2 else 4
    assert _count(batch, name, opts, epoch) == _table(K)[key]


def test_saad_costs_no_more_than_its_base(batch):
    """The weights come from teacher logits on x' that the loss needs anyway: with the same inner
    loop SAAD's passes equal IGDM's (AdaAD's without the IGDM term); the default linearised inner
    loop only removes teacher passes."""
    igdm = _count(batch, "igdm")
    assert _count(batch, "saad", {"inner": "teacher"}) == igdm
    assert _count(batch, "saad", {"inner": "teacher", "alpha_ig": 0.0}) == _count(batch, "adaad")
    default = _count(batch, "saad")
    assert default[:2] == igdm[:2] and all(a <= b for a, b in zip(default, igdm))


def test_pass_counter_counts_grad_calls_and_no_grad():
    m = _mlp(0)
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    with PassCounter(m) as c:
        torch.autograd.grad(m(x).sum(), x)
        with torch.no_grad():
            m(x)
        m(x[:2]).sum().backward()
    assert c.counts() == {"forward": 3, "backward": 2, "forward_samples": 12, "backward_samples": 7}


# ---------------- frozen teacher, student modes ----------------
@pytest.mark.parametrize("name", DISTILLERS)
def test_teacher_is_untouched_by_training(batch, name):
    x, y, idx = batch
    S, T = _mlp(0), _mlp(7, bn=True)
    T.train()  # the objective must put it in eval mode (BatchNorm stats would move otherwise)
    before = copy.deepcopy(T.state_dict())
    obj = build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=2, **({"warmup": 0.0} if name == "iad" else {}))
    opt = torch.optim.SGD(S.parameters(), lr=0.1)
    for step in range(3):
        out = obj(S, x, y, idx, _ctx(seed=step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert not T.training
    assert all(p.grad is None and not p.requires_grad for p in T.parameters())
    after = T.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class _Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


@pytest.mark.parametrize("name", DISTILLERS)
def test_student_in_eval_mode_only_during_the_attack(batch, name):
    x, y, idx = batch
    probe = _Probe()
    S = nn.Sequential(probe, _mlp(0))
    S.train()
    build_objective(name, teacher=_mlp(7), eps=EPS, alpha=ALPHA, steps=K)(S, x, y, idx, _ctx())
    assert probe.modes[:K] == [False] * K and all(probe.modes[K:]) and len(probe.modes) > K
    assert S.training


# ---------------- every registered distiller ----------------
@pytest.mark.parametrize("name", DISTILLERS)
def test_every_distiller_is_sane(batch, name):
    x, y, idx = batch
    S, T = _mlp(0), _mlp(7)
    obj = build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=K)
    out = obj(S, x, y, idx, _ctx())
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    out["loss"].backward()
    grads = [p.grad for p in S.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    delta = (out["x_adv"] - x).abs().max().item()
    assert 0 < delta <= EPS + 1e-6
    assert out["x_adv"].min() >= 0 and out["x_adv"].max() <= 1
    assert out["logits"].shape == (16, 10) and out["loss_per_sample"].shape == (16,)
    assert out["transfer"].dtype == torch.bool and out["transfer"].shape == (16,)
    assert set(obj.options) <= set(obj.settings()) and obj.settings()["name"] == name
    with pytest.raises(SamplewiseError, match="unknown option"):
        build_objective(name, teacher=T, eps=EPS, alpha=ALPHA, steps=K, nope=1)
    with pytest.raises(SamplewiseError, match="needs a teacher"):
        build_objective(name, eps=EPS, alpha=ALPHA, steps=K)


def test_bad_saad_options_are_refused():
    for bad in ({"signal": "vibes"}, {"inner": "exact"}, {"ema": 1.0}, {"beta": -1.0}, {"gamma": -2}):
        with pytest.raises(SamplewiseError):
            build_objective("saad", teacher=_mlp(7), eps=EPS, alpha=ALPHA, steps=1, **bad)


def test_measure_tas_off_drops_the_metric(batch):
    x, y, idx = batch
    out = build_objective("rslad", teacher=_mlp(7), eps=EPS, alpha=ALPHA, steps=1,
                          measure_tas=False)(_mlp(0), x, y, idx, _ctx())
    assert "transfer" not in out and out["epoch_metrics"] == {}


# ---------------- saad-measured EMA state ----------------
def _measured(ema=0.5, teacher=None):
    return build_objective("saad-measured", teacher=teacher or _mlp(7), eps=EPS, alpha=ALPHA,
                           steps=2, ema=ema)


def test_ema_is_indexed_by_dataset_index_not_batch_order():
    s1 = {10: 1.0, 3: 0.0, 7: 1.0, 0: 0.0}
    s2 = {10: 0.0, 3: 1.0, 7: 1.0, 0: 0.0}
    states = []
    for order in ([[10, 3], [7, 0]], [[0, 7], [3, 10]]):
        obj = _measured()
        for sig in (s1, s2):
            for b in order:
                obj.smooth_signal(torch.tensor([sig[i] for i in b]), torch.tensor(b))
        states.append(obj.state_dict())
    a, b = states
    assert torch.equal(a["ema_values"], b["ema_values"]) and torch.equal(a["ema_seen"], b["ema_seen"])
    assert len(a["ema_values"]) == 11 and a["ema_seen"].sum() == 4
    for i in s1:
        assert a["ema_values"][i].item() == pytest.approx(0.5 * s1[i] + 0.5 * s2[i])


def test_bound_ema_is_sized_once_and_gives_the_same_values(monkeypatch):
    """After fit's bind() the EMA is sized from the split up front (no int(idx.max()) sync in
    the step); the smoothed values are those of the unbound, grow-on-demand objective."""
    batches = [([10, 3], [1.0, 0.0]), ([7, 0], [1.0, 0.0]), ([3, 10], [1.0, 1.0])]
    free, bound = _measured(), _measured()
    bound.bind(torch.tensor([0, 3, 7, 10, 12]))
    sizes = []
    real_grow = type(bound)._grow
    monkeypatch.setattr(type(bound), "_grow", lambda self, n, like: (sizes.append(n), real_grow(self, n, like)))
    for b, sig in batches:
        want = free.smooth_signal(torch.tensor(sig), torch.tensor(b))
        got = bound.smooth_signal(torch.tensor(sig), torch.tensor(b))
        assert torch.equal(want, got)
    assert sizes[1::2] == [13, 13, 13]  # bound: the split's size every time, never the batch's
    assert len(bound.state_dict()["ema_values"]) == 13


def test_ema_through_the_objective_ignores_batch_order(batch):
    x, y, idx = batch
    T = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():  # constant teacher: the hard signal is 1[y != 3] whatever x' is
        T[1].weight.zero_()
        T[1].bias.copy_(torch.arange(10.0) == 3)
    states = []
    for perm in (torch.arange(16), torch.randperm(16, generator=torch.Generator().manual_seed(2))):
        obj, S = _measured(0.9, T), _mlp(0)
        for half in (perm[:8], perm[8:]):
            obj(S, x[half], y[half], idx[half], _ctx())
        states.append(obj.state_dict())
    assert torch.equal(states[0]["ema_values"], states[1]["ema_values"])
    assert torch.equal(states[0]["ema_values"][idx], (y != 3).float())
    assert len(states[0]["ema_values"]) == int(idx.max()) + 1


def test_ema_state_survives_save_and_load(batch):
    x, y, idx = batch
    S = _mlp(0)
    obj = _measured(0.8)
    for epoch in range(2):
        obj(S, x, y, idx, _ctx(epoch, seed=epoch))
    buf = pyio.BytesIO()
    torch.save(obj.state_dict(), buf)
    buf.seek(0)
    fresh = _measured(0.8)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    a, b = obj(S, x, y, idx, _ctx(2, seed=9)), fresh(S, x, y, idx, _ctx(2, seed=9))
    assert torch.equal(a["weights"], b["weights"]) and torch.equal(a["loss"], b["loss"])
    assert all(torch.equal(obj.state_dict()[k], fresh.state_dict()[k]) for k in obj.state_dict())
    fresh.load_state_dict({})
    assert fresh.state_dict() == {}
    with pytest.raises(SamplewiseError):
        fresh.load_state_dict({"ema_values": torch.zeros(3)})


# ---------------- the training loop ----------------
def _fit_setup():
    from samplewise.config import TrainConfig
    from samplewise.data import load_dataset
    from samplewise.models import create_model

    bundle = load_dataset("digits", train_size=192, seed=0)
    cfg = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=64, lr=0.05,
                      schedule="constant", augment=False, eval_n=32, monitor_steps=1, progress=False)
    torch.manual_seed(0)
    return bundle, cfg, create_model("mlp", bundle.card), create_model("mlp", bundle.card)


def _saad_ema(teacher):
    return build_objective("saad-measured", teacher=teacher, eps=0.1, alpha=0.025, steps=2, ema=0.9)


def test_fit_reports_tas_and_fills_the_ema_by_dataset_index():
    from samplewise.train import fit

    bundle, cfg, teacher, student = _fit_setup()
    obj = _saad_ema(teacher)
    res = fit(student, bundle, obj, cfg)
    assert len(res.metrics) == 2 and all(0 <= m["tas"] <= 1 for m in res.metrics)
    seen = obj.state_dict()["ema_seen"]
    assert torch.equal(seen.nonzero().squeeze(1), bundle.train.index.sort().values)


def test_fit_checkpoint_carries_the_ema(tmp_path):
    from samplewise.train import fit

    bundle, cfg, teacher, student = _fit_setup()
    obj = _saad_ema(teacher)
    fit(copy.deepcopy(student), bundle, obj, cfg, out_dir=tmp_path)
    resumed = _saad_ema(teacher)
    fit(copy.deepcopy(student), bundle, resumed, cfg, out_dir=tmp_path, resume=True)
    assert torch.equal(resumed.state_dict()["ema_values"], obj.state_dict()["ema_values"])
