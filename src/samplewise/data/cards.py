"""Dataset cards, in-memory splits, the bundle :func:`~samplewise.data.load_dataset` returns, and
the validation of index and array files (subset ``.npy`` files, ``npz:`` datasets).

A *dataset index* is a sample's row in the full training set. It never changes: a training
split sub-sampled with ``train_size`` or a coreset chosen with :meth:`Split.subset` keeps the
original indices in ``Split.index``, so per-sample scores (length ``DataBundle.index_size``,
higher = harder) can always be looked up by index, whatever the batch order.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SamplewiseError
from ..io import np_load


@dataclass(frozen=True)
class DatasetCard:
    """Static facts about a dataset: geometry, normalisation and attack/augmentation defaults.

    Attributes:
        name: registry name (``"cifar10"``, ``"npz:/data/x.npz"``, ...).
        num_classes: number of classes K; labels are ``0..K-1``.
        shape: ``(C, H, W)`` of one image.
        mean, std: per-channel statistics of the [0, 1] images (used inside the model).
        eps, alpha: default L-inf radius and PGD step size in [0, 1] pixel units.
        crop_pad: zero padding for the default random-crop augmentation (0 = no crop).
        flip: whether random horizontal flips are label preserving for this data.
        classes: K class names.

    Example:
        >>> card = DatasetCard("toy", 2, (1, 8, 8), (0.5,), (0.25,), eps=0.1, alpha=0.025,
        ...                    crop_pad=0, flip=False, classes=("a", "b"))
        >>> DatasetCard.from_dict(card.to_dict()) == card
        True
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float
    alpha: float
    crop_pad: int
    flip: bool
    classes: tuple[str, ...]

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetCard":
        """Rebuild a card from :meth:`to_dict` output (lists become tuples again).

        Raises:
            SamplewiseError: if keys are missing or unknown.
        """
        names = {f.name for f in fields(cls)}
        missing, extra = names - set(d), set(d) - names
        if missing or extra:
            raise SamplewiseError(f"bad dataset card: missing keys {sorted(missing)}, "
                                  f"unknown keys {sorted(extra)}")
        return cls(name=str(d["name"]), num_classes=int(d["num_classes"]),
                   shape=tuple(int(v) for v in d["shape"]),
                   mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                   eps=float(d["eps"]), alpha=float(d["alpha"]), crop_pad=int(d["crop_pad"]),
                   flip=bool(d["flip"]), classes=tuple(str(v) for v in d["classes"]))


