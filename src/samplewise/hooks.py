"""The hook protocol of the training loop: per-sample callbacks that :func:`samplewise.train.fit`
calls at the start, after each batch and after each epoch, and whose state its checkpoint keeps.

Per-sample trackers (:mod:`samplewise.hardness.trackers`), the transfer history of a distillation
(:mod:`samplewise.transfer`) and the TensorBoard writer are hooks. They depend on this protocol,
not on the loop.
"""

from __future__ import annotations

from torch import nn


class Hook:
    """Per-sample callbacks; ``idx`` are dataset indices, never batch positions."""

    #: set True to have the loop make the batch inputs require grad (online input gradients)
    needs_input_grad = False

    def on_fit_start(self, model: nn.Module, loader, cfg) -> None: ...

    def on_batch_end(self, model, x, y, idx, out: dict, epoch: int, step: int) -> None: ...

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict | None:
        """May return extra metrics for this epoch's metrics line."""

    def on_metrics(self, record: dict) -> None:
        """Sees the epoch's finished metrics line (as written to ``metrics.jsonl``)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...
