"""Attacks: threat-model invariants for every registered attack, PGD parity with an independent
per-sample implementation, strength on a trained model, and the AutoAttack adapter."""

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samplewise import attacks
from samplewise.attacks import ATTACKS, autoattack, eval_mode, fgsm, pgd
from samplewise.errors import SamplewiseError

EPS = 0.1
# every attack with a step loop of its own ("clean" changes nothing, autoattack is third-party)
LOCAL_ATTACKS = [name for name in ATTACKS.names() if name not in ("autoattack", "clean")]


def tiny_conv(seed: int = 0) -> nn.Module:
    """Conv + BatchNorm + Dropout: its output depends on the mode, so a missing eval() shows."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def random_batch(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, 0, :] = 0.0  # pixels on the box boundary exercise the [0, 1] clipping
    x[:, :, -1, :] = 1.0
    return x, torch.randint(0, 10, (n,), generator=g)


def with_random_start(name: str) -> dict:
    """Ask for a random start where the attack has the option (cw always starts randomly)."""
    fn = ATTACKS.get(name)
    return {"random_start": True} if "random_start" in inspect.signature(fn).parameters else {}


def modes(model: nn.Module) -> list:
    return [m.training for m in model.modules()]


def linf(a, b):
    return (a - b).flatten(1).abs().amax(dim=1)


@pytest.fixture(scope="module")
def digits():
    """An MLP trained on sklearn digits (8x8, 10 classes) and 200 held-out samples."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:-200], perm[-200:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9, acc
    return model, x[test], y[test]


def test_registry_has_all_attacks():
    assert {"fgsm", "pgd", "cw", "autoattack"} <= set(ATTACKS.names())
    with pytest.raises(SamplewiseError, match="unknown attack 'nope'; choose from: "):
        ATTACKS.get("nope")


@pytest.mark.parametrize("name", LOCAL_ATTACKS)
@pytest.mark.parametrize("train_mode", [True, False])
def test_attack_invariants(name, train_mode):
    model = tiny_conv().train(train_mode)
    x, y = random_batch()
    before_modes, stats = modes(model), model[1].running_mean.clone()
    g = torch.Generator().manual_seed(0)
    x_adv = ATTACKS.build(name, model, x, y, eps=EPS, generator=g, **with_random_start(name))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert linf(x_adv, x).max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert linf(x_adv, x).min() > 0.5 * EPS  # the attack moved every sample
    assert modes(model) == before_modes
    assert torch.equal(model[1].running_mean, stats)  # BatchNorm ran in eval mode
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", LOCAL_ATTACKS)
def test_attack_deterministic_per_generator(name):
    model = tiny_conv().train()  # dropout would make a train-mode attack random
    x, y = random_batch()
    kw = dict(eps=EPS, **with_random_start(name))
    run = lambda seed: ATTACKS.build(name, model, x, y, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_eval_mode_restores_mixed_submodule_modes():
    model = tiny_conv().train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    expected = modes(model)
    with eval_mode(model):
        assert not any(modes(model))
    assert modes(model) == expected
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert modes(model) == expected


@pytest.mark.parametrize("loss", attacks.PGD_LOSSES)
@pytest.mark.parametrize("random_start", [True, False, "uniform", "normal"])
def test_pgd_options_keep_invariants(loss, random_start):
    model = tiny_conv().train()
    x, y = random_batch()
    x_adv = pgd(model, x, y, eps=EPS, steps=3, loss=loss, random_start=random_start,
                generator=torch.Generator().manual_seed(0))
    assert linf(x_adv, x).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training and all(p.grad is None for p in model.parameters())


def _reference_pgd(model, x, y, eps, alpha, steps, loss):
    """Textbook PGD written independently: one sample at a time, .backward() on a cloned input."""
    out = []
    for i in range(x.shape[0]):
        xi, x0, yi = x[i:i + 1].clone(), x[i:i + 1], y[i:i + 1]
        for _ in range(steps):
            xi = xi.clone().requires_grad_(True)
            z = model(xi)
            if loss == "ce":
                value = F.cross_entropy(z, yi)
            else:  # cw margin: best other logit minus the true logit
                others = torch.cat([z[0, :yi], z[0, yi + 1:]])
                value = others.max() - z[0, yi]
            value.backward()
            with torch.no_grad():
                xi = xi + alpha * xi.grad.sign()
                xi = torch.where(xi > x0 + eps, x0 + eps, xi)
                xi = torch.where(xi < x0 - eps, x0 - eps, xi)
                xi = xi.clamp(0, 1)
        out.append(xi.detach())
    return torch.cat(out)


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_matches_independent_implementation(digits, loss):
    model, x, y = digits
    model = copy.deepcopy(model).double()
    x = x[:20].double()
    ours = pgd(model, x, y[:20], eps=EPS, alpha=EPS / 4, steps=7, loss=loss, random_start=False)
    ref = _reference_pgd(copy.deepcopy(model), x, y[:20], EPS, EPS / 4, 7, loss)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_random_start_formula():
    model = tiny_conv()
    x, y = random_batch()
    x0 = pgd(model, x, y, eps=EPS, steps=0, generator=torch.Generator().manual_seed(5))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x0, (x + (2 * noise - 1) * EPS).clamp(0, 1))
    x0 = pgd(model, x, y, eps=EPS, steps=0, random_start="normal", generator=torch.Generator().manual_seed(5))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x0, (x + 0.001 * noise).clamp(0, 1))