def as_index_array(values: Any, what: str) -> np.ndarray:
    """A 1-D int64 numpy array from a list, numpy array or tensor of integers."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise SamplewiseError(f"{what} must be a 1-D array of integers, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SamplewiseError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass
class Split:
    """A set of samples held in memory.

    Attributes:
        x: uint8 images, ``N x C x H x W``.
        y: int64 labels, ``N``.
        index: int64 dataset indices, ``N`` (training split: row in the full training set;
            test split: row in the test set).

    Example:
        >>> s = Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0]),
        ...           torch.tensor([10, 11, 12]))
        >>> s.subset([12, 10]).index.tolist()
        [12, 10]
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise SamplewiseError(f"Split.x must be uint8 N x C x H x W, got {self.x.dtype} "
                                  f"{tuple(self.x.shape)}")
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.index.shape != (n,):
            raise SamplewiseError(f"Split sizes differ: x {n}, y {tuple(self.y.shape)}, "
                                  f"index {tuple(self.index.shape)}")
        self.y = self.y.long()
        self.index = self.index.long()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, dataset_indices: Any) -> "Split":
        """The rows whose dataset index is in ``dataset_indices``, in that order.

        Raises:
            SamplewiseError: for non-integer, negative, duplicate or absent indices.
        """
        want = as_index_array(dataset_indices, "subset indices")
        if want.size and want.min() < 0:
            raise SamplewiseError(f"subset index {int(want.min())} is out of range (negative)")
        uniq, counts = np.unique(want, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise SamplewiseError(f"subset indices must be unique; {dup.size} repeated "
                                  f"(e.g. {int(dup[0])})")
        have = self.index.cpu().numpy()
        order = np.argsort(have, kind="stable")
        pos = np.searchsorted(have[order], want)
        pos = np.minimum(pos, max(len(have) - 1, 0))
        found = have[order][pos] == want if len(have) else np.zeros(want.shape, bool)
        if not found.all():
            bad = want[~found]
            raise SamplewiseError(f"{bad.size} subset indices are not in this split "
                                  f"(e.g. {int(bad[0])}; split holds {len(have)} samples)")
        rows = torch.from_numpy(order[pos]).to(self.x.device)
        return Split(self.x[rows], self.y[rows], self.index[rows])


@dataclass
class DataBundle:
    """A dataset ready for training: its card, both splits and a fingerprint.

    Attributes:
        card: the :class:`DatasetCard`.
        train, test: the splits (``train`` possibly sub-sampled, indices preserved).
        fingerprint: 16 hex chars identifying the full training set (x bytes, y bytes, shape).
        index_size: dataset indices lie in ``[0, index_size)``; per-sample score arrays have this
            length. Equals the full training-set size, except for ``npz:`` / ``folder:`` data
            split 80/20 on the fly, where indices are rows of the source array (an addition to
            the architecture contract; 0 means "infer as max index + 1").

    Example:
        >>> bundle = load_dataset("digits")            # doctest: +SKIP
        >>> bundle.card.shape, len(bundle.train)       # doctest: +SKIP
        ((1, 8, 8), 1347)
    """

    card: DatasetCard
    train: Split
    test: Split
    fingerprint: str
    index_size: int = 0

    def __post_init__(self) -> None:
        if self.index_size <= 0 and len(self.train):
            self.index_size = int(self.train.index.max()) + 1


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """First 16 hex chars of sha256 over x bytes, int64 y bytes and the shape.

    Example:
        >>> len(fingerprint(np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1])))
        16
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    h.update(repr(tuple(int(s) for s in x.shape)).encode())
    return h.hexdigest()[:16]


def stratified_choice(y: np.ndarray, n: int, seed: int, min_per_class: int = 0) -> np.ndarray:
    """Sorted positions of a seeded class-stratified sample of ``n`` of the labels ``y``.

    Each class gets its proportional share (largest-remainder rounding), then at least
    ``min_per_class`` samples when it has them (taken from the largest classes).

    Example:
        >>> stratified_choice(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 4, seed=0).size
        4
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    share = n * counts / counts.sum()
    quota = np.floor(share).astype(np.int64)
    rest = np.argsort(-(share - quota), kind="stable")[: n - int(quota.sum())]
    quota[rest] += 1
    for k in np.flatnonzero(quota < np.minimum(min_per_class, counts)):
        while quota[k] < min(min_per_class, counts[k]):
            donor = int(np.argmax(np.where(quota > min_per_class, quota, -1)))
            if quota[donor] <= min_per_class:
                break
            quota[donor] -= 1
            quota[k] += 1
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(y == c), size=int(q), replace=False)
             for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def split_80_20(y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seed 0) stratified 80/20 split keeping every class in the training part."""
    n, k = len(y), int(y.max()) + 1
    n_test = int(round(0.2 * n))
    if n_test < 1 or n - n_test < k:
        raise SamplewiseError(f"{what}: {n} samples are too few for an 80/20 split with {k} "
                              "classes; provide a test set")
    train = stratified_choice(y, n - n_test, seed=0, min_per_class=1)
    return train, np.setdiff1d(np.arange(n), train)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 NCHW images in [0, 1] units (via histograms)."""
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        m = float((p * values).sum())
        s = float(np.sqrt(max((p * values**2).sum() - m * m, 0.0)))
        means.append(round(m, 4))
        stds.append(round(s, 4) if s > 1e-4 else 1.0)  # constant channel: do not divide by ~0
    return tuple(means), tuple(stds)


