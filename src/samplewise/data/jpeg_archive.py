"""A class-folder JPEG dataset read from a ``.tar.gz`` archive (or the folder it extracts to),
decoded once and cached as uint8 arrays.

Layout, in the archive or the folder: ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``
(every class in both splits, files numbered 0..n-1 per class). Samples are ordered by class (in
the order given by the caller), then by file number, so the arrays, and the fingerprint made
from them, do not depend on the order of the archive's members or of the file system.

The cache is one uncompressed ``.npz`` per dataset name in :func:`cache_dir`, never in the data
root (which may be read-only or shared). It holds a *key* (the archive's sha256, or the folder's
file list with sizes and mtimes, plus the Pillow and libjpeg versions that decoded it) and a
sha256 *checksum* of the arrays: a changed source, another decoder or a damaged cache file
makes the next load decode again (with a log line) and replace the cache atomically. A cache
that cannot be written is a warning, not an error.

Example:
    >>> source = find_source(Path("data"), "cifar10-jpeg")          # doctest: +SKIP
    >>> x, y, x_test, y_test = load_cached(source, CLASSES, "cifar10-jpeg")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ..errors import SamplewiseError
from ..io import atomic_path, np_load

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
CACHE_FORMAT = 1
MAX_MEMBER_BYTES = 1 << 20   # a CIFAR JPEG is ~1 KB; anything near this is not one
_NAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)
_ARRAYS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path:
    """``$SAMPLEWISE_CACHE``, else ``$XDG_CACHE_HOME/samplewise``, else ``~/.cache/samplewise``.

    Example:
        >>> os.environ["SAMPLEWISE_CACHE"] = "/tmp/swcache"; cache_dir()   # doctest: +SKIP
        PosixPath('/tmp/swcache')
    """
    env = os.environ.get("SAMPLEWISE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "samplewise"


def find_source(root: Path, name: str) -> Path:
    """``root/NAME.tar.gz`` if it exists, else the folder ``root/NAME/``.

    Raises:
        SamplewiseError: neither exists (one line naming the data root and how to set it).
    """
    archive, folder = root / f"{name}.tar.gz", root / name
    if archive.is_file():
        return archive
    if (folder / "train").is_dir():
        return folder
    raise SamplewiseError(f"{name} not found in the data root {root}: put {archive.name} there "
                          f"(or extract it into {folder}/), or point the data root at the folder "
                          "holding it (--set data_root=DIR or SAMPLEWISE_DATA=DIR)")


def _decoder() -> dict:
    import PIL
    from PIL import features

    return {"format": CACHE_FORMAT, "pillow": PIL.__version__,
            "libjpeg": str(features.version("jpg"))}


def source_key(source: Path) -> str:
    """Identity of the source and decoder: changes when the data or the JPEG decoder changes."""
    h = hashlib.sha256(json.dumps(_decoder(), sort_keys=True).encode())
    if source.is_file():
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        for split in SPLITS:
            for f in sorted((source / split).rglob("*")) if (source / split).is_dir() else []:
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _parse(name: str, source: Path, classes: Sequence[str]) -> tuple[str, int, int] | None:
    """``(split, class number, file number)`` of a member path, or None if it is not an image."""
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    if len(parts) != 3 or parts[0] not in SPLITS or parts[2].startswith("."):
        return None
    split, cls, fname = parts
    if not fname.lower().endswith((".jpg", ".jpeg")):
        return None
    if cls not in classes:
        raise SamplewiseError(f"{source}: {split}/{cls}/ is not a class of this dataset "
                              f"(expected {', '.join(classes)})")
    m = _NAME.match(fname)
    if not m:
        raise SamplewiseError(f"{source}: {name}: image files must be named NNNN.jpg")
    return split, classes.index(cls), int(m.group(1))


def read_members(source: Path, classes: Sequence[str]) -> dict[str, dict]:
    """``{split: {(class number, file number): JPEG bytes (archive) or path (folder)}}``."""
    found: dict[str, dict] = {s: {} for s in SPLITS}
    if source.is_file():
        try:
            with tarfile.open(source, "r:gz") as tf:   # not "r|gz": it can miss a cut-off end
                for m in tf:
                    key = _parse(m.name, source, classes) if m.isfile() else None
                    if key is None:
                        continue
                    if m.size > MAX_MEMBER_BYTES:
                        raise SamplewiseError(f"{source}: {m.name} is {m.size} bytes, too large "
                                              "for a small JPEG")
                    found[key[0]][key[1:]] = tf.extractfile(m).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise SamplewiseError(f"{source}: cannot read the archive (damaged or not a .tar.gz: "
                                  f"{str(exc)[:120] or type(exc).__name__}); replace it with a "
                                  "fresh copy") from None
    else:
        for split in SPLITS:
            if (source / split).is_dir():
                for f in (source / split).glob("*/*"):
                    key = _parse(f.relative_to(source).as_posix(), source, classes) \
                        if f.is_file() else None
                    if key is not None:
                        found[split][key[1:]] = f
    for split, items in found.items():
        for k, cls in enumerate(classes):
            nums = sorted(n for c, n in items if c == k)
            if not nums:
                raise SamplewiseError(f"{source}: no images in {split}/{cls}/")
            if nums != list(range(len(nums))):
                missing = sorted(set(range(nums[-1] + 1)) - set(nums))
                raise SamplewiseError(f"{source}: {split}/{cls}/ should hold files numbered 0.."
                                      f"{len(nums) - 1}; missing {missing[0]:04d}.jpg")
    return found


def decode_jpegs(blobs: Sequence[bytes | Path], names: Sequence[str]) -> np.ndarray:
    """JPEG files (bytes or paths) of one size as uint8 ``N x 3 x H x W`` (Pillow, RGB);
    ``names[i]`` names image ``i`` in error messages."""
    from PIL import Image, UnidentifiedImageError

    out, size = None, None
    for i, blob in enumerate(blobs):
        try:
            data = blob.read_bytes() if isinstance(blob, Path) else blob
            with Image.open(io.BytesIO(data)) as img:
                arr = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            raise SamplewiseError(f"{names[i]}: not a readable JPEG") from None
        if out is None:
            size = arr.shape
            out = np.empty((len(blobs), *size), np.uint8)
        elif arr.shape != size:
            raise SamplewiseError(f"{names[i]}: image is {arr.shape[1]}x{arr.shape[0]}, "
                                  f"{names[0]} is {size[1]}x{size[0]} (all must share one size)")
        out[i] = arr
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def decode_source(source: Path, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Decode every image: ``{"x", "y", "x_test", "y_test"}`` in (class, file number) order."""
    found = read_members(source, classes)
    out = {}
    for split, (xk, yk) in zip(SPLITS, (("x", "y"), ("x_test", "y_test"))):
        keys = sorted(found[split])
        names = [f"{source}: {split}/{classes[c]}/{n:04d}.jpg" for c, n in keys]
        out[xk] = decode_jpegs([found[split][k] for k in keys], names)
        out[yk] = np.asarray([c for c, _ in keys], dtype=np.int64)
    if out["x"].shape[1:] != out["x_test"].shape[1:]:
        raise SamplewiseError(f"{source}: test images are {out['x_test'].shape[1:]} but train "
                              f"images are {out['x'].shape[1:]} (C, H, W)")
    return out


