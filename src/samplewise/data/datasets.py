"""The dataset registry and :func:`load_dataset`.

Every entry of :data:`DATASETS` is a *raw loader* ``(root, download) -> RawData`` (prefix entries
``npz:PATH`` / ``folder:PATH`` get ``PATH`` first) returning the full training set and the test
set as uint8 ``N x C x H x W`` numpy arrays plus a :class:`DatasetCard`. Raw loads are cached
in-process, so calling :func:`load_dataset` again (e.g. with another ``train_size``) is cheap.

Example:
    >>> bundle = load_dataset("digits", train_size=500, seed=1)
    >>> bundle.card.shape, len(bundle.train), len(bundle.test)
    ((1, 8, 8), 500, 450)
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from ..errors import SamplewiseError
from ..io import atomic_path
from ..registry import Registry
from .cards import (DataBundle, DatasetCard, Split, fingerprint, make_card, read_npz,
                    split_80_20, stratified_choice)
from .jpeg_archive import find_source, load_cached

log = logging.getLogger(__name__)

DATASETS = Registry("dataset")


class RawData(NamedTuple):
    """What a raw loader returns: the full training set and the test set, uint8 NCHW."""

    card: DatasetCard
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    index: np.ndarray | None = None  # dataset index of each training row (None: 0..N-1)
    index_size: int = 0               # size of the index space (0: N)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$SAMPLEWISE_DATA``, else ``~/.cache/samplewise/data``.

    Example:
        >>> data_root("/tmp/data")
        PosixPath('/tmp/data')
    """
    root = root or os.environ.get("SAMPLEWISE_DATA") or "~/.cache/samplewise/data"
    return Path(root).expanduser()


# --------------------------------------------------------------------------- file readers

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")   # Debian package dataset-fashion-mnist
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
#: the CIFAR-10 card's attack radius and step, augmentation and channel statistics, shared by
#: ``cifar10`` and ``cifar10-jpeg``
CIFAR10_CARD = dict(eps=8 / 255, alpha=2 / 255, crop_pad=4, flip=True,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzipped idx file of uint8 (magic ``0 0 0x08 ndim``, big-endian int32 dims, data)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise SamplewiseError(f"{path}: cannot read gzip idx file ({exc})") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise SamplewiseError(f"{path}: not a uint8 idx file with {ndim} dimensions")
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64)
    if len(raw) - head != int(np.prod(dims)):
        raise SamplewiseError(f"{path}: idx header says {tuple(dims)} but holds "
                              f"{len(raw) - head} bytes")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _tv_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    x = x[:, None] if x.ndim == 3 else (x.transpose(0, 3, 1, 2) if x.shape[-1] == 3 else x)
    y = ds.targets if hasattr(ds, "targets") else ds.labels
    return np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)


