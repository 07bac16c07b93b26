"""CPU process settings: keep freed tensor memory in the process (glibc ``mallopt``).

A training step allocates and frees the same large activation buffers over and over. By
default glibc serves big blocks with fresh ``mmap`` calls and gives freed memory at the top of
the heap back to the system once more than a threshold is free (a threshold it moves at run
time, up to 32 MB). The next step then touches new pages, and each page costs a fault. On this
project's machine (a virtual machine, where faults are dear) ``samplewise bench --items epoch``
spent 2-9 s of a 25-45 s run in the kernel; with the settings below, under 1 s, and the
epochs ran 6-20% faster (docs/performance.md), for our loop and for the DataLoader +
torchattacks reference alike (the reference runs in the same process). PyTorch's CPU tuning
guide makes the same point with jemalloc or tcmalloc; this needs neither.

:func:`tune_allocator` raises the mmap threshold and the trim threshold, so large blocks come
from the heap and stay there for reuse. The cost is that the process keeps its peak heap size
until it exits, which is what a training run wants. The ``samplewise`` command calls it at
start; ``SAMPLEWISE_MALLOC=default`` in the environment leaves glibc's defaults alone. It does
nothing (and returns False) off Linux or without glibc (e.g. musl).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["tune_allocator", "allocator_state", "ENV"]

log = logging.getLogger(__name__)

ENV = "SAMPLEWISE_MALLOC"
OFF_VALUES = ("default", "off", "0", "no", "false")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # from glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30                      # blocks under 1 GiB come from the heap
TRIM_THRESHOLD = 1 << 30                      # and up to 1 GiB of free top-of-heap is kept
FALLBACK_MMAP_THRESHOLD = 32 << 20            # glibc versions that cap the threshold accept this

_state = {"tuned": False, "why": "not requested"}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune_allocator() -> bool:
    """Apply the settings of the module docstring once per process; True when they are on.

    Example:
        >>> import samplewise.cpu
        >>> samplewise.cpu.tune_allocator()   # on Linux with glibc
        True
    """
    if _state["tuned"]:
        return True
    if os.environ.get(ENV, "").strip().lower() in OFF_VALUES:
        _state["why"] = f"{ENV}={os.environ[ENV]}"
        return False
    libc = _glibc()
    if libc is None:
        _state["why"] = "not Linux with glibc"
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 or \
        libc.mallopt(M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD) == 1
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["tuned"] = ok_mmap and ok_trim
    _state["why"] = "mallopt" if _state["tuned"] else "mallopt refused the settings"
    if not _state["tuned"]:
        log.debug("cpu: %s", _state["why"])
    return _state["tuned"]


def allocator_state() -> str:
    """``"tuned (mallopt)"`` or ``"default (<why>)"``, for run records and the bench JSON."""
    return "tuned (mallopt)" if _state["tuned"] else f"default ({_state['why']})"