def test_pgd_step_independent_of_batch_size():
    model = tiny_conv()
    x, y = random_batch(12)
    full = pgd(model, x, y, eps=EPS, steps=4, random_start=False)
    part = pgd(model, x[:3], y[:3], eps=EPS, steps=4, random_start=False)
    torch.testing.assert_close(full[:3], part, rtol=0, atol=1e-6)


def test_pgd_kl_default_target_is_clean_logits():
    model = tiny_conv().train()
    x, y = random_batch()
    with torch.no_grad():
        target = model.eval()(x)
    model.train()
    kw = dict(eps=EPS, steps=3, loss="kl", random_start="normal")
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(0), **kw)
    b = pgd(model, x, y, target=target, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(a, b)
    assert (linf(a, x) > 0).all()


def test_pgd_stronger_than_fgsm_and_clean(digits):
    model, x, y = digits
    g = torch.Generator().manual_seed(0)
    x_fgsm = fgsm(model, x, y, eps=EPS)
    x_pgd = pgd(model, x, y, eps=EPS, steps=10, generator=g)
    with torch.no_grad():
        ce = [F.cross_entropy(model(v), y).item() for v in (x, x_fgsm, x_pgd)]
        acc = [(model(v).argmax(1) == y).float().mean().item() for v in (x, x_fgsm, x_pgd)]
    assert ce[0] < ce[1] < ce[2], ce
    assert acc[2] <= acc[1] <= acc[0], acc
    assert acc[2] < acc[0] - 0.2, acc  # the attack actually hurts the model


def test_robust_accuracy_monotone_in_eps(digits):
    model, x, y = digits
    accs = []
    for eps in (0.0, 0.05, 0.1, 0.2):
        x_adv = pgd(model, x, y, eps=eps, steps=10, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            accs.append((model(x_adv).argmax(1) == y).float().mean().item())
    assert all(b <= a + 1.0 / len(y) for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0] - 0.3, accs


def test_cw_lowers_accuracy(digits):
    model, x, y = digits
    x_adv = attacks.cw_inf(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean() - 0.2


@pytest.mark.parametrize("random_start", [True, False, "normal"])
def test_l2_pgd_stays_in_ball(digits, random_start):
    model, x, y = digits
    eps = 1.0
    x_adv = pgd(model, x, y, eps=eps, steps=10, norm="l2", random_start=random_start,
                generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_per_sample_eps_and_zero_eps():
    model = tiny_conv()
    x, y = random_batch()
    eps = torch.linspace(0, 0.2, x.shape[0])
    x_adv = pgd(model, x, y, eps=eps, steps=3, generator=torch.Generator().manual_seed(0))
    assert (linf(x_adv, x) <= eps + 1e-6).all() and linf(x_adv, x)[0] == 0
    for name in LOCAL_ATTACKS:
        out = ATTACKS.build(name, model, x, y, eps=0.0)
        assert torch.equal(out, x) and out is not x


def test_attack_works_under_no_grad_and_global_rng():
    model = tiny_conv()
    x, y = random_batch()
    with torch.no_grad():
        x_adv = pgd(model, x, y, eps=EPS, steps=2, random_start=False)
    assert linf(x_adv, x).min() > 0
    torch.manual_seed(3)
    a = pgd(model, x, y, eps=EPS, steps=2)
    torch.manual_seed(3)
    assert torch.equal(a, pgd(model, x, y, eps=EPS, steps=2))


def test_fgsm_variants():
    model = tiny_conv()
    x, y = random_batch()
    plain = fgsm(model, x, y, eps=EPS)
    # without a start, every pixel not on the box boundary moves by exactly eps
    inner = (x > EPS) & (x < 1 - EPS)
    torch.testing.assert_close((plain - x).abs()[inner], torch.full_like(x[inner], EPS))
    rs = fgsm(model, x, y, eps=EPS, random_start=True, generator=torch.Generator().manual_seed(0))
    assert linf(rs, x).max() <= EPS + 1e-6 and not torch.equal(rs, plain)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1), "eps"), (dict(eps=float("nan")), "eps"), (dict(eps=EPS, alpha=0.0), "alpha"),
    (dict(eps=EPS, alpha=-1.0), "alpha"), (dict(eps=EPS, steps=-1), "steps"),
    (dict(eps=EPS, steps=2.5), "steps"), (dict(eps=EPS, loss="mse"), "unknown PGD loss"),
    (dict(eps=EPS, norm="l1"), "unknown norm"), (dict(eps=EPS, random_start="gauss"), "random_start"),
    (dict(eps=torch.ones(3)), "eps tensor"), (dict(eps=torch.full((12,), -1.0)), "eps"),
])
def test_pgd_bad_values(kwargs, match):
    model = tiny_conv()
    x, y = random_batch()
    with pytest.raises(SamplewiseError, match=match):
        pgd(model, x, y, **kwargs)