def checksum(arrays: dict[str, np.ndarray], key: str) -> str:
    """sha256 over the key and each array's name, dtype, shape and bytes."""
    h = hashlib.sha256(key.encode())
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``path`` holds a sound cache for ``key``, else None (logged why)."""
    if not path.is_file():
        return None
    try:
        data = np_load(path, "cache")
        if not isinstance(data, dict) or not {*_ARRAYS, "key", "checksum"} <= set(data):
            raise SamplewiseError("not a samplewise image cache")
        if str(data["key"]) != key:
            log.info("%s: cache made from another archive or decoder; decoding again", path)
            return None
        arrays = {k: data[k] for k in _ARRAYS}
        if checksum(arrays, key) != str(data["checksum"]):
            raise SamplewiseError("checksum mismatch")
    except SamplewiseError as exc:
        log.warning("%s: damaged cache (%s); decoding again and rebuilding it", path,
                    str(exc).removeprefix(f"{path}: "))
        return None
    return arrays


def write_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically; a failure is logged and otherwise ignored."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.asarray(key), checksum=np.asarray(checksum(arrays, key)),
                         **arrays)
    except OSError as exc:
        log.warning("cannot write the decoded-image cache %s (%s); the next run decodes again "
                    "(set SAMPLEWISE_CACHE to a writable folder)", path, exc)


def load_cached(source: Path, classes: Sequence[str], name: str, *,
                cache: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, x_test, y_test)`` of ``source``, from the cache when it is sound.

    Args:
        source: the archive or folder (see :func:`find_source`).
        classes: class folder names, in label order.
        name: dataset name; the cache is ``cache_dir() / f"{name}.npz"``.
        cache: False decodes without reading or writing the cache.
    """
    path = cache_dir() / f"{name}.npz"
    key = source_key(source)
    arrays = read_cache(path, key) if cache else None
    if arrays is None:
        start = time.perf_counter()
        log.info("decoding %s once (about 20 s for CIFAR-10 on one core)%s", source,
                 f"; cache: {path}" if cache else "")
        arrays = decode_source(source, classes)
        log.info("decoded %d + %d images in %.1f s", len(arrays["y"]), len(arrays["y_test"]),
                 time.perf_counter() - start)
        if cache:
            write_cache(path, key, arrays)
    return tuple(arrays[k] for k in _ARRAYS)


__all__ = ["cache_dir", "checksum", "decode_jpegs", "decode_source", "find_source",
           "load_cached", "read_cache", "read_members", "source_key", "write_cache"]
