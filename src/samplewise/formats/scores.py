"""The score file: per-sample hardness scores of one training set, in one ``.npz``.

A score file holds, for N scored samples (usually the whole training set):

- ``index`` (int64, N): each sample's index in the FULL training set;
- ``labels`` (int64, N);
- one float32 array (N) per score, named by the score (``aign``, ``el2n``, ``grand``,
  ``forgetting``, ``aum``, ``loss``; any subset). **Higher = harder for every score**;
- optional ``aign_per_epoch`` (N x E, float16/float32): the AIGN at each tracked epoch, so the
  average over any window of epochs can be recomputed (:meth:`ScoreTable.aign_window`);
- optional ``prob_per_epoch`` (N x E, float32): the softmax probability of the true class in the
  same passes as ``aign_per_epoch`` (same columns), the confidence of a data map
  (:mod:`samplewise.atlas`); files written before it was tracked simply lack it;
- optional ``features`` (N x D, float16): penultimate features of the scoring model (used by the
  ``moderate`` and ``kcenter`` selectors);
- ``meta``: a 0-d unicode array holding a JSON object with ``format`` (``samplewise.scores/1``),
  ``dataset``, ``fingerprint`` (16 hex chars, of the full training set), ``num_train``,
  ``model``, ``epochs``, ``seed``, ``mode``, ``p``, ``tracked_epochs``, ``samplewise_version``...

Files are written atomically through :func:`samplewise.io.np_savez` and read without pickles;
any problem on loading is one :class:`~samplewise.errors.SamplewiseError` naming the file.

Example:
    >>> t = ScoreTable(index=np.arange(4), labels=np.array([0, 1, 0, 1]),
    ...                scores={"aign": np.array([0.1, 2.0, 0.3, 0.5])},
    ...                meta={"dataset": "toy", "num_train": 4})
    >>> t.save("scores.npz"); ScoreTable.load("scores.npz").names()
    ['aign']
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_same_run
from ..errors import SamplewiseError
from ..io import np_load, np_savez

log = logging.getLogger(__name__)

FORMAT = "samplewise.scores/1"
SCORE_NAMES = ("aign", "el2n", "grand", "forgetting", "aum", "loss")
RESERVED = ("index", "labels", "aign_per_epoch", "prob_per_epoch", "features", "meta")

# Exceptions a damaged .npz member can raise while being decompressed or parsed.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                struct.error, UnicodeError, NotImplementedError, RuntimeError)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("samplewise")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _array(value: Any, name: str, ndim: int, kinds: str, fail) -> np.ndarray:
    """``value`` as an array of ``ndim`` dimensions whose dtype kind is in ``kinds``."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        fail(f"'{name}' must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.dtype.kind not in kinds:
        fail(f"'{name}' has dtype {arr.dtype}; expected "
             + ("integers" if kinds == "iu" else "real numbers"))
    return arr


def _finite(arr: np.ndarray, name: str, fail) -> None:
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
        fail(f"'{name}' holds a non-finite value (NaN or inf) at flat position {bad}")


