"""One writer per run directory: an exclusive OS lock on ``DIR/.lock``.

Every command that writes a run directory (train, distill, score, ``eval --state``, a study
cell, the demo) holds this lock for as long as it writes. It is a ``flock`` on the file
``.lock`` in the directory, so the kernel releases it when the process ends, however it ends
(SIGKILL, a crash, a lost node on a local disk): a stale lock never blocks ``--resume``. The
holder writes ``host`` and ``pid`` into the file once it has the lock; a second process reads
them for its error message and writes nothing.

Within one process the lock is re-entrant (a study cell holds its directory's lock and the
training inside it takes it again). ``.lock`` stays in the directory after the run: removing a
lock file while others may open it would let two processes lock two different files.

NFS: Linux implements ``flock`` on NFS with POSIX byte-range locks, which work across clients
on NFSv4 (locking is part of the protocol) and on NFSv3 when the lock daemon (``lockd``/NLM)
runs. On a mount with ``nolock``, or a server without locking, the lock is only local to each
client: two hosts can then both "hold" it. See docs/reliability.md.

Example:
    >>> with hold("runs/a"):            # raises RunDirLocked if another process holds it
    ...     io.write_text("runs/a/config.yaml", "...")
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from .errors import SamplewiseError

LOCK_FILE = ".lock"

#: directories this process holds: resolved path -> [file descriptor, depth]
_HELD: dict[str, list] = {}


class RunDirLocked(SamplewiseError):
    """Another process holds the run directory's lock."""


def holder_info() -> dict:
    """What a lock holder writes into ``.lock``: host, pid and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe_holder(run_dir) -> str:
    """``host H, pid P`` as read from ``run_dir/.lock`` (``holder unknown`` if unreadable)."""
    path = Path(run_dir) / LOCK_FILE
    for attempt in range(3):  # the holder writes its line just after taking the lock
        try:
            info = json.loads(path.read_text())
            return f"host {info['host']}, pid {info['pid']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05 * (attempt + 1))
    return "holder unknown"


def _flock():
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        return None
    return fcntl


def _acquire(run_dir: Path) -> Optional[int]:
    """Lock ``run_dir/.lock`` (created if missing); the file descriptor, or None if another
    process holds it."""
    fcntl = _flock()
    if fcntl is None:  # pragma: no cover
        return -1
    path = run_dir / LOCK_FILE
    while True:
        # O_CREAT without O_TRUNC: opening a held lock file changes nothing in it
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:  # a refused creator removed the empty directory meanwhile
            run_dir.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise SamplewiseError(f"cannot lock {path}: {exc.strerror}") from None
        try:  # the file we locked must still be the one at the path (not unlinked meanwhile)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _write_holder(fd: int) -> None:
    if fd < 0:  # pragma: no cover
        return
    data = (json.dumps(holder_info()) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextlib.contextmanager
def hold(run_dir, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` (created, with its parents, if missing) for the block.

    Raises :class:`RunDirLocked` naming the directory and the holder if another process holds
    it (``wait=True``: wait for it instead). Re-entrant within a process. If the block raises
    and the directory was created here and holds nothing but ``.lock``, both are removed, so a
    refused command leaves no new directory behind.
    """
    lock = try_hold(run_dir, wait=wait)
    if lock is None:
        raise RunDirLocked(f"{run_dir} is in use by another samplewise process "
                           f"({describe_holder(run_dir)}); wait for it to finish, or stop it "
                           "(its lock is released when it exits)")
    with lock as path:
        yield path


def try_hold(run_dir, *, wait: bool = False) -> Optional[contextlib.AbstractContextManager]:
    """Take the lock of ``run_dir`` now; a context manager that releases it, or None if another
    process holds it (with ``wait=True``, poll until it is free). Used to claim study cells."""
    out = Path(run_dir)
    if out.exists() and not out.is_dir():
        raise SamplewiseError(f"--out {out} exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return _release(out, key, created=False)
    delay = 0.05
    while (fd := _acquire(out)) is None:
        if not wait:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    _write_holder(fd)
    _HELD[key] = [fd, 1]
    return _release(out, key, created=created)


@contextlib.contextmanager
def _release(out: Path, key: str, *, created: bool) -> Iterator[Path]:
    try:
        yield out
    except BaseException:
        if created and _HELD[key][1] == 1:
            _remove_if_empty(out)
        raise
    finally:
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            if entry[0] >= 0:
                os.close(entry[0])  # releases the flock


def _remove_if_empty(out: Path) -> None:
    """Remove a directory this process created if it holds nothing but the lock file."""
    try:
        if [p.name for p in out.iterdir()] == [LOCK_FILE]:
            (out / LOCK_FILE).unlink()
            out.rmdir()
    except OSError:
        pass


def held(run_dir) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return str(Path(run_dir).resolve()) in _HELD
