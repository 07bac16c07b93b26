"""Tests of samplewise.data: datasets, cards, subsets, npz/folder inputs and the loader."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samplewise.data import (DATASETS, DatasetCard, InMemoryLoader, Split, iter_batches,
                             list_datasets, load_dataset)
from samplewise.data import datasets as ds_module
from samplewise.errors import SamplewiseError
from samplewise.formats.subset import read_subset
from samplewise.io import np_save, np_savez


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def toy_card(crop_pad=0, flip=False, shape=(1, 8, 8)) -> DatasetCard:
    return DatasetCard("toy", 2, shape, (0.5,), (0.25,), 0.1, 0.025, crop_pad, flip, ("a", "b"))


def toy_split(n=64, h=8, w=8, pixel=(4, 4), offset=1000) -> Split:
    """Black images with one bright pixel; dataset indices offset so they differ from rows."""
    x = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    x[:, 0, pixel[0], pixel[1]] = 255
    return Split(x, torch.arange(n) % 2, torch.arange(n) + offset)


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


# ----------------------------------------------------------------------------- datasets

def test_digits_shapes_dtypes_ranges(digits):
    b = digits
    assert (len(b.train), len(b.test)) == (1347, 450)
    assert b.train.x.dtype == torch.uint8 and b.train.x.shape == (1347, 1, 8, 8)
    assert b.train.y.dtype == torch.int64 and b.train.index.dtype == torch.int64
    assert int(b.train.x.max()) == 255 and int(b.train.x.min()) == 0
    assert set(b.train.y.tolist()) == set(range(10)) == set(b.test.y.tolist())
    assert torch.equal(b.train.index, torch.arange(1347))
    assert torch.equal(b.test.index, torch.arange(450))
    card = b.card
    assert (card.num_classes, card.shape, card.eps, card.alpha) == (10, (1, 8, 8), 0.2, 0.05)
    assert (card.crop_pad, card.flip, b.index_size) == (0, False, 1347)
    assert 0 < card.mean[0] < 1 and 0 < card.std[0] < 1


def test_digits_split_is_a_stratified_partition(digits):
    from sklearn.datasets import load_digits

    full = load_digits()
    full_x = np.round(full.images * 255 / 16).astype(np.uint8).reshape(len(full.target), -1)
    rows = lambda x, y: sorted(zip(map(bytes, x.reshape(len(y), -1).numpy()), y.tolist()))
    ours = rows(digits.train.x, digits.train.y) + rows(digits.test.x, digits.test.y)
    # same multiset as the full set: every original sample is used exactly once
    assert sorted(ours) == sorted(zip(map(bytes, full_x), full.target.tolist()))
    frac = np.bincount(full.target, minlength=10) / len(full.target)
    test_counts = np.bincount(digits.test.y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 450 * frac) <= 1.0)


def test_card_roundtrip_through_json(digits):
    d = json.loads(json.dumps(digits.card.to_dict()))
    card = DatasetCard.from_dict(d)
    assert card == digits.card and isinstance(card.shape, tuple) and isinstance(card.classes, tuple)
    with pytest.raises(SamplewiseError, match="missing keys"):
        DatasetCard.from_dict({k: v for k, v in d.items() if k != "eps"})


def test_fingerprint_stable_and_identifies_dataset(digits, tmp_path):
    ds_module._load_raw.cache_clear()
    again = load_dataset("digits")
    assert again.fingerprint == digits.fingerprint and len(digits.fingerprint) == 16
    int(digits.fingerprint, 16)
    # a sub-sample keeps the fingerprint of the full training set
    assert load_dataset("digits", train_size=100).fingerprint == digits.fingerprint
    other = load_dataset(f"npz:{make_npz(tmp_path / 'a.npz')}")
    assert other.fingerprint != digits.fingerprint


def test_cached_arrays_are_not_shared(digits):
    b = load_dataset("digits")
    b.train.x.zero_()
    assert int(load_dataset("digits").train.x.max()) == 255


def test_train_size_stratified_keeps_dataset_indices(digits):
    sub = load_dataset("digits", train_size=200, seed=1)
    assert len(sub.train) == 200 and len(sub.test) == 450
    idx = sub.train.index
    assert len(set(idx.tolist())) == 200 and int(idx.max()) < 1347
    assert torch.equal(sub.train.x, digits.train.x[idx])
    assert torch.equal(sub.train.y, digits.train.y[idx])
    counts = np.bincount(sub.train.y.numpy(), minlength=10)
    expected = 200 * np.bincount(digits.train.y.numpy(), minlength=10) / 1347
    assert np.all(np.abs(counts - expected) < 1.0)
    assert torch.equal(load_dataset("digits", train_size=200, seed=1).train.index, idx)
    assert not torch.equal(load_dataset("digits", train_size=200, seed=2).train.index, idx)
    assert sub.index_size == 1347


@pytest.mark.parametrize("bad", [0, 1348, -5, 2.5, True])
def test_train_size_out_of_range(bad):
    with pytest.raises(SamplewiseError, match="train_size"):
        load_dataset("digits", train_size=bad)


def test_unknown_dataset_lists_choices():
    with pytest.raises(SamplewiseError) as err:
        load_dataset("imagenet-9000")
    msg = str(err.value)
    assert "unknown dataset 'imagenet-9000'" in msg and "digits" in msg and "npz:ARG" in msg
    assert list_datasets() == DATASETS.names() and "fashion-mnist" in list_datasets()


def test_missing_torchvision_data_names_download_option(tmp_path):
    with pytest.raises(SamplewiseError, match="--download"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(SamplewiseError, match="--download"):
        load_dataset("tiny-imagenet", root=tmp_path)


def test_missing_fashion_mnist_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_module, "FMNIST_DIR", tmp_path / "absent")
    with pytest.raises(SamplewiseError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path / "root")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
                    .is_file(), reason="Fashion-MNIST not installed (apt-get install "
                    "dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package():
    b = load_dataset("fashion-mnist", train_size=500)
    assert b.card.shape == (1, 28, 28) and b.card.num_classes == 10 and b.card.flip
    assert len(b.test) == 10_000 and b.test.x.shape == (10_000, 1, 28, 28)
    assert b.index_size == 60_000 and int(b.train.index.max()) < 60_000
    assert np.bincount(b.test.y.numpy()).tolist() == [1000] * 10


def test_torchvision_array_layouts():
    from types import SimpleNamespace as NS

    mnist = NS(data=torch.zeros(4, 28, 28, dtype=torch.uint8), targets=torch.arange(4))
    cifar = NS(data=np.zeros((4, 32, 32, 3), np.uint8), targets=[0, 1, 2, 3])
    svhn = NS(data=np.zeros((4, 3, 32, 32), np.uint8), labels=np.arange(4))
    shapes = [ds_module._tv_arrays(d)[0].shape for d in (mnist, cifar, svhn)]
    assert shapes == [(4, 1, 28, 28), (4, 3, 32, 32), (4, 3, 32, 32)]
    assert ds_module._tv_arrays(cifar)[1].dtype == np.int64


def test_idx_parser_rejects_bad_header(tmp_path):
    import gzip

    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc"))
    with pytest.raises(SamplewiseError, match="header says"):
        ds_module.read_idx(bad, 1)
    with pytest.raises(SamplewiseError, match="not a uint8 idx"):
        ds_module.read_idx(bad, 3)


# ----------------------------------------------------------------------------- subsets

def test_split_subset_by_dataset_index():
    s = toy_split(10, offset=100)
    sub = s.subset(torch.tensor([107, 101]))
    assert sub.index.tolist() == [107, 101] and torch.equal(sub.x, s.x[[7, 1]])
    assert len(s.subset([])) == 0


@pytest.mark.parametrize("bad, match", [([-1], "out of range"), ([101, 101], "unique"),
                                        ([5], "not in this split"), ([100.0], "integers"),
                                        ([[101]], "1-D")])
def test_split_subset_errors(bad, match):
    with pytest.raises(SamplewiseError, match=match):
        toy_split(10, offset=100).subset(np.asarray(bad))


def test_read_subset_valid_and_errors(digits, tmp_path):
    good = tmp_path / "good.npy"
    np_save(good, np.array([5, 3, 1000], dtype=np.int32))
    assert read_subset(good, digits).indices.tolist() == [5, 3, 1000]
    cases = {"dup": (np.array([1, 1]), "unique"), "range": (np.array([1347]), "out of range"),
             "neg": (np.array([-1]), "out of range"), "float": (np.array([1.0]), "integers"),
             "empty": (np.array([], dtype=np.int64), "empty"), "2d": (np.ones((2, 2), int), "1-D")}
    for name, (arr, match) in cases.items():
        np_save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(SamplewiseError, match=match):
            read_subset(tmp_path / f"{name}.npy", digits)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SamplewiseError, match="corrupt.npy"):
        read_subset(corrupt, digits)
    with pytest.raises(SamplewiseError, match="not found"):
        read_subset(tmp_path / "missing.npy", digits)
    small = load_dataset("digits", train_size=50)
    absent = np.setdiff1d(np.arange(1347), small.train.index.numpy())[:3]
    np_save(tmp_path / "absent.npy", absent)
    with pytest.raises(SamplewiseError, match="not in the loaded training split"):
        read_subset(tmp_path / "absent.npy", small)


# ----------------------------------------------------------------------------- npz / folder

def make_npz(path: Path, n=50, k=5, channels=None, test=True, seed=0, **override) -> Path:
    rng = np.random.default_rng(seed)
    shape = (n, 6, 6) if channels is None else (n, 6, 6, channels)
    arrays = {"x": rng.integers(0, 256, shape, dtype=np.uint8), "y": np.arange(n) % k}
    if test:
        arrays.update(x_test=rng.integers(0, 256, (10,) + shape[1:], dtype=np.uint8),
                      y_test=np.arange(10) % k)
    arrays.update(override)
    np_savez(path, **{key: v for key, v in arrays.items() if v is not None})
    return path


def test_npz_with_test_arrays(tmp_path):
    path = make_npz(tmp_path / "d.npz", channels=3)
    b = load_dataset(f"npz:{path}")
    raw = np.load(path)
    assert b.card.shape == (3, 6, 6) and b.card.num_classes == 5 and len(b.test) == 10
    assert (b.card.crop_pad, b.card.flip, b.card.eps) == (0, False, 8 / 255)
    assert torch.equal(b.train.x, torch.from_numpy(raw["x"]).permute(0, 3, 1, 2))
    assert torch.equal(b.train.index, torch.arange(50)) and b.index_size == 50
    mean = raw["x"].reshape(-1, 3).mean(0) / 255
    assert np.allclose(b.card.mean, mean, atol=1e-3)


def test_npz_without_test_arrays_is_stratified_80_20(tmp_path):
    path = make_npz(tmp_path / "d.npz", n=100, k=4, test=False)
    b = load_dataset(f"npz:{path}")
    raw = np.load(path)
    assert (len(b.train), len(b.test), b.index_size) == (80, 20, 100)
    idx = b.train.index.numpy()
    assert torch.equal(b.train.x[:, 0], torch.from_numpy(raw["x"][idx]))  # index = row of x
    assert np.bincount(b.test.y.numpy()).tolist() == [5, 5, 5, 5]
    rest = np.setdiff1d(np.arange(100), idx)
    assert torch.equal(b.test.x[:, 0], torch.from_numpy(raw["x"][rest]))
    assert load_dataset(f"npz:{path}").train.index.tolist() == idx.tolist()


BAD_NPZ = {
    "float x": (dict(x=np.zeros((50, 6, 6), np.float32)), "uint8"),
    "2-D x": (dict(x=np.zeros((50, 36), np.uint8)), "N x H x W"),
    "channels first": (dict(x=np.zeros((50, 3, 6, 6), np.uint8)), "C <= 4"),
    "length": (dict(y=np.arange(49) % 5), "49 labels for 50"),
    "float y": (dict(y=np.zeros(50)), "integer"),
    "negative": (dict(y=np.arange(50) % 5 - 1), "negative"),
    "gap": (dict(y=(np.arange(50) % 5) * 2), "no samples"),
    "test only x": (dict(y_test=None), "both x_test and y_test"),
    "test shape": (dict(x_test=np.zeros((10, 7, 7), np.uint8)), "x_test images"),
    "test label": (dict(y_test=np.full(10, 7)), "y_test has label 7"),
    "missing y": (dict(y=None), "missing array"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_npz_bad_inputs(tmp_path, case):
    override, match = BAD_NPZ[case]
    path = make_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(SamplewiseError, match=match) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_npz_not_an_archive_or_corrupt(tmp_path):
    np_save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(SamplewiseError, match="not an .npz archive"):
        load_dataset(f"npz:{tmp_path / 'a.npy'}")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SamplewiseError, match="c.npz"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")
    with pytest.raises(SamplewiseError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    path = make_npz(tmp_path / "tiny.npz", n=4, k=4, test=False)
    with pytest.raises(SamplewiseError, match="too few"):
        load_dataset(f"npz:{path}")


def write_folder(root: Path, sizes=None, test=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 5),) + ((("test", 2),) if test else ()):
        for c in ("cat", "dog"):
            (root / part / c).mkdir(parents=True)
            for i in range(n):
                size = (sizes or {}).get((part, c, i), (6, 5))
                img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(img).save(root / part / c / f"{i}.png")


def test_folder_dataset(tmp_path):
    write_folder(tmp_path / "f")
    b = load_dataset(f"folder:{tmp_path / 'f'}")
    assert b.card.shape == (3, 5, 6) and b.card.classes == ("cat", "dog")
    assert (len(b.train), len(b.test)) == (10, 4) and b.train.y.tolist() == [0] * 5 + [1] * 5
    write_folder(tmp_path / "g", test=False)
    b = load_dataset(f"folder:{tmp_path / 'g'}")
    assert (len(b.train), len(b.test), b.index_size) == (8, 2, 10)
    write_folder(tmp_path / "h", sizes={("train", "dog", 3): (7, 7)})
    with pytest.raises(SamplewiseError, match="share one size"):
        load_dataset(f"folder:{tmp_path / 'h'}")


# ----------------------------------------------------------------------------- loader

def test_loader_every_index_once_and_matches_split(digits):
    loader = InMemoryLoader(digits.train, batch_size=100, seed=3)
    batches = epoch_batches(loader, 0)
    assert len(batches) == len(loader) == 14
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(1347))
    for x, y, i in batches[:3]:
        assert x.dtype == torch.float32 and torch.equal(x, digits.train.x[i].float() / 255)
        assert torch.equal(y, digits.train.y[i])


def test_loader_reproducible_per_epoch_and_differs_across_epochs():
    split, card = toy_split(100), toy_card(crop_pad=2, flip=True)
    make = lambda: InMemoryLoader(split, batch_size=16, augment=True, card=card, seed=7)
    a, b = make(), make()
    for e in range(3):       # b has run other epochs first: epoch 3 must not depend on that
        epoch_batches(b, e)
    ea, eb = epoch_batches(a, 3), epoch_batches(b, 3)
    assert all(torch.equal(p, q) for ba, bb in zip(ea, eb) for p, q in zip(ba, bb))
    order = lambda batches: torch.cat([bt[2] for bt in batches]).tolist()
    assert order(epoch_batches(a, 4)) != order(ea)
    other_seed = InMemoryLoader(split, batch_size=16, augment=True, card=card, seed=8)
    assert order(epoch_batches(other_seed, 3)) != order(ea)
    unshuffled = InMemoryLoader(split, batch_size=16, shuffle=False)
    assert order(epoch_batches(unshuffled, 5)) == split.index.tolist()


def test_crop_shifts_planted_pixel_by_at_most_pad():
    pad = 2
    loader = InMemoryLoader(toy_split(256), batch_size=64, augment=True,
                            card=toy_card(crop_pad=pad), seed=0)
    shifts = set()
    for x, _, _ in epoch_batches(loader, 0):
        assert x.shape == (64, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
        bright = (x[:, 0] == 1).nonzero()
        assert len(bright) == len(x)                       # the pixel is never lost or doubled
        for r, c in bright[:, 1:].tolist():
            assert abs(r - 4) <= pad and abs(c - 4) <= pad
            shifts.add((r - 4, c - 4))
    assert len(shifts) == (2 * pad + 1) ** 2               # every offset occurs


def test_flip_about_half_and_values_in_range():
    loader = InMemoryLoader(toy_split(1000, pixel=(3, 1)), batch_size=250, augment=True,
                            card=toy_card(flip=True), seed=1)
    flipped = 0
    for x, _, _ in epoch_batches(loader, 0):
        assert x.shape == (250, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
        flipped += int((x[:, 0, 3, 6] == 1).sum())
        assert int((x[:, 0, 3, 1] == 1).sum()) + int((x[:, 0, 3, 6] == 1).sum()) == 250
    assert 400 < flipped < 600


def test_no_augmentation_without_augment_flag():
    split = toy_split(50)
    loader = InMemoryLoader(split, batch_size=50, card=toy_card(crop_pad=2, flip=True))
    x, _, i = next(iter(loader))
    assert torch.equal(x, split.x[i - 1000].float() / 255)


def test_sharding_covers_every_index_with_padding():
    split = toy_split(101, offset=0)
    ranks = [InMemoryLoader(split, batch_size=10, seed=2, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([b[2] for b in epoch_batches(ld, 1)]) for ld in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 6 and [len(s) for s in seen] == [51, 51]
    all_idx = torch.cat(seen).tolist()
    assert set(all_idx) == set(range(101)) and len(all_idx) == 102   # one wrap-around repeat
    # the padding repeats the epoch's first sample, which rank 0 already had
    assert set(seen[0].tolist()) & set(seen[1].tolist()) == {int(seen[0][0])}
    with pytest.raises(SamplewiseError, match="rank"):
        InMemoryLoader(split, batch_size=10, rank=2, world_size=2)


@pytest.mark.parametrize("n, bs, drop_last, world", [(100, 32, False, 1), (100, 32, True, 1),
                                                     (96, 32, True, 1), (7, 32, False, 1),
                                                     (7, 32, True, 1), (101, 8, True, 3)])
def test_len_matches_batches(n, bs, drop_last, world):
    loader = InMemoryLoader(toy_split(n), batch_size=bs, drop_last=drop_last, world_size=world)
    batches = list(loader)
    assert len(batches) == len(loader)
    if drop_last:
        assert all(len(b[0]) == bs for b in batches)


def test_loader_argument_errors():
    with pytest.raises(SamplewiseError, match="card"):
        InMemoryLoader(toy_split(4), batch_size=2, augment=True)
    with pytest.raises(SamplewiseError, match="batch_size"):
        InMemoryLoader(toy_split(4), batch_size=0)


def test_iter_batches_in_order(digits):
    batches = list(iter_batches(digits.test, 128))
    assert [len(b[0]) for b in batches] == [128, 128, 128, 66]
    assert torch.equal(torch.cat([b[2] for b in batches]), digits.test.index)
    assert torch.equal(torch.cat([b[0] for b in batches]), digits.test.x.float() / 255)


def test_card_is_frozen(digits):
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.card.eps = 1.0  # type: ignore[misc]
