"""``TrackerBase``: the plumbing every hardness tracker shares (tracked dataset indices, epoch
schedule, rows of a batch, checked state restore, epoch windows)."""

from __future__ import annotations

from typing import Sequence

import torch

from ...errors import SamplewiseError
from ...hooks import Hook


_UNTRACKED = "a batch holds dataset indices this tracker does not track"


class TrackerBase(Hook):
    """Shared plumbing: the tracked dataset indices (sorted) and the epoch schedule."""

    kind = "tracker"

    def __init__(self, track_every: int = 1):
        if isinstance(track_every, bool) or not isinstance(track_every, int) or track_every < 1:
            raise SamplewiseError(f"track_every must be an integer >= 1, got {track_every!r}")
        self.track_every = track_every
        self.index: torch.Tensor | None = None  # sorted dataset indices, CPU int64
        self._index_on: dict[str, torch.Tensor] = {}
        #: check a batch's indices at once (None: on the CPU, where it costs nothing) or collect
        #: the check on the device and read it once per epoch (:meth:`check_rows`; no sync per step)
        self.defer_checks: bool | None = None
        self._bad_rows: torch.Tensor | None = None

    def tracks(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is tracked: every ``track_every``-th epoch."""
        return (epoch + 1) % self.track_every == 0

    def _bind(self, index: torch.Tensor) -> None:
        index = torch.as_tensor(index, dtype=torch.int64).cpu().sort().values
        if len(index) > 1 and not bool((index[1:] > index[:-1]).all()):
            raise SamplewiseError("tracked samples have duplicate dataset indices")
        self.index, self._index_on = index, {}

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Row of each dataset index in this tracker's arrays (on ``idx``'s device)."""
        if self.index is None:
            raise SamplewiseError(f"{type(self).__name__} is not bound to a training split yet")
        key = str(idx.device)
        if key not in self._index_on:
            self._index_on[key] = self.index.to(idx.device)
        ref = self._index_on[key]
        pos = torch.searchsorted(ref, idx).clamp_(max=len(ref) - 1)
        bad = (ref[pos] != idx).any()
        defer = self.defer_checks if self.defer_checks is not None else idx.device.type != "cpu"
        if defer:
            self._bad_rows = bad if self._bad_rows is None else self._bad_rows | bad
        elif bool(bad):
            raise SamplewiseError(_UNTRACKED)
        return pos

    def check_rows(self) -> None:
        """Raise if any batch since the last check held an untracked index (deferred checks)."""
        bad, self._bad_rows = self._bad_rows, None
        if bad is not None and bool(bad):
            raise SamplewiseError(_UNTRACKED)

    def _check_state(self, state: dict, **expected) -> None:
        """Refuse a saved state from another kind of tracker, setting or training split."""
        for key, want in {"kind": self.kind, **expected}.items():
            if state.get(key) != want:
                raise SamplewiseError(f"cannot resume {type(self).__name__}: the checkpoint has "
                                      f"{key}={state.get(key)!r}, this run {want!r}")
        if self.index is not None and not torch.equal(self.index, state["index"]):
            raise SamplewiseError(f"cannot resume {type(self).__name__}: the checkpoint tracked "
                                  "other samples (different dataset, train_size or subset)")
        self._bind(state["index"])

    @staticmethod
    def _matrix(columns: Sequence[torch.Tensor], n: int) -> torch.Tensor:
        return torch.stack(list(columns), 1) if columns else torch.zeros(n, 0)

    def _window(self, labels: Sequence[int], window: tuple | None) -> list[int]:
        """Column positions whose epoch label lies in ``[start, stop)`` (None: open end)."""
        start, stop = window if window is not None else (None, None)
        cols = [j for j, e in enumerate(labels)
                if (start is None or e >= start) and (stop is None or e < stop)]
        if not cols:
            raise SamplewiseError(f"no tracked epoch in the window [{start}, {stop}); "
                                  f"tracked epochs: {list(labels)}")
        return cols
