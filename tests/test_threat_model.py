"""One threat model (issue 13): the spec's defaults per dataset card and caller rule, an attack
registered here runs through ``evaluate`` with no list of names, ``evaluate``'s numbers equal
direct attack calls made the way the former code made them, and ``maximise_kl`` (now
``attacks.pgd`` with a loss callable) gives the same ``x'`` as a copy of its former loop."""

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from samplewise import losses
from samplewise.attacks import ATTACKS, attack_contract, autoattack, cw_inf, fgsm, pgd
from samplewise.config import TrainConfig
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.evaluate import eval_slice, evaluate, predict
from samplewise.models import create_model
from samplewise.objectives.distill import linearised_teacher, maximise_kl
from samplewise.runinfo import derived_generator
from samplewise.runs import resolve_attack
from samplewise.threat import ThreatModel

MNIST = SimpleNamespace(eps=0.3, alpha=0.01)          # a card whose step is not eps/4
CIFAR = SimpleNamespace(eps=8 / 255, alpha=2 / 255)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bundle = load_dataset("digits")
    return create_model("mlp", bundle.card).eval(), bundle


# ------------------------------------------------------------------ the spec's defaults
@pytest.mark.parametrize("card, kw, rule, want", [
    (MNIST, {}, "same-eps", (0.3, 0.01)),
    (MNIST, {"eps": 0.3}, "same-eps", (0.3, 0.01)),          # evaluate: the card's eps, given
    (MNIST, {"eps": 0.1}, "same-eps", (0.1, 0.025)),
    (MNIST, {}, "default-eps", (0.3, 0.01)),
    (MNIST, {"eps": 0.3}, "default-eps", (0.3, 0.075)),      # training: a given eps takes eps/4
    (MNIST, {"eps": 0.15}, "ratio", (0.15, 0.15 * (0.01 / 0.3))),
    (MNIST, {"eps": 0.1, "alpha": 0.02}, "ratio", (0.1, 0.02)),
    (CIFAR, {}, "same-eps", (8 / 255, 2 / 255)),
    (CIFAR, {"eps": 4 / 255}, "default-eps", (4 / 255, 1 / 255)),
    (None, {"eps": 0.2}, "same-eps", (0.2, 0.05)),            # no card: eps/4
])
def test_resolved_defaults(card, kw, rule, want):
    tm = ThreatModel.resolve(card, card_step=rule, **kw)
    assert (tm.eps, tm.alpha) == want and (tm.norm, tm.steps, tm.random_start) == ("linf", 10, True)


def test_resolve_refuses_bad_values():
    with pytest.raises(SamplewiseError, match="eps is required"):
        ThreatModel.resolve(None)
    with pytest.raises(SamplewiseError, match="eps must be >= 0"):
        ThreatModel.resolve(MNIST, eps=-0.1)
    with pytest.raises(SamplewiseError, match="steps must be >= 0"):
        ThreatModel.resolve(MNIST, steps=-1)
    with pytest.raises(SamplewiseError, match="unknown card_step"):
        ThreatModel.resolve(MNIST, card_step="nope")


def test_training_and_evaluation_keep_their_rules(setup):
    _, bundle = setup
    card = bundle.card
    assert (card.eps, card.alpha) == (0.2, 0.05)
    for eps, alpha in ((None, None), (0.1, None), (0.1, 0.03)):
        cfg = resolve_attack(TrainConfig(dataset="digits", eps=eps, alpha=alpha), bundle)
        want_eps = card.eps if eps is None else eps
        want_alpha = alpha if alpha is not None else (card.alpha if eps is None else eps / 4)
        assert (cfg.eps, cfg.alpha) == (want_eps, want_alpha)  # the former runs.resolve_attack


# ------------------------------------------------------------------ a new attack, no name lists
@pytest.fixture
def nudge_attack(monkeypatch):
    """A throwaway attack registered for one test: one signed CE-gradient step of ``alpha * steps``
    (clipped to the eps-ball), recording what it was called with."""
    monkeypatch.setattr(ATTACKS, "_entries", dict(ATTACKS._entries))  # unregistered afterwards
    calls = []

    @ATTACKS.register("test-nudge", help="a test attack")
    def nudge(model, x, y, *, eps, alpha=None, steps=3, generator=None):
        calls.append({"eps": eps, "alpha": alpha, "steps": steps, "generator": generator})
        return reference_nudge(model, x, y, eps, alpha, steps)

    return calls


def reference_nudge(model, x, y, eps, alpha, steps):
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    return (x + (alpha * steps * grad.sign()).clamp(-eps, eps)).clamp(0, 1).detach()


