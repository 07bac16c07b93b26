"""Vulnerability analysis: batched bisection against a brute-force scan, a planted linear model
whose true L-inf distance to the boundary is known, Spearman and deciles against the written
CSV, the fingerprint check, and the ``analyze vulnerability`` command."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from samplewise.analysis import load_for_scores, pgd_radius, vulnerability, write_vulnerability
from samplewise.attacks import pgd
from samplewise.commands import analyze as analyze_cmd
from samplewise.config import TrainConfig
from samplewise.data import DataBundle, Split, load_dataset
from samplewise.data.cards import fingerprint, make_card
from samplewise.errors import SamplewiseError
from samplewise.evaluate import predict
from samplewise.formats.scores import ScoreTable
from samplewise.hardness.scoring import score


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny scoring run on digits: scores.npz and the scoring model next to it."""
    out = tmp_path_factory.mktemp("scoring")
    cfg = TrainConfig(dataset="digits", model="mlp", epochs=2, train_size=300, batch_size=64,
                      lr=0.05, schedule="constant", eval_n=32, eval_steps=1, monitor_steps=0,
                      progress=False)
    score(cfg, out)
    return out


# ----------------------------------------------------------------------------- bisection
def test_batched_bisection_agrees_with_a_brute_force_scan(scored):
    model, bundle, table = load_for_scores(scored / "scores.npz")
    split = bundle.train.subset(table.index[:64])
    x, y = split.x.float() / 255, split.y
    steps, tol, max_eps, step = 8, 1e-3, 0.6, 0.005
    radius, censored, iters = pgd_radius(model, x, y, max_eps=max_eps, steps=steps, tol=tol,
                                         random_start=False)
    assert iters == 10                                   # ceil(log2(0.6 / 1e-3))
    # brute force: every eps of a fine grid, one sample-independent PGD per eps
    grid = np.round(np.arange(1, int(max_eps / step) + 1) * step, 6)
    first = np.full(len(y), np.inf)
    correct = (predict(model, x) == y).numpy()
    for e in grid[::-1]:
        x_adv = pgd(model, x, y, eps=float(e), alpha=float(e) / 4, steps=steps, random_start=False)
        fooled = (predict(model, x_adv) != y).numpy()
        first[fooled] = e
    first[~correct] = 0.0
    r = radius.numpy()
    broken = np.isfinite(first)
    assert (censored.numpy() == ~broken).mean() >= 0.95
    both = broken & ~censored.numpy()
    assert both.sum() >= 40 and (r[~correct] == 0).all()
    close = np.abs(r[both] - first[both]) <= step + tol
    assert close.mean() >= 0.95, np.c_[r[both], first[both]][~close]
    assert (r <= max_eps).all() and (r[censored.numpy()] == max_eps).all()


