"""Hardness trackers and scoring runs: per-sample parity, mode agreement, planted answers,
score files, resume and the ``score`` command."""

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import samplewise
from samplewise import io
from samplewise.commands import score as score_cmd
from samplewise.config import TrainConfig
from samplewise.data import Split, load_dataset
from samplewise.errors import SamplewiseError
from samplewise.formats.scores import SCORE_NAMES, ScoreTable
from samplewise.hardness.scoring import make_trackers, score, scores_from_model
from samplewise.hardness.trackers import (EvalPassTracker, OnlineAIGNTracker,
                                          TrainingDynamicsTracker, norm_kind, per_sample_pass)
from samplewise.models import create_model
from samplewise.objectives import build_objective
from samplewise.hooks import Hook
from samplewise.train import fit

FAST = dict(batch_size=64, lr=0.05, schedule="constant", augment=False, eval_n=32,
            monitor_steps=0, eval_steps=1, progress=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(**kw):
    return TrainConfig(**{"dataset": "digits", "model": "mlp", "epochs": 2, **FAST, **kw})


def _standard():
    return build_objective("standard", eps=0.1, alpha=0.025, steps=0)


def _by_index(index, values):
    """values re-ordered by ascending dataset index."""
    return values[torch.argsort(torch.as_tensor(index))]


def _one_at_a_time(model, split, p):
    """Independent reference: a separate forward/backward per sample, eval mode."""
    model.eval()
    aign, el2n, grand = [], [], []
    for i in range(len(split)):
        x = (split.x[i:i + 1].float() / 255).requires_grad_(True)
        y = split.y[i:i + 1]
        loss = F.cross_entropy(model(x), y)
        gx, gw, gb = torch.autograd.grad(loss, [x, model.head.weight, model.head.bias])
        g = gx.flatten()
        aign.append({2: g.norm(), 1: g.abs().sum(), "sq": (g * g).sum()}[p])
        prob = model(x).softmax(1)[0].detach()
        el2n.append((prob - F.one_hot(y, prob.numel())[0]).norm())
        grand.append(torch.cat([gw.flatten(), gb]).norm())
    return torch.stack(aign), torch.stack(el2n), torch.stack(grand)


@pytest.mark.parametrize("p", [2, 1, "sq"])
def test_aign_matches_per_sample_gradients_any_batch_or_order(digits, p):
    torch.manual_seed(0)
    model = create_model("cnn-small", digits.card, bn=True, width=0.5)
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        model(digits.train.x[:256].float() / 255)
    split = digits.train.subset(digits.train.index[:32].numpy())
    out = per_sample_pass(model, split, p=p, batch_size=512)
    assert model.training and all(q.grad is None for q in model.parameters())
    ref_aign, ref_el2n, ref_grand = _one_at_a_time(model, split, p)
    torch.testing.assert_close(out["aign"], ref_aign, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["el2n"], ref_el2n, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["grand"], ref_grand, rtol=1e-5, atol=1e-7)
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))
    shuffled = split.subset(split.index[perm].numpy())
    for bs in (5, 32):
        other = per_sample_pass(model, shuffled, p=p, batch_size=bs)
        for key in ("aign", "el2n", "grand", "loss"):
            torch.testing.assert_close(_by_index(other["index"], other[key]),
                                       _by_index(out["index"], out[key]), rtol=1e-5, atol=1e-7)


def test_online_and_checkpoint_modes_agree_on_a_fixed_model(digits):
    torch.manual_seed(0)
    model = create_model("mlp", digits.card)
    hooks = {p: (OnlineAIGNTracker(p=p), EvalPassTracker(p=p)) for p in (2, 1, "sq")}
    fit(model, digits, _standard(), _cfg(lr=0.0, epochs=2),
        hooks=[h for pair in hooks.values() for h in pair])
    for p, (online, passes) in hooks.items():
        a, b = online.aign_matrix(), passes.aign_matrix()
        assert a.shape == b.shape == (len(digits.train), 2) and online.tracked == [0, 1]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        fixed = scores_from_model(model, digits, p=p)
        np.testing.assert_allclose(fixed.get("aign"), b[:, 1], rtol=1e-5, atol=1e-7)


