"""Atomic file output and safe, clearly-failing file input.

Every file samplewise writes goes to a temporary name in the same folder, is flushed and fsynced,
and is then renamed over the target: a killed run leaves either the old file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import SamplewiseError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Example:
        >>> with atomic_path("out.npy") as tmp:
        ...     np.save(tmp, np.arange(3))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); give it the mode open() would (0666 & ~umask)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it (once, at import)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text :func:`write_json` writes (numpy, tensors and paths
    converted)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path, obj: Any) -> None:
    write_text(path, json_text(obj))


def write_if_changed(path, data: str | bytes) -> bool:
    """Atomic write unless ``path`` already holds exactly ``data`` (so a rerun keeps mtimes);
    returns whether it wrote."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path)
    if path.is_file() and path.read_bytes() == raw:
        return False
    write_bytes(path, raw)
    return True


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line, rewriting the file atomically (metrics files are small)."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    line = json.dumps(record, default=_json_default) + "\n"
    write_bytes(path, old + line.encode("utf-8"))


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SamplewiseError(f"{path}: not a valid JSON-lines file ({exc.msg})") from None


def torch_save(obj: Any, path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def torch_load(path, what: str = "file", map_location="cpu") -> Any:
    """Load with ``weights_only=True``; a missing, truncated or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise SamplewiseError(f"{what} not found: {path}")
    try:
        _check_zip_crc(path)
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():  # a global weights_only refused: never unpickled
            raise SamplewiseError(f"{path}: refused to load {what}: it holds objects other than "
                                  "tensors and plain data (weights_only=True)") from None
        raise SamplewiseError(f"{path}: cannot read {what} (corrupt, truncated or not a "
                              f"samplewise file: {_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, IndexError, struct.error, zlib.error, UnicodeError,
            MemoryError, OverflowError, RecursionError, NotImplementedError) as exc:
        raise SamplewiseError(f"{path}: cannot read {what} (corrupt, truncated or not a samplewise "
                              f"file: {_reason(exc)})") from None


def _check_zip_crc(path: Path) -> None:
    """torch files are zip archives with a CRC-32 per member, which ``torch.load`` never checks:
    a flipped byte in the weights would load silently. Check them (fast: ~1 GB/s)."""
    if not zipfile.is_zipfile(path):
        return  # legacy (non-zip) format: torch.load reports what it can
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"checksum mismatch in {bad}")


def _reason(exc: BaseException) -> str:
    """A short one-line reason: the first sentence of the message, with the error type when
    the message alone says little (``KeyError: 101``)."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    text = text.split(". ")[0][:160]
    if len(text) < 12:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


def np_save(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def np_savez(path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def np_load(path, what: str = "file") -> Any:
    """``np.load`` without pickles; a missing or corrupt file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise SamplewiseError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as fh:
            # np.load treats any other file as a pickle and says "if you trust the file, use
            # allow_pickle": bad advice for a damaged or foreign file, so check the magic first
            magic = fh.read(6)
            if not (magic.startswith(b"PK\x03\x04") or magic == b"\x93NUMPY"):
                kind = "an empty file" if not magic else "neither a .npy nor a .npz file"
                raise SamplewiseError(f"{path}: cannot read {what} ({kind})")
            fh.seek(0)
            out = np.load(fh, allow_pickle=False)
            if isinstance(out, np.lib.npyio.NpzFile):
                with out:
                    return {k: out[k] for k in out.files}
            return out
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error,
            struct.error, UnicodeError, MemoryError, OverflowError, NotImplementedError) as exc:
        raise SamplewiseError(f"{path}: cannot read {what} ({_reason(exc)})") from None
