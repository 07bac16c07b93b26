"""Graceful preemption: SIGTERM and SIGINT become a stop request that the training loop honours.

Inside :func:`graceful_stop` (``fit`` runs in one when it has an output directory and a single
process; a study runs its cells in one) the two signals only record a request:
:func:`requested` returns the first signal's number. The training loop checks it after every
step; when set, it writes a mid-epoch checkpoint and raises :class:`Preempted`, which the CLI
turns into one line and exit status ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). More
signals while the checkpoint is written are counted and otherwise ignored, so they cannot
interrupt the write. Outside the block the signals keep their usual effect.

Handlers can only be installed from the main thread; elsewhere the block changes nothing.

Example:
    >>> with graceful_stop():
    ...     for step in range(100):
    ...         train_step()
    ...         if requested():
    ...             save(); raise Preempted(requested(), "stopped at step ...")
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state = {"depth": 0, "signum": None, "count": 0, "old": {}}


class Preempted(Exception):
    """A run stopped on a signal after saving what it needs to continue.

    Not a :class:`~samplewise.errors.SamplewiseError` (nothing was wrong): the CLI prints
    ``samplewise: <message>; resume with: <command>`` and exits with :attr:`exit_status`.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(signum, frame) -> None:
    _state["count"] += 1
    if _state["signum"] is None:
        _state["signum"] = signum


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block SIGTERM/SIGINT set :func:`requested` instead of ending the process.

    Nested blocks share one request; the outermost installs and restores the handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"] == 0:
        _state.update(signum=None, count=0,
                      old={s: signal.signal(s, _handler) for s in SIGNALS})
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for s, old in _state["old"].items():
                signal.signal(s, old)
            _state["old"] = {}


def requested() -> Optional[int]:
    """The number of the first stop signal received in the current block (None: none)."""
    return _state["signum"]


def signals_received() -> int:
    """How many stop signals arrived in the current block (the first one and any repeats)."""
    return _state["count"]


def stoppable(fn):
    """Run ``fn`` (:func:`samplewise.train.fit`) inside :func:`graceful_stop` when it writes
    checkpoints (``out_dir`` given) in a single process (``world_size`` 1: under torchrun the
    ranks would have to agree on the step, so the signals keep their usual effect there)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs.get("out_dir") is None or kwargs.get("world_size", 1) != 1:
            return fn(*args, **kwargs)
        with graceful_stop():
            return fn(*args, **kwargs)

    return wrapper