def test_trackers_do_not_change_training():
    small = load_dataset("digits", train_size=400)
    states = []
    for hooks in ([], make_trackers("online") + make_trackers("checkpoint")):
        torch.manual_seed(0)
        model = create_model("cnn-small", small.card, bn=True, width=0.5)
        fit(model, small, _standard(), _cfg(model="cnn-small", epochs=2, momentum=0.9),
            hooks=hooks)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_training_dynamics_on_hand_made_logits():
    split = Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0]),
                  torch.tensor([30, 10, 20]))
    t = TrainingDynamicsTracker()
    t.on_fit_start(None, types.SimpleNamespace(split=split), _cfg(epochs=4))
    # dataset index 10 (label 1): right, wrong, right, wrong -> 2 forgetting events
    # dataset index 20 (label 0): never right -> 4 (its presentations)
    # dataset index 30 (label 0): always right -> 0
    right10, wrong10 = [0.0, 2.0], [3.0, 1.0]
    for epoch, l10 in enumerate([right10, wrong10, right10, wrong10]):
        idx = torch.tensor([30, 10, 20]) if epoch % 2 else torch.tensor([20, 30, 10])
        rows = {30: [1.0, 0.0], 10: l10, 20: [0.0, 5.0]}
        logits = torch.tensor([rows[int(i)] for i in idx])
        y = torch.tensor([{30: 0, 10: 1, 20: 0}[int(i)] for i in idx])
        out = {"logits": logits, "loss_per_sample": F.cross_entropy(logits, y, reduction="none")}
        t.on_batch_end(None, None, y, idx, out, epoch, 0)
    s = t.scores()  # rows in ascending dataset index: 10, 20, 30
    assert s["forgetting"].tolist() == [2.0, 4.0, 0.0]
    np.testing.assert_allclose(s["aum"], [0.0, 5.0, -1.0])  # margins ±2 average to 0
    ce = lambda z, k: float(F.cross_entropy(torch.tensor([z]), torch.tensor([k])))
    np.testing.assert_allclose(s["loss"], [2 * ce(right10, 1) + 2 * ce(wrong10, 1),
                                           4 * ce([0.0, 5.0], 0), 4 * ce([1.0, 0.0], 0)], rtol=1e-6)
    t2 = TrainingDynamicsTracker()
    t2.load_state_dict(t.state_dict())
    assert all(np.array_equal(v, t2.scores()[k]) for k, v in s.items())


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory, digits):
    """Digits with the labels of a known 10% of the training set changed to another class."""
    rng = np.random.default_rng(0)
    y = digits.train.y.numpy().copy()
    flipped = np.sort(rng.choice(len(y), size=len(y) // 10, replace=False))
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    path = tmp_path_factory.mktemp("noisy") / "noisy.npz"
    io.np_savez(path, x=digits.train.x[:, 0].numpy(), y=y,
                x_test=digits.test.x[:, 0].numpy(), y_test=digits.test.y.numpy())
    mask = np.zeros(len(y), dtype=bool)
    mask[flipped] = True
    return f"npz:{path}", mask


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_label_noise_ranks_hardest_under_every_score(tmp_path, noisy_digits, seed):
    name, flipped = noisy_digits
    # EL2N/GraNd are early-training scores: average the first 3 of 8 epochs, once the model has
    # learned something (the default 10% window is a single epoch on so short a run)
    table = score(_cfg(dataset=name, epochs=8, seed=seed), tmp_path / "run", early_epochs=3)
    assert np.array_equal(table.index, np.arange(len(flipped)))
    auroc = {s: roc_auc_score(flipped, table.get(s)) for s in SCORE_NAMES}
    assert all(v >= 0.9 for v in auroc.values()), auroc


def test_score_file_contents_with_train_size(tmp_path, digits):
    cfg = _cfg(epochs=4, train_size=300)
    table = score(cfg, tmp_path / "run", track_every=2, p="sq")
    loaded = ScoreTable.load(tmp_path / "run" / "scores.npz")
    sample = load_dataset("digits", train_size=300, seed=0).train
    assert np.array_equal(loaded.index, np.sort(sample.index.numpy()))
    assert len(loaded) == 300 and loaded.index.max() < len(digits.train)
    assert np.array_equal(loaded.labels, _by_index(sample.index, sample.y).numpy())
    assert loaded.aign_per_epoch.shape == (300, 2) and loaded.tracked_epochs() == [1, 3]
    assert loaded.features.dtype == np.float16 and loaded.features.shape[0] == 300
    assert loaded.names() == list(SCORE_NAMES)
    assert all(np.isfinite(loaded.get(s)).all() for s in SCORE_NAMES)
    np.testing.assert_allclose(loaded.get("aign"), loaded.aign_per_epoch.mean(1), rtol=1e-6)
    for key, want in dict(mode="checkpoint", p="sq", epochs=4, train_size=300, num_train=1347,
                          fingerprint=digits.fingerprint, dataset="digits", model="mlp").items():
        assert loaded.meta[key] == want, key
    assert loaded.meta["early_epochs"] == [1]
    for s in SCORE_NAMES:
        assert np.array_equal(loaded.get(s), table.get(s))
    for d in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "model.pt", "result.json"):
        assert (tmp_path / "run" / d).is_file()


class _Kill(Hook):
    def on_epoch_end(self, model, epoch):
        if epoch == 2:
            raise RuntimeError("killed")


def _arrays(path):
    return io.np_load(path, "scores")


def test_resume_gives_identical_scores(tmp_path):
    cfg = _cfg(model="cnn-small", model_args={"width": 0.5}, epochs=4, momentum=0.9,
               train_size=400)
    for mode in ("checkpoint", "online"):
        full, cut = tmp_path / f"full-{mode}", tmp_path / f"cut-{mode}"
        score(cfg, full, mode=mode)
        with pytest.raises(RuntimeError, match="killed"):
            score(cfg, cut, mode=mode, hooks=[_Kill()])
        assert io.torch_load(cut / "checkpoint.pt")["epoch"] == 2
        score(cfg, cut, mode=mode, resume=True)
        a, b = _arrays(full / "scores.npz"), _arrays(cut / "scores.npz")
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        again = score(cfg, cut, mode=mode, resume=True)  # finished: the file is just loaded
        assert again.meta == ScoreTable.load(full / "scores.npz").meta
        (cut / "scores.npz").unlink()                   # rebuilt from the checkpoint's trackers
        score(cfg, cut, mode=mode, resume=True)
        c = _arrays(cut / "scores.npz")
        assert sorted(a) == sorted(c) and all(np.array_equal(a[k], c[k]) for k in a)
        with pytest.raises(SamplewiseError, match="mode="):
            score(cfg, cut, mode="online" if mode == "checkpoint" else "checkpoint", resume=True)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(SamplewiseError, match="standard training"):
        score(_cfg(objective="trades"), tmp_path / "a")
    with pytest.raises(SamplewiseError, match="choose from: 2, 1, sq"):
        norm_kind(3)
    with pytest.raises(SamplewiseError, match="unknown scoring mode"):
        score(_cfg(), tmp_path / "b", mode="offline")
    with pytest.raises(SamplewiseError, match="track_every"):
        EvalPassTracker(track_every=0)


def test_score_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    score_cmd.add_arguments(parser)
    fast = ["--set", "eval_n=32", "monitor_steps=0", "eval_steps=1", "progress=false"]
    args = parser.parse_args(["--dataset", "digits", "--model", "mlp", "--epochs", "2",
                              "--train-size", "200", "--mode", "online", "--p", "1",
                              "--out", str(tmp_path / "a"), *fast])
    assert score_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert all(s in text for s in SCORE_NAMES) and "scores.npz" in text
    table = ScoreTable.load(tmp_path / "a" / "scores.npz")
    assert table.meta["mode"] == "online" and table.meta["p"] == 1 and len(table) == 200
    assert table.aign_per_epoch.shape == (200, 2)


def test_score_cli_subprocess(tmp_path):
    src = str(Path(samplewise.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "samplewise", "-q", "score", "--dataset", "digits", "--epochs",
           "2", "--model", "mlp", "--train-size", "150", "--out", str(tmp_path / "r"),
           "--set", "eval_n=32", "monitor_steps=0", "eval_steps=1", "progress=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "aign" in done.stdout and len(ScoreTable.load(tmp_path / "r" / "scores.npz")) == 150


def test_score_cli_refuses_adversarial_objective(tmp_path, capsys):
    from samplewise.cli import main
    assert main(["score", "--epochs", "1", "--out", str(tmp_path / "x"),
                 "--set", "objective=trades"]) == 2
    assert "standard training" in capsys.readouterr().err


def test_untracked_indices_are_refused_now_on_the_cpu_and_at_epoch_end_when_deferred():
    """On the CPU a batch with an untracked dataset index fails at once; with deferred checks
    (the default off the CPU, where a per-step check would sync) it fails at the epoch end."""
    tr = TrainingDynamicsTracker()
    tr._bind(torch.tensor([2, 5, 9]))
    assert tr.rows(torch.tensor([9, 2])).tolist() == [2, 0]
    with pytest.raises(SamplewiseError, match="does not track"):
        tr.rows(torch.tensor([5, 6]))
    tr.defer_checks = True
    tr.rows(torch.tensor([5, 9]))
    tr.check_rows()  # all tracked: nothing to report
    tr.rows(torch.tensor([5, 6]))  # no error yet ...
    tr.rows(torch.tensor([2]))
    with pytest.raises(SamplewiseError, match="does not track"):
        tr.check_rows()  # ... but at the check
    tr.check_rows()  # the flag was consumed