def torchvision_arrays(make: Callable[[bool], Any], name: str, root: Path,
                       hint: str | None = None) -> tuple[np.ndarray, ...]:
    """``(x, y, x_test, y_test)`` from ``make(train)`` building a torchvision dataset."""
    try:
        return (*_tv_arrays(make(True)), *_tv_arrays(make(False)))
    except RuntimeError:   # torchvision: "Dataset not found ... use download=True"
        raise SamplewiseError(hint or f"{name} not found under {root}: run with --download "
                              "(download=True) or set SAMPLEWISE_DATA / root to a folder "
                              "holding it") from None
    except (OSError, ImportError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else repr(exc)
        raise SamplewiseError(f"{name}: cannot download or read data under {root} "
                              f"({first})") from None


def read_images(files: list[Path], rgb: bool | None = None) -> np.ndarray:
    """Images of one size as uint8 NCHW; grey (C=1) when every file is grey, unless ``rgb``."""
    from PIL import Image, UnidentifiedImageError

    def read(f: Path, mode: str | None):
        try:
            with Image.open(f) as img:
                return img.size, img.mode, (np.asarray(img.convert(mode)) if mode else None)
        except (OSError, UnidentifiedImageError):
            raise SamplewiseError(f"{f}: not a readable image") from None

    if rgb is None:   # headers only: cheap
        rgb = any(read(f, None)[1] not in ("1", "L") for f in files)
    out, first = [], None
    for f in files:
        size, _, arr = read(f, "RGB" if rgb else "L")
        first = first or size
        if size != first:
            raise SamplewiseError(f"{f}: image size {size} differs from {first} of {files[0]}"
                                  " (all images must share one size)")
        out.append(arr.astype(np.uint8, copy=False))
    x = np.stack(out)
    return x.transpose(0, 3, 1, 2).copy() if rgb else x[:, None].copy()


def _class_files(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for k, c in enumerate(classes):
        fs = sorted(f for f in (folder / c).iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not fs:
            raise SamplewiseError(f"{folder / c}: class folder holds no images "
                                  f"({', '.join(sorted(IMAGE_EXTS))})")
        files += fs
        labels += [k] * len(fs)
    return files, np.asarray(labels, dtype=np.int64)


def read_folder(path: Path) -> tuple:
    """``(x, y, x_test | None, y_test | None, classes)`` from ``PATH/train/<class>/*``."""
    if not (path / "train").is_dir():
        raise SamplewiseError(f"{path}: expected images in {path}/train/<class>/ "
                              "(and optionally test/<class>/)")
    classes = sorted(d.name for d in (path / "train").iterdir() if d.is_dir())
    if not classes:
        raise SamplewiseError(f"{path}/train: no class folders")
    files, y = _class_files(path / "train", classes)
    x, xt, yt = read_images(files), None, None
    if (path / "test").is_dir():
        extra = sorted({d.name for d in (path / "test").iterdir() if d.is_dir()} - set(classes))
        if extra:
            raise SamplewiseError(f"{path}/test: classes {extra} have no training folder")
        present = [c for c in classes if (path / "test" / c).is_dir()]
        tfiles, tlab = _class_files(path / "test", present)
        yt = np.asarray([classes.index(present[k]) for k in tlab], dtype=np.int64)
        xt = read_images(tfiles, rgb=x.shape[1] == 3)
        if xt.shape[1:] != x.shape[1:]:
            raise SamplewiseError(f"{path}: test images are {xt.shape[1:]} but train images are "
                                  f"{x.shape[1:]} (C, H, W)")
    return x, y, xt, yt, classes


def read_tiny_imagenet(root: Path, download: bool) -> tuple:
    """``(x, y, x_val, y_val, wnids)`` from ``root/tiny-imagenet-200``."""
    base = root / "tiny-imagenet-200"
    if not (base / "train").is_dir():
        if not download:
            raise SamplewiseError(f"tiny-imagenet not found in {base}: run with --download or "
                                  f"unzip {TINY_URL} into {root}")
        _download_tiny(root)
    wnids = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    files, labels = [], []
    for k, w in enumerate(wnids):
        fs = sorted((base / "train" / w / "images").glob("*.JPEG"))
        files, labels = files + fs, labels + [k] * len(fs)
    ann, lookup = base / "val" / "val_annotations.txt", {w: k for k, w in enumerate(wnids)}
    if not ann.is_file():
        raise SamplewiseError(f"{ann}: missing (incomplete tiny-imagenet-200 folder)")
    rows = [line.split("\t") for line in ann.read_text().splitlines() if line.strip()]
    if any(len(r) < 2 or r[1] not in lookup for r in rows):
        raise SamplewiseError(f"{ann}: malformed line or unknown class id")
    log.info("reading %d tiny-imagenet images (slow, once per process)", len(files) + len(rows))
    x = read_images(files, rgb=True)
    xt = read_images([base / "val" / "images" / r[0] for r in rows], rgb=True)
    yt = np.asarray([lookup[r[1]] for r in rows], np.int64)
    return x, np.asarray(labels, np.int64), xt, yt, wnids


def _download_tiny(root: Path) -> None:
    """Fetch and unpack Tiny ImageNet (zip written atomically; unpacked, then renamed)."""
    zpath, tmp_dir = root / "tiny-imagenet-200.zip", root / ".tiny-imagenet-200.partial"
    try:
        if not zpath.is_file():
            log.info("downloading %s", TINY_URL)
            with atomic_path(zpath) as tmp:
                urllib.request.urlretrieve(TINY_URL, tmp)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(tmp_dir)
        os.replace(tmp_dir / "tiny-imagenet-200", root / "tiny-imagenet-200")
    except (OSError, zipfile.BadZipFile) as exc:
        raise SamplewiseError(f"tiny-imagenet download failed ({exc}); download {TINY_URL} and "
                              f"unzip it into {root}") from None


# --------------------------------------------------------------------------- registered loaders

@DATASETS.register("digits", help="scikit-learn 8x8 digits (1,347 train / 450 test), no download")
def load_digits_raw(root: Path, download: bool) -> RawData:
    """scikit-learn's 1,797 8x8 handwritten digits, split 1,347/450 (stratified, random_state=0).

    Pixel values 0..16 become uint8 ``round(v * 255 / 16)``. The images are so coarse that one
    grey level is 1/16 of the range; the default radius is eps=0.2 (about three grey levels; PGD
    step 0.05 = eps/4). At eps=0.1 a standard MLP keeps ~58% PGD accuracy and adversarial
    training barely helps, so 0.1 does not separate robust from non-robust models here; at 0.2
    standard training falls to ~1% and PGD-AT keeps ~20% after six epochs.
    No augmentation: a 1-pixel shift is 1/8 of the image and digits are not flip invariant.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = np.round(data.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    y = data.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=450, random_state=0, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    card = make_card("digits", x[tr], [str(k) for k in range(10)], eps=0.2, alpha=0.05,
                     crop_pad=0, flip=False)
    return RawData(card, x[tr], y[tr], x[te], y[te])


@DATASETS.register("fashion-mnist", help="Fashion-MNIST 28x28 grey (apt dataset-fashion-mnist "
                   "or --download)")
def load_fmnist_raw(root: Path, download: bool) -> RawData:
    """Fashion-MNIST (60,000/10,000, 1x28x28): eps 0.1, step 0.025, crop pad 2, flips.

    Read from the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``)
    when present, else through torchvision under ``root``. Horizontal flips keep every label
    (garment and shoe classes are mirror symmetric).
    """
    names = [f"{p}-{k}-idx{d}-ubyte.gz" for p in ("train", "t10k") for k, d in
             (("images", 3), ("labels", 1))]
    if all((FMNIST_DIR / f).is_file() for f in names):
        x, y, xt, yt = (read_idx(FMNIST_DIR / f, 3 if "images" in f else 1) for f in names)
        x, xt, y, yt = x[:, None], xt[:, None], y.astype(np.int64), yt.astype(np.int64)
    else:
        from torchvision.datasets import FashionMNIST

        hint = (f"fashion-mnist not found in {FMNIST_DIR} or under {root}: install it with "
                "'apt-get install dataset-fashion-mnist' or run with --download")
        x, y, xt, yt = torchvision_arrays(lambda train: FashionMNIST(
            str(root), train=train, download=download), "fashion-mnist", root, hint)
    card = make_card("fashion-mnist", x, FMNIST_CLASSES, eps=0.1, alpha=0.025, crop_pad=2,
                     flip=True, mean=(0.2860,), std=(0.3530,))
    return RawData(card, x, y, xt, yt)


def _register_torchvision(name: str, help: str, pick: Callable, classes, **card: Any) -> None:
    """Register a torchvision dataset; ``pick(torchvision.datasets)`` returns its class."""

    def load(root: Path, download: bool) -> RawData:
        import torchvision.datasets as tvd

        cls, seen = pick(tvd), {}

        def make(train: bool):
            split = {"split": "train" if train else "test"} if cls is tvd.SVHN else {"train": train}
            ds = cls(str(root), download=download, **split)
            seen["classes"] = getattr(ds, "classes", None)
            return ds

        x, y, xt, yt = torchvision_arrays(make, name, root)
        return RawData(make_card(name, x, classes or seen["classes"], **card), x, y, xt, yt)

    load.__doc__ = f"{help}: eps {card['eps']:.4g}, step {card['alpha']:.4g}, crop pad " \
                   f"{card['crop_pad']}, flip {card['flip']}."
    DATASETS.register(name, help=help)(load)


# MNIST: Madry et al.'s eps 0.3 / step 0.01 and no augmentation. SVHN: step 1/255 because SVHN
# adversarial training is unstable with larger steps; no flips (digits are not mirror invariant).
_register_torchvision("mnist", "MNIST 28x28 grey via torchvision (--download)",
                      lambda t: t.MNIST, [str(k) for k in range(10)], eps=0.3, alpha=0.01,
                      crop_pad=0, flip=False, mean=(0.1307,), std=(0.3081,))
_register_torchvision("cifar10", "CIFAR-10 32x32 RGB via torchvision (--download)",
                      lambda t: t.CIFAR10, CIFAR10_CLASSES, **CIFAR10_CARD)
_register_torchvision("cifar100", "CIFAR-100 32x32 RGB, 100 classes, via torchvision "
                      "(--download)", lambda t: t.CIFAR100, None, eps=8 / 255, alpha=2 / 255,
                      crop_pad=4, flip=True, mean=(0.5071, 0.4865, 0.4409),
                      std=(0.2673, 0.2564, 0.2762))
_register_torchvision("svhn", "SVHN 32x32 RGB via torchvision (--download)", lambda t: t.SVHN,
                      [str(k) for k in range(10)], eps=8 / 255, alpha=1 / 255, crop_pad=2,
                      flip=False, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))


@DATASETS.register("cifar10-jpeg", help="CIFAR-10 (JPEG q75 copy) from ROOT/cifar10-jpeg.tar.gz "
                   "or its extracted folder ROOT/cifar10-jpeg/, no download")
def load_cifar10_jpeg_raw(root: Path, download: bool) -> RawData:
    """CIFAR-10 re-encoded as JPEG (quality 75): 50,000 train / 10,000 test, 3x32x32.

    Read from ``root/cifar10-jpeg.tar.gz``, else from ``root/cifar10-jpeg/`` (the archive
    extracted: ``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``); nothing is downloaded.
    Labels follow CIFAR-10's class order; samples are ordered by class, then file number. The
    pixels differ slightly from the original binary release (JPEG compression). Decoded once,
    then cached (see :mod:`samplewise.data.jpeg_archive`). The card is the ``cifar10`` card
    (:data:`CIFAR10_CARD`): eps 8/255, step 2/255, crop pad 4, flips, CIFAR-10 mean/std.
    """
    x, y, xt, yt = load_cached(find_source(root, "cifar10-jpeg"), CIFAR10_CLASSES, "cifar10-jpeg")
    return RawData(make_card("cifar10-jpeg", x, CIFAR10_CLASSES, **CIFAR10_CARD), x, y, xt, yt)


@DATASETS.register("tiny-imagenet", help="Tiny ImageNet 64x64 RGB, 200 classes "
                   "(ROOT/tiny-imagenet-200, --download)")
def load_tiny_imagenet_raw(root: Path, download: bool) -> RawData:
    """Tiny ImageNet (100,000 train / 10,000 val as test, 3x64x64, 200 WordNet-id classes):
    eps 8/255, step 2/255, crop pad 8 (SAAD's official code; 1/8 of the side, as CIFAR's 4/32),
    flips."""
    x, y, xt, yt, wnids = read_tiny_imagenet(root, download)
    card = make_card("tiny-imagenet", x, wnids, eps=8 / 255, alpha=2 / 255, crop_pad=8,
                     flip=True, mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821))
    return RawData(card, x, y, xt, yt)


def _split_if_needed(x, y, xt, yt, what: str) -> tuple:
    """No test set: fixed stratified 80/20 split; dataset indices are rows of the source."""
    if xt is not None:
        return x, y, xt, yt, None, 0
    tr, te = split_80_20(y, what)
    return x[tr], y[tr], x[te], y[te], tr, len(y)


@DATASETS.register("folder", prefix=True, help="image folder PATH/train/<class>/*.png "
                   "[PATH/test/<class>/...]; no test dir: stratified 80/20 split")
def load_folder_raw(path: str, root: Path, download: bool) -> RawData:
    """Images in ``PATH/train/<class>/`` (and ``PATH/test/<class>/``), all of one size.

    Without a test folder a fixed stratified 80/20 split is made; dataset indices are positions
    in the sorted list of training files. Card: mean/std from the data, eps 8/255, step 2/255,
    no augmentation (nothing is known about the content).
    """
    x, y, xt, yt, classes = read_folder(Path(path).expanduser())
    x, y, xt, yt, index, size = _split_if_needed(x, y, xt, yt, f"folder {path}")
    card = make_card(f"folder:{path}", x, classes, eps=8 / 255, alpha=2 / 255, crop_pad=0,
                     flip=False)
    return RawData(card, x, y, xt, yt, index, size)


@DATASETS.register("npz", prefix=True, help="arrays x (N,H,W[,C]) uint8, y, optional "
                   "x_test/y_test; no test arrays: stratified 80/20 split")
def load_npz_raw(path: str, root: Path, download: bool) -> RawData:
    """Arrays ``x`` (uint8 N x H x W or N x H x W x C), ``y`` (0..K-1), optional test arrays.

    Without ``x_test``/``y_test`` a fixed stratified 80/20 split is made and a training sample's
    dataset index is its row in ``x``. Card: mean/std from the data, eps 8/255, step 2/255, no
    crop or flip (nothing is known about the content).
    """
    x, y, xt, yt, k = read_npz(Path(path).expanduser())
    x, y, xt, yt, index, size = _split_if_needed(x, y, xt, yt, path)
    card = make_card(f"npz:{path}", x, [str(c) for c in range(k)], eps=8 / 255, alpha=2 / 255,
                     crop_pad=0, flip=False)
    return RawData(card, x, y, xt, yt, index, size)


# --------------------------------------------------------------------------- public API

def list_datasets() -> list[str]:
    """Registered dataset names (prefix entries as ``npz:ARG``).

    Example:
        >>> "digits" in list_datasets()
        True
    """
    return DATASETS.names()


def _stamp(name: str) -> tuple | None:
    """For path-based entries, (resolved path, mtime, size) so an edited file is re-read."""
    _, arg = DATASETS.resolve(name)
    if arg is None:
        return None
    p = Path(arg).expanduser()
    if not p.exists():
        return (str(p),)
    st = p.stat()
    return (str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_raw(name: str, root: str, download: bool, stamp: tuple | None) -> tuple[RawData, str]:
    raw = DATASETS.build(name, Path(root), download)
    fp = fingerprint(raw.x, raw.y)
    log.info("loaded %s: %d train / %d test, shape %s, fingerprint %s", name, len(raw.y),
             len(raw.y_test), raw.card.shape, fp)
    return raw, fp


def load_dataset(name: str, *, root: str | os.PathLike | None = None, download: bool = False,
                 train_size: int | None = None, seed: int = 0) -> DataBundle:
    """Load a registered dataset into memory.

    Args:
        name: a name from :func:`list_datasets` (``"digits"``, ``"cifar10"``, ``"npz:PATH"``...).
        root: data folder for downloadable sets (default ``$SAMPLEWISE_DATA`` or
            ``~/.cache/samplewise/data``).
        download: fetch missing data (otherwise missing data is a :class:`SamplewiseError`).
        train_size: keep a seeded class-stratified sample of this many training samples;
            ``Split.index`` keeps their original dataset indices. The test split is unchanged.
        seed: seed of the ``train_size`` sample.

    Returns:
        A :class:`DataBundle`; its fingerprint identifies the full training set.

    Example:
        >>> b = load_dataset("digits")
        >>> b.train.x.dtype, b.train.x.shape[1:], b.card.eps
        (torch.uint8, torch.Size([1, 8, 8]), 0.1)
    """
    raw, fp = _load_raw(name, str(data_root(root)), bool(download), _stamp(name))
    n = len(raw.y)
    index = raw.index if raw.index is not None else np.arange(n, dtype=np.int64)
    if train_size is None:
        pos = np.arange(n)
    else:
        if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)) \
                or not 1 <= int(train_size) <= n:
            raise SamplewiseError(f"train_size must be an integer in 1..{n} for {name}, "
                                  f"got {train_size!r}")
        pos = stratified_choice(raw.y, int(train_size), seed)
    # copies: the cached arrays must never be shared with (and mutated through) a Split
    train = Split(torch.from_numpy(np.ascontiguousarray(raw.x[pos])),
                  torch.from_numpy(raw.y[pos].astype(np.int64)),
                  torch.from_numpy(index[pos].astype(np.int64)))
    test = Split(torch.from_numpy(raw.x_test.copy()), torch.from_numpy(raw.y_test.astype(np.int64)),
                 torch.arange(len(raw.y_test), dtype=torch.int64))
    return DataBundle(raw.card, train, test, fp, raw.index_size or n)