class Linear2(nn.Module):
    """A two-class linear model: logit gap ``w . x + b`` (class 1 when positive)."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.head = nn.Linear(w.numel(), 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.stack([torch.zeros_like(w), w]))
            self.head.bias.copy_(torch.tensor([0.0, b]))

    def forward_features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


def _planted():
    """Inputs in [0.25, 0.75] (corners up to 0.2 away stay inside [0, 1]), labels = the model's
    prediction, so every sample is correct and its L-inf distance is |w.x + b| / ||w||_1."""
    g = torch.Generator().manual_seed(0)
    n, shape = 200, (1, 4, 4)
    x8 = torch.randint(64, 192, (n, *shape), generator=g, dtype=torch.int64).to(torch.uint8)
    w = torch.randn(16, generator=g)
    x = x8.float() / 255
    b = -float((x.flatten(1) @ w).median())
    gap = x.flatten(1) @ w + b
    keep = gap.abs() > 1e-3                              # no sample on the boundary itself
    x8, gap = x8[keep], gap[keep]
    y = (gap > 0).long()
    dist = (gap.abs() / w.abs().sum()).double().numpy()
    card = make_card("planted", x8.numpy(), ["neg", "pos"], eps=0.05, alpha=0.0125, crop_pad=0,
                     flip=False)
    idx = torch.arange(len(y))
    train = Split(x8, y, idx)
    bundle = DataBundle(card, train, train, fingerprint(x8.numpy(), y.numpy()))
    table = ScoreTable(index=idx.numpy(), labels=y.numpy(), scores={"aign": 1.0 / dist},
                       meta={"fingerprint": bundle.fingerprint, "dataset": "planted"})
    return Linear2(w, b), bundle, table, dist


def test_planted_linear_model_radius_is_the_true_distance():
    model, bundle, table, dist = _planted()
    eps, max_eps, tol = 0.03, 0.08, 1e-3
    res = vulnerability(model, bundle, table, eps=eps, steps=20, tol=tol, max_eps=max_eps,
                        batch_size=64)
    ps = res["per_sample"]
    r, cens = np.array(ps["radius"]), np.array(ps["censored"], dtype=bool)
    assert res["clean_acc"] == 1.0
    clear = np.abs(dist - max_eps) > 2 * tol              # not right at the search bound
    assert (cens[clear] == (dist[clear] > max_eps)).all() and cens.sum() >= 5
    inside = ~cens
    assert inside.sum() > 100
    # PGD's radius is an upper bound within the bisection tolerance (+ uint8 rounding slack)
    assert (r[inside] >= dist[inside] - 1e-4).all()
    assert (r[inside] <= dist[inside] + tol + 1e-4).all()
    robust = np.array(ps["robust"], dtype=bool)
    assert (robust == (dist > eps)).mean() >= 0.99 and 0.2 < robust.mean() < 0.8
    # planted AIGN = 1 / distance: the harder, the closer; Spearman strongly negative
    assert res["spearman"]["aign_radius"]["rho"] < -0.95
    assert res["spearman"]["aign_success"]["rho"] > 0.5
    dec = res["deciles"]
    assert len(dec) == 10 and dec[0]["mean_radius"] > dec[-1]["mean_radius"]
    assert dec[-1]["robust_acc"] <= dec[0]["robust_acc"]


# ----------------------------------------------------------------------------- files and CLI
def test_written_csv_matches_spearman_and_deciles(scored, tmp_path):
    model, bundle, table = load_for_scores(scored / "scores.npz")
    res = vulnerability(model, bundle, table, n=120, steps=3, tol=5e-3, seed=1)
    paths = write_vulnerability(res, tmp_path)
    assert [p.name for p in paths] == ["vulnerability.json", "vulnerability.csv",
                                       "vulnerability_scatter.png", "vulnerability_deciles.png"]
    with open(tmp_path / "vulnerability.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120 and list(rows[0]) == ["index", "label", "aign", "correct", "robust",
                                                  "radius", "censored"]
    labels = np.array([int(r["label"]) for r in rows])
    assert np.bincount(labels, minlength=10).min() >= 10          # stratified sample
    aign = np.array([float(r["aign"]) for r in rows])
    radius = np.array([float(r["radius"]) for r in rows])
    robust = np.array([int(r["robust"]) for r in rows])
    saved = json.loads((tmp_path / "vulnerability.json").read_text())
    assert saved["spearman"]["aign_radius"]["rho"] == pytest.approx(spearmanr(aign, radius)[0])
    assert saved["spearman"]["aign_success"]["rho"] == pytest.approx(spearmanr(aign, 1 - robust)[0])
    assert saved["robust_acc"] == pytest.approx(robust.mean())
    order = np.argsort(aign, kind="stable")
    first = order[:12]                                            # 120 samples: deciles of 12
    assert saved["deciles"][0]["robust_acc"] == pytest.approx(robust[first].mean())
    assert saved["deciles"][0]["mean_radius"] == pytest.approx(radius[first].mean())
    assert "per_sample" not in saved and saved["settings"]["n"] == 120
    for p in paths[2:]:
        assert p.read_bytes()[:4] == b"\x89PNG"
    # the sample is seeded: the same seed gives the same samples
    again = vulnerability(model, bundle, table, n=120, steps=3, tol=5e-3, seed=1)
    assert again["per_sample"]["index"] == res["per_sample"]["index"]


def test_fingerprint_mismatch_is_refused(scored, tmp_path):
    table = ScoreTable.load(scored / "scores.npz")
    model, bundle, _ = load_for_scores(scored / "scores.npz")
    other = ScoreTable(index=table.index, labels=table.labels, scores=dict(table.scores),
                       meta={**table.meta, "fingerprint": "0123456789abcdef"})
    with pytest.raises(SamplewiseError, match="fingerprint"):
        vulnerability(model, bundle, other, n=10)
    bad = tmp_path / "scores.npz"
    other.save(bad)
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    args = parser.parse_args(["vulnerability", "--scores", str(bad), "--model", str(scored),
                              "--out", str(tmp_path / "v")])
    with pytest.raises(SamplewiseError, match="0123456789abcdef"):
        analyze_cmd.run(args)
    assert not (tmp_path / "v").exists()


def test_analyze_vulnerability_command(scored, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    args = parser.parse_args(["vulnerability", "--scores", str(scored / "scores.npz"), "--n", "40",
                              "--steps", "3", "--tol", "0.01", "--out", str(tmp_path)])
    assert analyze_cmd.run(args) == 0                    # model: the scoring run's model.pt
    text = capsys.readouterr().out
    assert "40 training samples" in text and "spearman aign vs radius" in text
    saved = json.loads((tmp_path / "vulnerability.json").read_text())
    assert saved["settings"]["eps"] == load_dataset("digits").card.eps
    assert saved["settings"]["max_eps"] == pytest.approx(min(4 * saved["settings"]["eps"], 1.0))
    alone = tmp_path / "alone" / "scores.npz"
    alone.parent.mkdir()
    alone.write_bytes((scored / "scores.npz").read_bytes())
    with pytest.raises(SamplewiseError, match="no scoring model"):
        load_for_scores(alone)
