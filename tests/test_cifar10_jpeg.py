"""The ``cifar10-jpeg`` dataset: archive and folder forms, order and labels, the cifar10 card,
the decoded-image cache (reuse, damage, change, read-only data root) and the missing-data error.

Most tests use a tiny synthetic archive with the real layout, whose images carry planted
colours (red = class, green = file number, blue = split). The real archive (19 MB, ~20-30 s to
decode on one loaded core) is read from ``$SAMPLEWISE_DATA`` or ``<repo>/../shared/data``; its
fast test reads the member list and decodes a few images, its full load is marked slow.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from samplewise.cli import main
from samplewise.data import DATASETS, fingerprint, load_dataset
from samplewise.data import jpeg_archive
from samplewise.data.datasets import CIFAR10_CLASSES
from samplewise.errors import SamplewiseError

ARCHIVE = "cifar10-jpeg.tar.gz"
N_TRAIN, N_TEST = 6, 2   # per class, in the synthetic archive


def _shared_data() -> Path | None:
    """The folder holding the real archive: $SAMPLEWISE_DATA, else <repo>/../shared/data."""
    repo = Path(__file__).resolve().parents[1]
    for d in (os.environ.get("SAMPLEWISE_DATA"), repo.parent / "shared" / "data"):
        if d and (Path(d) / ARCHIVE).is_file():
            return Path(d)
    return None


REAL = _shared_data()
needs_real = pytest.mark.skipif(REAL is None, reason=f"{ARCHIVE} is in neither $SAMPLEWISE_DATA "
                                "nor <repo>/../shared/data (CI puts shared/ beside the clone)")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test caches into its own folder, never the user's ~/.cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SAMPLEWISE_CACHE", str(d))
    return d


def planted(split: str, k: int, n: int) -> np.ndarray:
    """A 32x32 RGB image: red 20k+20, green 30n+15, blue 60 (train) / 180 (test), plus noise."""
    rng = np.random.default_rng(1000 * k + n + (7 if split == "test" else 0))
    base = np.array([20 * k + 20, 30 * n + 15, 60 if split == "train" else 180], np.int16)
    img = base + rng.integers(-6, 7, size=(32, 32, 3))
    return img.clip(0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def members(change: tuple | None = None) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) of the synthetic layout, shuffled (the reader must sort them)."""
    out = []
    for split, n_per in (("train", N_TRAIN), ("test", N_TEST)):
        for k, cls in enumerate(CIFAR10_CLASSES):
            for n in range(n_per):
                img = planted(split, k, n)
                if change == (split, k, n):
                    img = 255 - img
                out.append((f"{split}/{cls}/{n:04d}.jpg", jpeg_bytes(img)))
    random.Random(0).shuffle(out)
    return out


def write_archive(path: Path, items: list[tuple[str, bytes]], extra_dirs: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        if extra_dirs:   # directory entries, as in the real archive
            for split in ("train", "test"):
                info = tarfile.TarInfo(split)
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_folder(folder: Path, items: list[tuple[str, bytes]]) -> Path:
    for name, data in items:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def synth_items():
    return members()


@pytest.fixture()
def root(tmp_path, synth_items) -> Path:
    """A data root holding a synthetic cifar10-jpeg.tar.gz."""
    write_archive(tmp_path / "data" / ARCHIVE, synth_items)
    return tmp_path / "data"


def build(root: Path):
    """The raw loader, bypassing load_dataset's in-process cache."""
    return DATASETS.build("cifar10-jpeg", root, False)


def pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1)


def extract(archive: Path, names: list[str], tmp: Path) -> list[np.ndarray]:
    """Pillow decodes of the named members, extracted by the system's tar in one pass (not by
    the reader under test; Python's tarfile if there is no tar)."""
    tmp.mkdir(parents=True, exist_ok=True)
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(tmp), *names], check=True)
    else:
        with tarfile.open(archive, "r:gz") as tf:
            for m in tf:
                if m.name in names:
                    (tmp / m.name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / m.name).write_bytes(tf.extractfile(m).read())
    return [pil_decode((tmp / n).read_bytes()) for n in names]


# ----------------------------------------------------------------------------- card

