"""The hardness atlas and the per-epoch true-class probabilities behind its data map.

The tracked probabilities are checked against the softmax of snapshots of the model taken at
the end of every epoch; the grids against planted scores; the data map against numpy on the
stored matrix; the command's files, its one-line error and an old score file without
probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samplewise.atlas import (GRID_LAYOUT, REGIONS, atlas, data_map, extremes, tile_scale,
                              write_atlas)
from samplewise.cli import main
from samplewise.config import TrainConfig
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.formats.scores import ScoreTable
from samplewise.hardness.scoring import score
from samplewise.models import create_model
from samplewise.hooks import Hook


class _Snapshots(Hook):
    """Keeps a copy of the weights at the end of every epoch."""

    def __init__(self):
        self.states = []

    def on_epoch_end(self, model, epoch):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny checkpoint-mode scoring run on digits (batch norm, so eval mode matters)."""
    out = tmp_path_factory.mktemp("scoring")
    cfg = TrainConfig(dataset="digits", model="cnn-small", model_args={"bn": True}, epochs=2,
                      train_size=200, batch_size=50, lr=0.05, schedule="constant", eval_n=32,
                      eval_steps=1, monitor_steps=0, progress=False)
    snaps = _Snapshots()
    table = score(cfg, out, hooks=[snaps])
    return out, cfg, table, snaps.states


def test_tracked_probabilities_equal_the_softmax_of_each_epochs_model(scored):
    out, cfg, table, states = scored
    bundle = load_dataset("digits", train_size=cfg.train_size, seed=0)
    split = bundle.train.subset(table.index)
    assert table.prob_per_epoch.shape == (len(table), cfg.epochs) == (200, 2)
    assert table.meta["tracked_epochs"] == [0, 1]
    model = create_model(cfg.model, bundle.card, **cfg.model_args).eval()
    x = split.x.float() / 255
    for e, state in enumerate(states):
        model.load_state_dict(state)
        with torch.no_grad():
            p = torch.softmax(model(x), 1)[torch.arange(len(x)), split.y].numpy()
        np.testing.assert_allclose(table.prob_per_epoch[:, e], p, atol=1e-5)
    # the columns differ (the model trains), and the file keeps them
    assert np.abs(table.prob_per_epoch[:, 0] - table.prob_per_epoch[:, 1]).max() > 1e-3
    loaded = ScoreTable.load(out / "scores.npz")
    np.testing.assert_array_equal(loaded.prob_per_epoch, table.prob_per_epoch)


def test_score_file_refuses_probabilities_outside_0_1_or_of_the_wrong_width():
    base = dict(index=np.arange(3), labels=np.zeros(3, int), scores={"aign": np.ones(3)},
                aign_per_epoch=np.ones((3, 2)), meta={"tracked_epochs": [0, 1]})
    with pytest.raises(SamplewiseError, match=r"outside \[0, 1\]"):
        ScoreTable(**base, prob_per_epoch=np.full((3, 2), 1.5))
    with pytest.raises(SamplewiseError, match="one per tracked epoch"):
        ScoreTable(**base, prob_per_epoch=np.full((3, 3), 0.5))


