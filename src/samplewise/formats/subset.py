"""The subset file: a set of training dataset indices, with a summary beside it.

A subset ``NAME.npy`` holds the indices (1-D int64, sorted, distinct, non-negative). Next to
it, ``NAME.json`` holds a JSON object: ``format`` (``samplewise.subset/1``), ``size``,
``checksum`` (:func:`checksum` of the indices) and whatever the writer adds (``dataset``,
``fingerprint`` of the training set, selector, class histogram...). The summary is optional
when reading: a hand-made ``.npy`` of indices is a valid subset file.

:func:`write_subset` is the one writer and :func:`read_subset` the one reader; no other module
reads or writes these files. Both writes are atomic (:mod:`samplewise.io`), and the checksum
catches a pair left mismatched by a kill between them.

The reader checks a dataset only through the ``bundle`` it is given (duck-typed: ``index_size``,
``train.index``, ``fingerprint``, ``card.name``), so this module stays in the bottom layer.

Example:
    >>> npy, js = write_subset("runs/easycore30/subset.npy", [5, 1, 9], {"selector": "easycore"})
    >>> read_subset("runs/easycore30/subset.npy").indices
    array([1, 5, 9])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SamplewiseError
from ..io import np_load, np_save, write_json

log = logging.getLogger(__name__)

FORMAT = "samplewise.subset/1"


@dataclass(frozen=True)
class SubsetFile:
    """What :func:`read_subset` returns: the indices and the summary (``None`` if absent)."""
    indices: np.ndarray
    summary: dict | None


def summary_path(path: str | os.PathLike) -> Path:
    """The summary beside a subset file: ``NAME.json`` for ``NAME.npy``."""
    return Path(path).with_suffix(".json")


def checksum(indices) -> str:
    """sha256 (16 hex) of the sorted int64 dataset indices of a subset."""
    data = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


def check_indices(indices) -> np.ndarray:
    """``indices`` as int64, checked: 1-D, integers, distinct, non-negative."""
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise SamplewiseError("a selection must be a 1-D array of integer dataset indices")
    if arr.size and (arr.min() < 0 or len(np.unique(arr)) != len(arr)):
        raise SamplewiseError("a selection must hold distinct non-negative dataset indices")
    return arr.astype(np.int64)


def write_subset(path: str | os.PathLike, indices, summary: dict | None = None
                 ) -> tuple[Path, Path]:
    """Write ``indices`` to ``path`` (``.npy``, sorted int64) and ``summary`` next to it
    (``.json``, with ``format``, ``size`` and ``checksum`` added). Returns the two paths.

    Example:
        >>> idx = select(table, "easycore", 0.3)
        >>> write_subset("runs/easycore30/subset.npy", idx, summarize_selection(table, idx))
    """
    path = Path(path)
    indices = np.sort(check_indices(indices))
    record = {"format": FORMAT, **(summary or {}), "size": int(len(indices)),
              "checksum": checksum(indices)}
    np_save(path, indices)
    write_json(summary_path(path), record)
    log.info("wrote selection of %d samples to %s", len(indices), path)
    return path, summary_path(path)


def _read_summary(path: Path) -> dict | None:
    json_path = summary_path(path)
    if not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise SamplewiseError(f"{json_path}: not a valid selection summary ({exc})") from None
    if not isinstance(meta, dict):
        raise SamplewiseError(f"{json_path}: a selection summary must be a JSON object")
    return meta


def read_subset(path: str | os.PathLike, bundle=None) -> SubsetFile:
    """Read and validate a subset file and its summary.

    The array must be 1-D, integer, non-empty, non-negative and unique, and must match the
    summary's checksum when there is one. With a ``bundle`` (:class:`~samplewise.data.DataBundle`)
    the indices must also lie in ``[0, bundle.index_size)`` and in ``bundle.train.index``, and a
    summary's ``fingerprint`` must be the bundle's.

    Example:
        >>> idx = read_subset("coreset.npy", bundle).indices   # doctest: +SKIP
        >>> sub = bundle.train.subset(idx)                     # doctest: +SKIP
    """
    arr = np_load(path, "subset file")
    if not isinstance(arr, np.ndarray):
        raise SamplewiseError(f"{path}: subset file must be a .npy array, not an .npz archive")
    if arr.ndim != 1:
        raise SamplewiseError(f"{path}: subset file must hold a 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SamplewiseError(f"{path}: subset indices must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise SamplewiseError(f"{path}: subset file is empty")
    arr = arr.astype(np.int64)
    high = bundle.index_size if bundle is not None else None
    bad = arr[(arr < 0) | (arr >= high)] if high is not None else arr[arr < 0]
    if bad.size:
        bound = high if high is not None else "∞"
        raise SamplewiseError(f"{path}: {bad.size} subset indices out of range "
                              f"[0, {bound}) (e.g. {int(bad[0])})")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise SamplewiseError(f"{path}: subset indices must be unique; {int((counts > 1).sum())} "
                              f"repeated (e.g. {int(uniq[counts > 1][0])})")
    if bundle is not None:
        missing = arr[~np.isin(arr, bundle.train.index.cpu().numpy())]
        if missing.size:
            raise SamplewiseError(f"{path}: {missing.size} subset indices are not in the loaded "
                                  f"training split (e.g. {int(missing[0])}; was train_size "
                                  "changed?)")
    summary = _read_summary(Path(path))
    if summary is not None and "checksum" in summary and summary["checksum"] != checksum(arr):
        raise SamplewiseError(f"subset {path} does not match its summary {summary_path(path)} "
                              "(an interrupted write?); run samplewise select again")
    fp = (summary or {}).get("fingerprint")
    if bundle is not None and fp is not None and fp != bundle.fingerprint:
        raise SamplewiseError(
            f"subset {path} was selected from {summary.get('dataset') or 'another dataset'} "
            f"(fingerprint {fp}); this run trains on {bundle.card.name} "
            f"(fingerprint {bundle.fingerprint})")
    return SubsetFile(arr, summary)