def test_card_equals_the_cifar10_card(root, monkeypatch, tmp_path):
    """The cifar10 card as its own (torchvision) loader builds it, from a fake CIFAR10 class."""
    import torchvision.datasets

    class FakeCIFAR10:
        classes = list(CIFAR10_CLASSES)

        def __init__(self, root, train=True, download=False):
            self.data = np.zeros((20 if train else 10, 32, 32, 3), np.uint8)
            self.targets = [k % 10 for k in range(len(self.data))]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ref = DATASETS.build("cifar10", tmp_path, False).card
    card = build(root).card
    same = ("num_classes", "shape", "mean", "std", "eps", "alpha", "crop_pad", "flip", "classes")
    assert {f: getattr(card, f) for f in same} == {f: getattr(ref, f) for f in same}
    assert card.name == "cifar10-jpeg"
    # and the values are CIFAR-10's published defaults (not two copies of one mistake)
    assert (card.eps, card.alpha, card.crop_pad, card.flip) == (8 / 255, 2 / 255, 4, True)
    assert card.mean == (0.4914, 0.4822, 0.4465) and card.std == (0.2470, 0.2435, 0.2616)
    assert card.classes[0] == "airplane" and card.classes[-1] == "truck"


# ----------------------------------------------------------------------------- content

def test_order_labels_and_pixels_of_the_synthetic_archive(root, synth_items):
    raw = build(root)
    assert raw.x.dtype == np.uint8 and raw.x.shape == (10 * N_TRAIN, 3, 32, 32)
    assert raw.x_test.shape == (10 * N_TEST, 3, 32, 32)
    assert raw.y.dtype == np.int64
    assert raw.y.tolist() == [k for k in range(10) for _ in range(N_TRAIN)]
    assert raw.y_test.tolist() == [k for k in range(10) for _ in range(N_TEST)]
    blobs = dict(synth_items)
    for x, split, n_per in ((raw.x, "train", N_TRAIN), (raw.x_test, "test", N_TEST)):
        for row in range(len(x)):
            k, n = divmod(row, n_per)
            # the planted colour says which folder and file the row came from
            mean = x[row].reshape(3, -1).mean(1)
            want = planted(split, k, n).reshape(-1, 3).mean(0)
            assert np.abs(mean - want).max() < 3, (split, k, n, mean, want)
            # and the pixels equal a direct Pillow decode of that member
            name = f"{split}/{CIFAR10_CLASSES[k]}/{n:04d}.jpg"
            assert np.array_equal(x[row], pil_decode(blobs[name])), name


def test_folder_form_equals_the_archive(tmp_path, synth_items, root):
    folder = write_folder(tmp_path / "other" / "cifar10-jpeg", synth_items)
    (folder / "README.txt").write_text("ignored")
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    a, b = build(root), build(folder.parent)
    for name in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert fingerprint(a.x, a.y) == fingerprint(b.x, b.y)
    assert jpeg_archive.find_source(folder.parent, "cifar10-jpeg") == folder


def test_archive_is_preferred_over_the_folder(tmp_path, synth_items, root):
    write_folder(root / "cifar10-jpeg", members(change=("train", 0, 0)))
    assert jpeg_archive.find_source(root, "cifar10-jpeg") == root / ARCHIVE
    assert np.array_equal(build(root).x[0], pil_decode(dict(synth_items)["train/airplane/0000.jpg"]))


# ----------------------------------------------------------------------------- cache

def test_cache_is_written_then_used_with_equal_arrays_and_fingerprint(root, cache, monkeypatch):
    first = build(root)
    assert (cache / "cifar10-jpeg.npz").is_file()
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE]   # nothing written to the data

    def no_decode(*a, **k):
        raise AssertionError("decoded again although the cache is sound")

    monkeypatch.setattr(jpeg_archive, "decode_source", no_decode)
    second = build(root)
    monkeypatch.undo()
    monkeypatch.setenv("SAMPLEWISE_CACHE", str(cache))
    uncached = jpeg_archive.load_cached(root / ARCHIVE, CIFAR10_CLASSES, "cifar10-jpeg",
                                        cache=False)
    for k, name in enumerate(("x", "y", "x_test", "y_test")):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
        assert np.array_equal(getattr(first, name), uncached[k]), name
    assert fingerprint(first.x, first.y) == fingerprint(second.x, second.y) \
        == fingerprint(uncached[0], uncached[1])


