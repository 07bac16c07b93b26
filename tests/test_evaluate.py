"""Evaluation: settings recorded, per-sample flags, and resumable long evaluations."""

import pytest
import torch

import functools
import importlib

from samplewise.attacks import ATTACKS
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.models import create_model

ev = importlib.import_module("samplewise.evaluate")  # the package re-exports the function


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bundle = load_dataset("digits")
    return create_model("mlp", bundle.card).eval(), bundle


def test_per_sample_flags_agree_with_accuracies(setup):
    model, bundle = setup
    res = ev.evaluate(model, bundle.test, attack="pgd", steps=3, n=100, per_sample=True)
    flags = res["per_sample"]
    assert len(flags["index"]) == 100 == res["n"]
    assert sum(flags["robust"]) / 100 == pytest.approx(res["robust_acc"])
    assert all(c or not r for c, r in zip(flags["correct"], flags["robust"]))
    assert res["eps"] == bundle.card.eps and res["steps"] == 3 and res["alpha"] == bundle.card.alpha


def test_killed_evaluation_resumes_from_its_state_file(setup, tmp_path, monkeypatch):
    model, bundle = setup
    full = ev.evaluate(model, bundle.test, attack="autoattack", n=60, batch_size=20,
                       aa_version="custom", aa_attacks=["apgd-ce"])
    calls = {"n": 0}
    entry, _ = ATTACKS.resolve("autoattack")  # evaluate calls attacks through the registry
    real = entry.obj

    @functools.wraps(real)
    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(entry, "obj", dies_on_third_batch)
    state = tmp_path / "aa.json"
    kw = dict(attack="autoattack", n=60, batch_size=20, aa_version="custom",
              aa_attacks=["apgd-ce"], state_path=state)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(model, bundle.test, **kw)
    assert state.exists()
    calls["n"] = 10  # from now on never dies; count the batches that still run
    resumed = ev.evaluate(model, bundle.test, **kw)
    assert calls["n"] == 11  # only the unfinished third batch ran again
    assert resumed["robust_acc"] == full["robust_acc"] and resumed["clean_acc"] == full["clean_acc"]
    with pytest.raises(SamplewiseError, match="other settings"):
        ev.evaluate(model, bundle.test, **{**kw, "n": 40})


def test_bad_attack_and_eps(setup):
    model, bundle = setup
    with pytest.raises(SamplewiseError, match="unknown attack 'nope'; choose from"):
        ev.evaluate(model, bundle.test, attack="nope")
    with pytest.raises(SamplewiseError, match="eps must be >= 0"):
        ev.evaluate(model, bundle.test, attack="pgd", eps=-1.0)