def test_other_attacks_bad_values():
    model = tiny_conv()
    x, y = random_batch()
    for name in LOCAL_ATTACKS:
        with pytest.raises(SamplewiseError, match="eps"):
            ATTACKS.build(name, model, x, y, eps=-1.0)
        with pytest.raises(SamplewiseError, match="alpha"):
            ATTACKS.build(name, model, x, y, eps=EPS, alpha=0.0)
    with pytest.raises(SamplewiseError, match="x must be"):
        pgd(model, x, y[:3], eps=EPS)
    with pytest.raises(SamplewiseError, match="random_start"):
        fgsm(model, x, y, eps=EPS, random_start="normal")


def test_autoattack_adapter(digits, tmp_path):
    model, x, y = digits
    model, x, y = copy.deepcopy(model).train(), x[:16], y[:16]
    model[1].eval()
    before, rng = modes(model), torch.random.get_rng_state()
    x_adv = autoattack(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"], batch_size=8,
                       state_path=tmp_path / "aa" / "state.json")
    assert modes(model) == before
    model.eval()
    assert torch.equal(torch.random.get_rng_state(), rng)  # pyautoattack's reseeding is undone
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert x_adv.shape == x.shape and linf(x_adv, x).max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    x_pgd = pgd(model, x, y, eps=EPS, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        acc_aa = (model(x_adv).argmax(1) == y).float().mean().item()
        acc_pgd = (model(x_pgd).argmax(1) == y).float().mean().item()
        acc_clean = (model(x).argmax(1) == y).float().mean().item()
    assert acc_aa <= acc_pgd + 1.0 / 16 and acc_aa < acc_clean, (acc_aa, acc_pgd, acc_clean)
    assert (tmp_path / "aa" / "state.json").is_file()
    if not attacks._can_resume():
        with pytest.raises(SamplewiseError, match="cannot resume"):
            autoattack(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce"],
                       state_path=tmp_path / "aa" / "state.json")
    assert torch.equal(autoattack(model, x, y, eps=0.0), x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="custom"), "non-empty attacks"), (dict(version="custom", attacks=["pgd"]), "unknown AutoAttack attack"),
    (dict(version="fast"), "unknown AutoAttack version"), (dict(attacks=["apgd-ce"]), "only used with"),
    (dict(norm="l5"), "unknown norm"), (dict(batch_size=0), "batch_size"), (dict(eps=-1.0), "eps"),
])
def test_autoattack_bad_values(kwargs, match):
    model = tiny_conv()
    x, y = random_batch()
    with pytest.raises(SamplewiseError, match=match):
        autoattack(model, x, y, **{"eps": EPS, **kwargs})
