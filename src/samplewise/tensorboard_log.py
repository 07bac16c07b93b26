""":class:`TensorBoardHook`: a run's per-epoch metrics as TensorBoard scalars (``RUN/tb/``).

``--tensorboard`` (config key ``tensorboard: true``) on ``train``, ``distill`` and ``score``
adds this hook to the run (:func:`samplewise.runs.run_training`). After every epoch it writes
each number of that epoch's ``metrics.jsonl`` line (loss, accuracies, TAS, learning rate,
seconds, ...) as a scalar named by its key, at step = the line's ``epoch`` (1-based). When the
objective returns per-sample ``weights`` (SAAD and its variants), the epoch's weights also go
into a histogram ``saad/weights``.

It needs the optional ``tensorboard`` package (``pip install 'samplewise[tensorboard]'``);
without it, building the hook raises one :class:`~samplewise.errors.SamplewiseError`.

Example:
    >>> hook = TensorBoardHook("runs/r/tb")
    >>> fit(model, bundle, objective, cfg, out_dir="runs/r", hooks=[hook])   # doctest: +SKIP
    $ tensorboard --logdir runs/r/tb
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import SamplewiseError
from .hooks import Hook

log = logging.getLogger(__name__)

TB_DIR = "tb"
#: the histogram tag of the objective's per-sample weights
WEIGHTS_TAG = "saad/weights"


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SamplewiseError("--tensorboard needs the tensorboard package, which is not "
                              "installed: pip install 'samplewise[tensorboard]'") from None
    return SummaryWriter


class TensorBoardHook(Hook):
    """Writes every epoch's metrics line as scalars, and the epoch's per-sample weights as a
    histogram, into ``log_dir``.

    Args:
        log_dir: the event-file directory (a run's ``tb/``).
        resume: keep the event files already there (a resumed run adds the epochs it runs);
            otherwise earlier event files in ``log_dir`` are removed, as ``fit`` starts
            ``metrics.jsonl`` afresh.
    """

    def __init__(self, log_dir, *, resume: bool = False):
        self._writer_class = _summary_writer()  # fail before the run writes anything
        self.log_dir, self.resume = Path(log_dir), resume
        self.writer = None
        self._weights: list[torch.Tensor] = []

    def on_fit_start(self, model, loader, cfg) -> None:
        if not self.resume and self.log_dir.is_dir():
            for old in self.log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = self._writer_class(log_dir=str(self.log_dir))
        self._weights = []

    def on_batch_end(self, model, x, y, idx, out, epoch, step) -> None:
        w = out.get("weights")
        if w is not None:
            self._weights.append(w.detach().float().flatten().cpu())

    def on_metrics(self, record: dict) -> None:
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), step)
        if self._weights:
            self.writer.add_histogram(WEIGHTS_TAG, torch.cat(self._weights), step)
            self._weights = []
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["TB_DIR", "TensorBoardHook", "WEIGHTS_TAG"]