def make_card(name: str, x: np.ndarray, classes, *, eps: float, alpha: float, crop_pad: int,
              flip: bool, mean=None, std=None) -> DatasetCard:
    """A card for NCHW uint8 data ``x``; mean/std computed from ``x`` unless given."""
    if mean is None:
        mean, std = channel_stats(x)
    return DatasetCard(name=name, num_classes=len(classes),
                       shape=tuple(int(s) for s in x.shape[1:]), mean=tuple(mean),
                       std=tuple(std), eps=float(eps), alpha=float(alpha),
                       crop_pad=int(crop_pad), flip=bool(flip),
                       classes=tuple(str(c) for c in classes))


def _npz_images(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    if a.dtype != np.uint8:
        raise SamplewiseError(f"{path}: '{key}' must be uint8, got {a.dtype}")
    if a.ndim not in (3, 4) or (a.ndim == 4 and not 1 <= a.shape[3] <= 4) or min(a.shape) < 1:
        raise SamplewiseError(f"{path}: '{key}' must be N x H x W or N x H x W x C "
                              f"(C <= 4, N, H, W > 0), got shape {a.shape}")
    return np.ascontiguousarray(a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2))


def _npz_labels(a: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise SamplewiseError(f"{path}: '{key}' must be a 1-D integer array, got "
                              f"{a.dtype} {a.shape}")
    if len(a) != n:
        raise SamplewiseError(f"{path}: '{key}' has {len(a)} labels for {n} images")
    if a.min() < 0:
        raise SamplewiseError(f"{path}: '{key}' has negative label {int(a.min())}")
    # labels are 0..K-1 with every class present in training, so K <= N; a larger label is a
    # mistake (and must neither overflow int64 nor size an array of K entries)
    limit = n if key == "y" else np.iinfo(np.int32).max + 1  # y_test is checked against K later
    if int(a.max()) >= limit:
        bound = f" (K <= the {n} samples)" if key == "y" else ""
        raise SamplewiseError(f"{path}: '{key}' has label {int(a.max())}; labels must be class "
                              f"numbers 0..K-1{bound}")
    return a.astype(np.int64)


def read_npz(path: Path) -> tuple:
    """``(x, y, x_test | None, y_test | None, K)`` from a validated ``.npz`` file."""
    data = np_load(path, "npz file")
    if not isinstance(data, dict):
        raise SamplewiseError(f"{path}: not an .npz archive (expected arrays x, y "
                              "[, x_test, y_test])")
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise SamplewiseError(f"{path}: missing array(s) {missing}; found {sorted(data)}")
    if ("x_test" in data) != ("y_test" in data):
        raise SamplewiseError(f"{path}: give both x_test and y_test, or neither")
    x = _npz_images(data["x"], "x", path)
    y = _npz_labels(data["y"], "y", len(x), path)
    xt = yt = None
    if "x_test" in data:
        xt = _npz_images(data["x_test"], "x_test", path)
        yt = _npz_labels(data["y_test"], "y_test", len(xt), path)
        if xt.shape[1:] != x.shape[1:]:
            raise SamplewiseError(f"{path}: x_test images are {xt.shape[1:]} but x images are "
                                  f"{x.shape[1:]} (C, H, W)")
    k = int(y.max()) + 1
    absent = np.setdiff1d(np.arange(k), y)
    if absent.size:
        raise SamplewiseError(f"{path}: labels must be 0..K-1 with every class in the training "
                              f"set; class(es) {absent[:5].tolist()} have no samples")
    if yt is not None and yt.max() >= k:
        raise SamplewiseError(f"{path}: y_test has label {int(yt.max())} but training labels "
                              f"stop at {k - 1}")
    return x, y, xt, yt, k


__all__ = ["DatasetCard", "Split", "DataBundle", "fingerprint", "stratified_choice",
           "as_index_array", "channel_stats", "make_card", "read_npz",
           "split_80_20"]