def _alter_arrays_keep_zip(path: Path) -> None:
    """A well-formed cache whose x no longer matches its stored checksum."""
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["x"][3, 1, 5, 5] ^= 0xFF
    with open(path, "wb") as fh:
        np.savez(fh, **d)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    _flip_byte,
    _alter_arrays_keep_zip,
    lambda p: p.write_bytes(b"not a cache"),
], ids=["truncated", "byte-flipped", "arrays-altered", "garbage"])
def test_damaged_cache_is_detected_and_rebuilt(root, cache, caplog, damage):
    good = build(root)
    path = cache / "cifar10-jpeg.npz"
    damage(path)
    with caplog.at_level(logging.WARNING, logger="samplewise"):
        again = build(root)
    assert any("damaged cache" in r.getMessage() for r in caplog.records), caplog.text
    assert np.array_equal(good.x, again.x) and np.array_equal(good.y, again.y)
    # the rebuilt cache is sound: read back without a warning, equal to the decode
    caplog.clear()
    key = jpeg_archive.source_key(root / ARCHIVE)
    with caplog.at_level(logging.WARNING, logger="samplewise"):
        arrays = jpeg_archive.read_cache(path, key)
    assert arrays is not None and not caplog.records
    assert np.array_equal(arrays["x"], good.x)


def test_changed_archive_rebuilds_the_cache(root, synth_items, cache):
    before = build(root)
    write_archive(root / ARCHIVE, members(change=("train", 2, 1)))
    after = build(root)
    row = 2 * N_TRAIN + 1
    changed = np.flatnonzero((before.x != after.x).reshape(len(before.x), -1).any(1))
    assert changed.tolist() == [row]
    assert fingerprint(before.x, before.y) != fingerprint(after.x, after.y)