def test_a_registered_attack_runs_through_evaluate(setup, nudge_attack):
    model, bundle = setup
    assert attack_contract("test-nudge").threat == ("eps", "alpha", "steps")
    assert attack_contract("test-nudge").eval_steps == 3      # its signature's default
    res = evaluate(model, bundle.test, attack="test-nudge", n=90, batch_size=40, per_sample=True)
    assert [c["steps"] for c in nudge_attack] == [3, 3, 3]
    assert {(c["eps"], c["alpha"]) for c in nudge_attack} == {(0.2, 0.05)}
    assert all(isinstance(c["generator"], torch.Generator) for c in nudge_attack)
    data = eval_slice(bundle.test, 90)
    x, y = data.x.float() / 255, data.y
    robust = (predict(model, x) == y) & (predict(model, reference_nudge(model, x, y, 0.2, 0.05, 3)) == y)
    assert res["per_sample"]["robust"] == robust.tolist()
    assert res["robust_acc"] < res["clean_acc"]  # the attack did something on this model
    assert (res["attack"], res["alpha"], res["steps"]) == ("test-nudge", 0.05, 3)


def test_unknown_attack_names_the_registry(setup):
    model, bundle = setup
    with pytest.raises(SamplewiseError, match="unknown attack 'nope'; choose from: .*pgd.*clean"):
        evaluate(model, bundle.test, attack="nope")


# ------------------------------------------------------------------ evaluate's numbers unchanged
def former_evaluate(model, split, attack, n, batch_size, card, **aa):
    """The per-batch calls of evaluate before the threat model: eps/alpha from the card, steps
    PGD-20 / CW-30, one generator for the whole slice, AutoAttack seeded per batch."""
    data = eval_slice(split, n)
    gen = derived_generator(0, 7919, device="cpu")
    flags = []
    for b, i in enumerate(range(0, len(data), batch_size)):
        x, y = data.x[i:i + batch_size].float().div_(255.0), data.y[i:i + batch_size]
        correct = predict(model, x) == y
        if attack == "clean":
            flags.append(correct)
            continue
        if attack == "autoattack":
            x_adv = autoattack(model, x, y, eps=card.eps, batch_size=batch_size, seed=b, **aa)
        elif attack == "fgsm":
            x_adv = fgsm(model, x, y, eps=card.eps, generator=gen)
        elif attack == "pgd":
            x_adv = pgd(model, x, y, eps=card.eps, alpha=card.alpha, steps=20, generator=gen)
        else:
            x_adv = cw_inf(model, x, y, eps=card.eps, alpha=card.alpha, steps=30, generator=gen)
        flags.append((predict(model, x_adv) == y) & correct)
    return torch.cat(flags).tolist()


@pytest.mark.parametrize("attack, n, aa", [
    ("clean", 100, {}), ("fgsm", 100, {}), ("pgd", 100, {}), ("cw", 100, {}),
    ("autoattack", 40, {"version": "custom", "attacks": ["apgd-ce"]}),
])
def test_evaluate_numbers_unchanged(setup, attack, n, aa):
    model, bundle = setup
    kw = {"aa_version": aa["version"], "aa_attacks": aa["attacks"]} if aa else {}
    res = evaluate(model, bundle.test, attack=attack, n=n, batch_size=40, per_sample=True, **kw)
    want = former_evaluate(model, bundle.test, attack, n, 40, bundle.card, **aa)
    assert res["per_sample"]["robust"] == want
    steps = {"clean": 0, "fgsm": 1, "pgd": 20, "cw": 30, "autoattack": 0}[attack]
    alpha = bundle.card.alpha if attack in ("pgd", "cw") else None
    assert (res["eps"], res["alpha"], res["steps"]) == (bundle.card.eps, alpha, steps)
    assert ("autoattack" in res) == (attack == "autoattack")


# ------------------------------------------------------------------ distillation's inner loop
def former_maximise_kl(student, x, target_fn, *, eps, alpha, steps, generator):
    """A copy of maximise_kl's own loop before it became attacks.pgd with a loss callable."""
    x = x.detach()
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    x_adv = torch.max(torch.min(x + 0.001 * noise, hi), lo)
    was = student.training
    student.eval()
    with torch.enable_grad():
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = losses.kl(target_fn(x_adv), student(x_adv), reduction="sum")
            grad, = torch.autograd.grad(loss, x_adv)
            x_adv = torch.max(torch.min(x_adv.detach() + alpha * grad.sign(), hi), lo)
    student.train(was)
    return x_adv.detach()


def small_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


@pytest.mark.parametrize("target", ["teacher", "linearised"])
def test_maximise_kl_matches_its_former_loop(target):
    student, teacher = small_net(0).train(), small_net(1).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    fn = teacher if target == "teacher" else linearised_teacher(teacher, x, y)[1]
    kw = dict(eps=0.1, alpha=0.025, steps=5)
    new = maximise_kl(student, x, fn, generator=torch.Generator().manual_seed(7), **kw)
    old = former_maximise_kl(student, x, fn, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(new, old)
    assert (new - x).abs().amax() > 0.05 and student.training  # it moved; mode restored
    assert all(p.grad is None for p in student.parameters())