# ----------------------------------------------------------------------------- grids
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Distinct planted scores over the whole digits training set."""
    bundle = load_dataset("digits")
    n = len(bundle.train)
    rng = np.random.default_rng(3)
    order = np.argsort(bundle.train.index.numpy())
    index = bundle.train.index.numpy()[order]
    labels = bundle.train.y.numpy()[order]
    scores = {"aign": rng.permutation(n).astype(np.float32) / n,
              "planted": rng.permutation(n).astype(np.float32)}
    path = tmp_path_factory.mktemp("planted") / "scores.npz"
    ScoreTable(index=index, labels=labels, scores=scores,
               meta={"dataset": "digits", "fingerprint": bundle.fingerprint,
                     "num_train": bundle.index_size}).save(path)
    return path, bundle, index, labels, scores


@pytest.mark.parametrize("k", [8, 3])
def test_grid_shows_exactly_the_k_lowest_and_highest_of_each_class(planted, k):
    path, bundle, index, labels, scores = planted
    res = atlas(path, score="planted", k=k)
    values = scores["planted"]
    assert sorted(res["grid"]) == list(range(10))
    for c in range(10):
        mine = index[labels == c][np.argsort(values[labels == c])]
        assert res["grid"][c]["easy"]["index"] == mine[:k].tolist()   # easiest first
        assert res["grid"][c]["hard"]["index"] == mine[-k:].tolist()  # hardest last
        assert res["grid"][c]["easy"]["value"] == sorted(values[labels == c])[:k]
    # the images are the dataset's own pixels of those samples
    c0 = res["grid"][0]["hard"]
    x = bundle.train.subset(np.array(c0["index"][-1:])).x[0].numpy()
    np.testing.assert_array_equal(res["images"][c0["position"][-1]], x)


def test_small_class_shows_each_sample_once():
    lo, hi = extremes(np.array([5., 1., 4., 2., 3.]), np.zeros(5, int), np.arange(5), 3)[0]
    assert lo.tolist() == [1, 3, 4] and hi.tolist() == [2, 0]
    with pytest.raises(SamplewiseError, match="k must be"):
        extremes(np.ones(3), np.zeros(3, int), np.arange(3), 0)


def test_command_writes_pixel_exact_grid_and_files(planted, tmp_path, capsys):
    path, bundle, index, labels, scores = planted
    out = tmp_path / "atlas"
    assert main(["-q", "analyze", "atlas", "--scores", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no data map" in printed  # the planted file has no probabilities
    assert {p.name for p in out.iterdir()} == {"grid_aign.png", "atlas.json", "atlas.md"}
    summary = json.loads((out / "atlas.json").read_text())
    assert summary["score"] == "aign" and summary["k"] == 8
    # the first tile (class 0, easiest) is the image enlarged in s x s blocks, no smoothing
    from matplotlib.image import imread
    png = imread(out / "grid_aign.png")
    s = tile_scale(8, 8)
    first = summary["grid"]["0"]["easy"]["index"][0]
    img = bundle.train.subset(np.array([first])).x[0, 0].numpy()
    y0, x0 = GRID_LAYOUT["top"], GRID_LAYOUT["margin"]
    tile = np.round(png[y0:y0 + 8 * s, x0:x0 + 8 * s, 0] * 255).astype(int)
    np.testing.assert_array_equal(tile, np.kron(img, np.ones((s, s), dtype=int)))
    md = (out / "atlas.md").read_text()
    assert "grid_aign.png" in md and "No data map" in md


def test_unknown_score_is_one_line_and_writes_nothing(planted, tmp_path, capsys):
    path = planted[0]
    out = tmp_path / "atlas"
    assert main(["-q", "analyze", "atlas", "--scores", str(path), "--out", str(out),
                 "--score", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samplewise: error:")
    assert "nope" in err[0] and "aign" in err[0] and "planted" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- data map
def test_data_map_equals_numpy_on_the_stored_matrix(scored, tmp_path):
    out, cfg, table, _ = scored
    res = atlas(out / "scores.npz", k=2)
    dm = res["datamap"]
    p = ScoreTable.load(out / "scores.npz").prob_per_epoch.astype(np.float64)
    np.testing.assert_allclose(dm["confidence"], p.mean(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dm["variability"], np.sqrt(((p - p.mean(1, keepdims=True)) ** 2)
                                                          .mean(1)), rtol=0, atol=1e-12)
    paths = write_atlas(res, tmp_path)
    assert {q.name for q in paths} == {"grid_aign.png", "datamap.png", "atlas.json", "atlas.md"}
    rd = res["reading"]
    assert set(rd["regions"]["all"]) == set(REGIONS)
    assert abs(sum(rd["regions"]["aign_highest_10"].values()) - 1) < 1e-9
    from scipy.stats import spearmanr
    rho = spearmanr(table.get("aign"), p.mean(1))[0]
    assert abs(rd["spearman"]["aign_confidence"]["rho"] - rho) < 1e-9
    assert f"{rho:+.3f}" in (tmp_path / "atlas.md").read_text()


def test_regions_follow_the_documented_rule():
    # variabilities 0, 0, 0.05, 0.45: the top third (>= 2/3 quantile) is ambiguous
    p = np.array([[0.9, 0.9], [0.2, 0.2], [0.6, 0.7], [0.05, 0.95]])
    conf, var, region = data_map(p)
    np.testing.assert_allclose(conf, [0.9, 0.2, 0.65, 0.5])
    np.testing.assert_allclose(var, [0, 0, 0.05, 0.45])
    assert [REGIONS[r] for r in region] == ["easy-to-learn", "hard-to-learn", "ambiguous",
                                            "ambiguous"]


def test_old_score_file_without_probabilities_still_makes_the_grids(scored, tmp_path):
    out, _, table, _ = scored
    old = ScoreTable.load(out / "scores.npz")
    old.prob_per_epoch = None
    old.save(tmp_path / "old.npz")
    res = atlas(tmp_path / "old.npz", k=2)
    assert res["datamap"] is None and "spearman" not in res["reading"]
    names = {q.name for q in write_atlas(res, tmp_path / "a")}
    assert names == {"grid_aign.png", "atlas.json", "atlas.md"}
    assert "No data map" in (tmp_path / "a" / "atlas.md").read_text()