def test_read_only_data_root_caches_elsewhere(root, tmp_path, monkeypatch):
    monkeypatch.delenv("SAMPLEWISE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        before = sorted(p.name for p in root.iterdir())
        raw = build(root)
        assert sorted(p.name for p in root.iterdir()) == before
    finally:
        root.chmod(0o755)
    assert (tmp_path / "xdg" / "samplewise" / "cifar10-jpeg.npz").is_file()
    assert raw.x.shape == (10 * N_TRAIN, 3, 32, 32)


def test_unwritable_cache_is_a_warning_not_an_error(root, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SAMPLEWISE_CACHE", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level(logging.WARNING, logger="samplewise"):
        raw = build(root)
    assert raw.x.shape[0] == 10 * N_TRAIN
    assert any("cannot write the decoded-image cache" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- load_dataset

def test_train_size_is_a_stratified_sample_with_dataset_indices(root):
    full = load_dataset("cifar10-jpeg", root=root)
    sub = load_dataset("cifar10-jpeg", root=root, train_size=20, seed=3)
    assert full.fingerprint == sub.fingerprint and sub.index_size == 10 * N_TRAIN
    assert torch.bincount(sub.train.y, minlength=10).tolist() == [2] * 10
    assert torch.equal(sub.train.x, full.train.x[sub.train.index])
    assert torch.equal(sub.train.y, full.train.y[sub.train.index])
    assert torch.equal(sub.test.x, full.test.x)
    again = load_dataset("cifar10-jpeg", root=root, train_size=20, seed=3)
    assert torch.equal(again.train.index, sub.train.index)
    other = load_dataset("cifar10-jpeg", root=root, train_size=20, seed=4)
    assert not torch.equal(other.train.index, sub.train.index)


# ----------------------------------------------------------------------------- errors

def test_missing_data_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    code = main(["-q", "train", "--dataset", "cifar10-jpeg", "--model", "cnn-small", "--epochs",
                 "1", "--set", "data_root=empty", "--out", "run"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.splitlines() == [
        "samplewise: error: cifar10-jpeg not found in the data root empty: put "
        "cifar10-jpeg.tar.gz there (or extract it into empty/cifar10-jpeg/), or point the data "
        "root at the folder holding it (--set data_root=DIR or SAMPLEWISE_DATA=DIR)"]
    assert not (tmp_path / "run").exists()


def _drop(items, name):
    return [(n, b) for n, b in items if n != name]


@pytest.mark.parametrize("make, message", [
    (lambda it: _drop(it, "train/cat/0002.jpg"),
     "train/cat/ should hold files numbered 0..4; missing 0002.jpg"),
    (lambda it: _drop(it, "test/truck/0000.jpg") + [],
     "test/truck/ should hold files numbered 0..0; missing 0000.jpg"),
    (lambda it: [(n, b) for n, b in it if not n.startswith("test/dog/")],
     "no images in test/dog/"),
    (lambda it: it + [("train/horses/0000.jpg", it[0][1])],
     "train/horses/ is not a class of this dataset"),
    (lambda it: it + [("train/cat/cat-7.jpg", it[0][1])],
     "train/cat/cat-7.jpg: image files must be named NNNN.jpg"),
    (lambda it: [(n, b"\xff\xd8 broken" if n == "train/bird/0001.jpg" else b) for n, b in it],
     "train/bird/0001.jpg: not a readable JPEG"),
], ids=["gap", "gap-at-0", "empty-class", "unknown-class", "bad-name", "bad-jpeg"])
def test_bad_layouts_are_clear_errors(tmp_path, synth_items, make, message):
    write_archive(tmp_path / ARCHIVE, make(list(synth_items)))
    with pytest.raises(SamplewiseError, match=message.replace(".", r"\.")):
        build(tmp_path)


def test_damaged_archive_is_a_clear_error(root):
    data = (root / ARCHIVE).read_bytes()
    (root / ARCHIVE).write_bytes(data[: len(data) // 2])
    with pytest.raises(SamplewiseError, match="cannot read the archive .*replace it with a fresh"):
        build(root)


# ----------------------------------------------------------------------------- the real archive

@needs_real
def test_real_archive_layout_and_a_few_pixels(tmp_path):
    """Member counts and numbering of the real archive; six decoded images equal Pillow's."""
    path = REAL / ARCHIVE
    found = jpeg_archive.read_members(path, CIFAR10_CLASSES)
    for split, n_per in (("train", 5000), ("test", 1000)):
        assert sorted(found[split]) == [(k, n) for k in range(10) for n in range(n_per)]
    picks = [("train", 0, 0), ("train", 3, 4999), ("train", 9, 1234), ("test", 0, 0),
             ("test", 5, 999), ("test", 8, 17)]
    direct = extract(path, [f"{s}/{CIFAR10_CLASSES[k]}/{n:04d}.jpg" for s, k, n in picks],
                     tmp_path)
    got = jpeg_archive.decode_jpegs([found[s][(k, n)] for s, k, n in picks],
                                    [str(p) for p in picks])
    assert got.shape == (6, 3, 32, 32) and got.dtype == np.uint8
    for g, d in zip(got, direct):
        assert np.array_equal(g, d)
    assert len({g.tobytes() for g in got}) == 6


@needs_real
@pytest.mark.slow
def test_real_archive_full_load_and_cache(cache, tmp_path):
    """~30 s decode on one core, then the cached load: counts, labels, fingerprint."""
    first = build(REAL)
    assert first.x.shape == (50000, 3, 32, 32) and first.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(first.y).tolist() == [5000] * 10
    assert np.bincount(first.y_test).tolist() == [1000] * 10
    assert np.all(np.diff(first.y) >= 0)
    rows = [(0, "train", first.x), (27_311, "train", first.x), (9_999, "test", first.x_test)]
    names = [f"{s}/{CIFAR10_CLASSES[r // (5000 if s == 'train' else 1000)]}/"
             f"{r % (5000 if s == 'train' else 1000):04d}.jpg" for r, s, _ in rows]
    for (row, _, x), d in zip(rows, extract(REAL / ARCHIVE, names, tmp_path / "x")):
        assert np.array_equal(x[row], d)
    second = build(REAL)
    assert np.array_equal(first.x, second.x) and np.array_equal(first.x_test, second.x_test)
    assert fingerprint(first.x, first.y) == fingerprint(second.x, second.y)
    sub = load_dataset("cifar10-jpeg", root=REAL, train_size=500, seed=0)
    assert torch.bincount(sub.train.y).tolist() == [50] * 10
    assert sub.fingerprint == fingerprint(first.x, first.y)