@dataclass(eq=False)
class ScoreTable:
    """Per-sample scores of one training set (see the module docstring for the format).

    Attributes:
        index: int64 (N,) dataset indices (index in the full training set), unique.
        labels: int64 (N,) class labels.
        scores: score name -> float32 (N,) array, higher = harder.
        aign_per_epoch: optional (N, E) AIGN at each tracked epoch.
        features: optional (N, D) float16 penultimate features.
        prob_per_epoch: optional (N, E) true-class probability at each tracked epoch.
        meta: JSON-serialisable provenance (dataset, fingerprint, num_train, model, ...).

    Example:
        >>> t = ScoreTable(np.array([5, 9]), np.array([0, 1]), {"el2n": np.array([0.2, 0.9])})
        >>> t.get("el2n").dtype, len(t)
        (dtype('float32'), 2)
    """

    index: np.ndarray
    labels: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    aign_per_epoch: np.ndarray | None = None
    features: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    prob_per_epoch: np.ndarray | None = None

    source = None  # the file a table was loaded from (a plain attribute, not a field)

    def __post_init__(self) -> None:
        self._validate("score table")

    # ------------------------------------------------------------------ validation
    def _validate(self, where: str) -> None:
        """Check every invariant and coerce dtypes; raise ``SamplewiseError("<where>: ...")``."""

        def fail(msg: str):
            raise SamplewiseError(f"{where}: {msg}")

        if not isinstance(self.meta, dict):
            fail("meta must be a JSON object (dict)")
        index = _array(self.index, "index", 1, "iu", fail)
        n = len(index)
        labels = _array(self.labels, "labels", 1, "iu", fail)
        if len(labels) != n:
            fail(f"'labels' has length {len(labels)} but 'index' has {n}")
        big = np.iinfo(np.int64).max
        for name, arr in (("index", index), ("labels", labels)):
            if arr.dtype == np.uint64 and len(arr) and arr.max() > big:
                fail(f"'{name}' holds a value too large for int64")
        if n and labels.min() < 0:
            fail("'labels' holds a negative class")
        if n and index.min() < 0:
            fail(f"'index' holds a negative dataset index ({index.min()})")
        num_train = self.meta.get("num_train")
        if num_train is not None:
            if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < n:
                fail(f"meta 'num_train' must be an integer >= {n}, got {num_train!r}")
            if n and index.max() >= num_train:
                fail(f"'index' holds {index.max()}, outside the training set [0, {num_train})")
        self.index = index.astype(np.int64, copy=False)
        self.labels = labels.astype(np.int64, copy=False)
        if n > 1 and not (self.index[1:] > self.index[:-1]).all():
            s = np.sort(self.index)
            dup = s[1:][s[1:] == s[:-1]]
            if len(dup):
                fail(f"'index' has {len(dup)} duplicate entries (e.g. {dup[0]})")
        if not isinstance(self.scores, dict):
            fail("scores must be a dict of name -> array")
        scores = {}
        for name, values in self.scores.items():
            if not isinstance(name, str) or not name or name in RESERVED:
                fail(f"invalid score name {name!r}")
            arr = _array(values, name, 1, "iuf", fail)
            if len(arr) != n:
                fail(f"score '{name}' has length {len(arr)} but 'index' has {n}")
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float32, copy=False)
            _finite(arr, name, fail)
            scores[name] = arr
        self.scores = scores
        for name in ("aign_per_epoch", "prob_per_epoch", "features"):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = _array(arr, name, 2, "iuf", fail)
            if arr.shape[0] != n or arr.shape[1] < 1:
                fail(f"'{name}' has shape {arr.shape}; expected ({n}, >=1)")
            if arr.dtype not in (np.float16, np.float32):
                with np.errstate(over="ignore"):
                    arr = arr.astype(np.float32)
            _finite(arr, name, fail)
            setattr(self, name, arr)
        tracked = self.meta.get("tracked_epochs")
        if self.aign_per_epoch is not None and tracked is not None:
            if not isinstance(tracked, list) or len(tracked) != self.aign_per_epoch.shape[1]:
                fail(f"meta 'tracked_epochs' must list {self.aign_per_epoch.shape[1]} epochs "
                     f"(one per column of 'aign_per_epoch'), got {tracked!r}")
        if self.prob_per_epoch is not None:
            cols = len(tracked) if isinstance(tracked, list) else (
                None if self.aign_per_epoch is None else self.aign_per_epoch.shape[1])
            if cols is not None and self.prob_per_epoch.shape[1] != cols:
                fail(f"'prob_per_epoch' has {self.prob_per_epoch.shape[1]} columns; expected "
                     f"{cols} (one per tracked epoch)")
            if self.prob_per_epoch.size and (self.prob_per_epoch.min() < 0
                                             or self.prob_per_epoch.max() > 1):
                fail("'prob_per_epoch' holds a value outside [0, 1]")

    @classmethod
    def _trusted(cls, **fields) -> "ScoreTable":
        """Build without re-validating (for sub-tables of an already valid table)."""
        obj = cls.__new__(cls)
        for key, value in fields.items():
            setattr(obj, key, value)
        return obj

    # ------------------------------------------------------------------ file I/O
    def save(self, path: str | Path) -> None:
        """Write the table atomically as one compressed ``.npz`` (no pickles).

        ``meta["format"]`` is set, ``samplewise_version`` filled in if missing, and features
        are stored as float16.

        Example:
            >>> table.save("runs/scores/cifar10.npz")
        """
        self._validate("score table")
        meta = {**self.meta, "format": FORMAT}
        meta.setdefault("samplewise_version", _version())
        arrays = {"index": self.index, "labels": self.labels, **self.scores}
        if self.aign_per_epoch is not None:
            arrays["aign_per_epoch"] = self.aign_per_epoch
        if self.prob_per_epoch is not None:
            arrays["prob_per_epoch"] = self.prob_per_epoch
        if self.features is not None:
            with np.errstate(over="ignore"):
                feats = self.features.astype(np.float16)
            if not np.isfinite(feats).all():
                raise SamplewiseError("score table: 'features' overflow float16 (|x| > 65504); "
                                      "scale them before saving")
            arrays["features"] = feats
        try:
            text = json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SamplewiseError(f"score table: meta is not plain JSON ({exc})") from None
        arrays["meta"] = np.array(text)
        np_savez(path, **arrays)
        log.info("wrote score file %s (%d samples; scores: %s)", path, len(self),
                 ", ".join(self.names()) or "none")

    @classmethod
    def load(cls, path: str | Path) -> "ScoreTable":
        """Read and validate a score file; every problem is one ``SamplewiseError``.

        Example:
            >>> table = ScoreTable.load("runs/scores/cifar10.npz")
            >>> table.get("aign")[:3]
        """
        path = Path(path)
        try:
            arrays = np_load(path, "score file")
        except _READ_ERRORS as exc:
            raise SamplewiseError(f"{path}: cannot read score file ({_first_line(exc)})") from None
        if not isinstance(arrays, dict):
            raise SamplewiseError(f"{path}: not a score file (a single array, not an .npz)")
        where = f"score file {path}"
        meta = _parse_meta(arrays.get("meta"), where)
        for key in ("index", "labels"):
            if key not in arrays:
                raise SamplewiseError(f"{where}: the array '{key}' is missing")
        scores = {k: v for k, v in arrays.items() if k not in RESERVED}
        table = cls._trusted(index=arrays["index"], labels=arrays["labels"], scores=scores,
                             aign_per_epoch=arrays.get("aign_per_epoch"),
                             prob_per_epoch=arrays.get("prob_per_epoch"),
                             features=arrays.get("features"), meta=meta)
        table._validate(where)
        table.source = str(path)
        return table

    @classmethod
    def load_same_run(cls, path: str | Path, wanted: dict, *, extra: tuple = (),
                      remedy: str = "pass --overwrite to score again") -> "ScoreTable":
        """The score file ``path`` if the run recorded in it is ``wanted`` (a config mapping plus
        the ``extra`` keys, :func:`samplewise.config.check_same_run`), else one refusal naming
        every differing key. The recipe is ``meta["config"]``; an older file has its top-level
        meta keys only.

        Example:
            >>> ScoreTable.load_same_run("runs/s/scores.npz", {**to_dict(cfg), "mode": "online"},
            ...                          extra=("mode",))
        """
        table = cls.load(path)
        saved = {**table.meta, **(table.meta.get("config") or {})}
        check_same_run(saved, wanted, where=str(path), extra=extra, remedy=remedy)
        return table

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.index)

    def names(self) -> list[str]:
        """Score names present: the standard ones in canonical order, then others sorted."""
        known = [s for s in SCORE_NAMES if s in self.scores]
        return known + sorted(s for s in self.scores if s not in SCORE_NAMES)

    def get(self, name: str) -> np.ndarray:
        """The float32 score array ``name`` (higher = harder).

        Example:
            >>> table.get("el2n")
        """
        if name not in self.scores:
            present = ", ".join(self.names()) or "none"
            raise SamplewiseError(f"the score file has no score '{name}'; present: {present}")
        return self.scores[name]

    def tracked_epochs(self) -> list:
        """Epoch labels of the columns of ``aign_per_epoch`` (``meta["tracked_epochs"]``, or
        the column positions 0..E-1 when the file does not record them)."""
        if self.aign_per_epoch is None:
            return []
        tracked = self.meta.get("tracked_epochs")
        return list(tracked) if tracked is not None else list(range(self.aign_per_epoch.shape[1]))

    def aign_window(self, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """AIGN recomputed as the mean over tracked epochs ``e`` with ``start <= e < stop``.

        ``start``/``stop`` are epoch labels as recorded in ``meta["tracked_epochs"]`` (column
        positions if absent); ``None`` leaves that end open.

        Example:
            >>> early = table.aign_window(0, 10)   # average over the first ten tracked epochs
        """
        if self.aign_per_epoch is None:
            raise SamplewiseError("the score file has no per-epoch AIGN ('aign_per_epoch'); "
                                  "re-run `samplewise score` to keep it")
        epochs = np.asarray(self.tracked_epochs(), dtype=np.float64)
        cols = np.ones(len(epochs), dtype=bool)
        if start is not None:
            cols &= epochs >= start
        if stop is not None:
            cols &= epochs < stop
        if not cols.any():
            raise SamplewiseError(f"no tracked epoch in the window [{start}, {stop}); "
                                  f"tracked epochs: {self.tracked_epochs()}")
        window = self.aign_per_epoch[:, cols].astype(np.float64)
        return window.mean(axis=1).astype(np.float32)

    def check_dataset(self, fingerprint: str, name: str | None = None) -> None:
        """Raise unless this table was computed on the training set with ``fingerprint``.

        Example:
            >>> table.check_dataset(bundle.fingerprint, bundle.card.name)
        """
        mine = self.meta.get("fingerprint")
        if mine is None:
            log.warning("score file records no dataset fingerprint; cannot check it matches %s",
                        name or fingerprint)
            return
        if mine != fingerprint:
            raise SamplewiseError(
                f"score file {self.source or '(in memory)'} was computed on dataset "
                f"{self.meta.get('dataset', '?')} (fingerprint {mine}); "
                f"this run uses {name or '?'} (fingerprint {fingerprint})")

    def take(self, positions: np.ndarray) -> "ScoreTable":
        """The sub-table of rows ``positions`` (positions into this table, not dataset indices)."""
        pos = np.asarray(positions, dtype=np.int64)
        sub = lambda a: None if a is None else a[pos]  # noqa: E731
        table = ScoreTable._trusted(index=self.index[pos], labels=self.labels[pos],
                                    scores={k: v[pos] for k, v in self.scores.items()},
                                    aign_per_epoch=sub(self.aign_per_epoch),
                                    prob_per_epoch=sub(self.prob_per_epoch),
                                    features=sub(self.features), meta=self.meta)
        table.source = self.source
        return table

    def as_dict(self) -> dict[str, np.ndarray]:
        """Table-like columns: ``index``, ``label`` and one column per score (no pandas).

        Example:
            >>> cols = table.as_dict(); cols["index"][:3], cols["aign"][:3]
        """
        return {"index": self.index, "label": self.labels,
                **{name: self.scores[name] for name in self.names()}}

    def to_rows(self) -> list[dict]:
        """One plain dict per sample: ``{"index": ..., "label": ..., <score>: ...}``."""
        cols = {k: v.tolist() for k, v in self.as_dict().items()}
        return [dict(zip(cols, values)) for values in zip(*cols.values())]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-score ``mean``, ``std``, ``min`` and ``max`` (``None`` for an empty table).

        Example:
            >>> table.summary()["aign"]["mean"]
        """
        out = {}
        for name in self.names():
            v = self.scores[name].astype(np.float64)
            out[name] = ({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                          "max": float(v.max())} if len(v) else
                         {"mean": None, "std": None, "min": None, "max": None})
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _parse_meta(raw: Any, where: str) -> dict:
    """The ``meta`` array -> dict, checking the format tag."""
    if raw is None:
        raise SamplewiseError(f"{where}: not a samplewise score file (no 'meta' array)")
    if not isinstance(raw, np.ndarray) or raw.ndim != 0 or raw.dtype.kind != "U":
        raise SamplewiseError(f"{where}: 'meta' must be a 0-d unicode array holding JSON")
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, RecursionError) as exc:
        raise SamplewiseError(f"{where}: 'meta' is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(meta, dict):
        raise SamplewiseError(f"{where}: 'meta' must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise SamplewiseError(f"{where}: unsupported format {meta.get('format')!r} "
                              f"(expected {FORMAT!r})")
    return meta
