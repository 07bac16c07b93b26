""":class:`AIGNMeter`: per-sample AIGN in any training loop, keyed by dataset index.

The trackers in :mod:`samplewise.hardness.trackers` are hooks of :func:`samplewise.train.fit`;
the meter is the same measurement for a hand-written loop. It keeps one column per closed epoch
(the mean of the norms recorded for each sample during that epoch, NaN if it was not seen) and
reports the mean over the closed epochs, as the score file's ``aign`` is.

Two ways to feed it, matching the two modes of ``samplewise score``:

* ``update(idx, model, x, y)`` computes the norms itself (:func:`input_grad_norms`: eval mode,
  one batched backward). Called on the clean, unaugmented training inputs after each epoch, it
  gives ``samplewise score --mode checkpoint`` (the default).
* ``update_from_grad(idx, grad)`` reads an input gradient the loop already computed (the
  training step's ``x.grad``), like ``samplewise score --mode online``: nearly free, but taken on
  the training inputs (augmented if the loop augments) with the model in train mode.

Example:
    >>> meter = AIGNMeter(len(train_set), p=2)
    >>> for epoch in range(epochs):
    ...     train_one_epoch(model)                                   # doctest: +SKIP
    ...     for x, y, idx in clean_loader:                           # doctest: +SKIP
    ...         meter.update(idx, model, x, y)
    ...     meter.end_epoch()
    >>> aign = meter.scores()                                         # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import SamplewiseError
from ..formats.scores import FORMAT, ScoreTable
from .trackers import PNorm, grad_norm, input_grad_norms, norm_kind

REDUCTIONS = ("mean", "sum")


class AIGNMeter:
    """Average input-gradient norm per sample over epochs, for a hand-written loop.

    Args:
        num_samples: size of the dataset the indices refer to (indices are in
            ``[0, num_samples)``).
        p: norm of the input gradient: ``2`` (default), ``1``, ``float("inf")`` or ``"sq"``.

    Example:
        >>> meter = AIGNMeter(100)
        >>> meter.update_from_grad(torch.tensor([3, 7]), torch.ones(2, 4), reduction="sum")
        >>> meter.end_epoch(); meter.scores()[[3, 7, 0]]
        array([ 2.,  2., nan], dtype=float32)
    """

    def __init__(self, num_samples: int, *, p: PNorm = 2):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise SamplewiseError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        self.num_samples, self.p = num_samples, norm_kind(p)
        self.columns: list[np.ndarray] = []   # one float32 column per closed epoch, NaN = unseen
        self._sum = torch.zeros(num_samples, dtype=torch.float64)
        self._count = torch.zeros(num_samples, dtype=torch.float64)

    # ------------------------------------------------------------------ recording
    def _indices(self, idx, n: int) -> torch.Tensor:
        idx = torch.as_tensor(idx).detach().cpu()
        if idx.dim() != 1 or len(idx) != n or (idx.numel() and idx.dtype.is_floating_point):
            raise SamplewiseError(f"idx must be {n} integer dataset indices (one per sample), "
                                  f"got shape {tuple(idx.shape)}")
        idx = idx.long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise SamplewiseError(f"dataset indices must lie in [0, {self.num_samples}); got "
                                  f"{int(idx.min())}..{int(idx.max())}")
        return idx

    def _add(self, idx, norms: torch.Tensor) -> None:
        rows = self._indices(idx, len(norms))
        self._sum.index_add_(0, rows, norms.detach().cpu().double())
        self._count.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))

    def update(self, idx, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Record ``‖∇ₓ CE(model(xᵢ), yᵢ)‖_p`` of a batch (:func:`input_grad_norms`) at ``idx``.

        The model runs in eval mode (restored after); parameter gradients are untouched.
        Returns the batch's norms.
        """
        norms = input_grad_norms(model, x, y, p=self.p)
        self._add(idx, norms)
        return norms

    def update_from_grad(self, idx, grad: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        """Record the norms of an input gradient the loop already has (e.g. ``x.grad``).

        Args:
            grad: ``∇ₓ`` of the batch loss, one row per sample.
            reduction: how that loss was reduced over the batch: ``"mean"`` (PyTorch's default:
                ``x.grad`` is 1/B of each sample's own gradient, so it is multiplied by B) or
                ``"sum"``. Only the sample's own CE must reach row i (no batch-coupled terms).

        Returns the batch's norms (of each sample's own gradient).
        """
        if reduction not in REDUCTIONS:
            raise SamplewiseError(f"reduction must be one of {', '.join(REDUCTIONS)}, "
                                  f"got {reduction!r}")
        if grad is None:
            raise SamplewiseError("no input gradient: make the inputs require grad "
                                  "(x.requires_grad_(True)) before the forward pass")
        g = grad.detach() * (len(grad) if reduction == "mean" else 1)
        norms = grad_norm(g, self.p).float()
        self._add(idx, norms)
        return norms

    def end_epoch(self) -> np.ndarray:
        """Close the epoch: its column is each sample's mean norm in it (NaN: not seen).

        Returns that column (float32, length ``num_samples``).
        """
        if not bool((self._count > 0).any()):
            raise SamplewiseError("end_epoch() with nothing recorded since the last one")
        col = torch.where(self._count > 0, self._sum / self._count.clamp(min=1),
                          torch.full_like(self._sum, float("nan")))
        self.columns.append(col.float().numpy())
        self._sum.zero_()
        self._count.zero_()
        return self.columns[-1]

    # ------------------------------------------------------------------ results
    def matrix(self) -> np.ndarray:
        """The ``num_samples x epochs`` float32 matrix of closed epochs (NaN: not seen)."""
        if not self.columns:
            return np.zeros((self.num_samples, 0), dtype=np.float32)
        return np.stack(self.columns, 1)

    def scores(self) -> np.ndarray:
        """AIGN per dataset index: the mean over the closed epochs in which the sample was seen,
        NaN for a sample never seen (float32, length ``num_samples``; higher = harder)."""
        if not self.columns:
            raise SamplewiseError("no closed epoch yet: call end_epoch() first")
        m = self.matrix().astype(np.float64)
        seen = ~np.isnan(m)
        total = np.where(seen, m, 0.0).sum(1)
        count = seen.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan).astype(np.float32)

    def to_table(self, labels, meta: dict | None = None) -> ScoreTable:
        """A :class:`ScoreTable` with ``aign`` for every sample seen at least once.

        ``labels`` holds the class of every dataset index (length ``num_samples``). Samples never
        seen are left out (a score table holds no NaN). ``aign_per_epoch`` is included when every
        kept sample was seen in every closed epoch. Save it with ``table.save(path)``: the file
        is a score file that ``samplewise select`` and the score-file tools accept (without a
        dataset fingerprint unless ``meta`` gives one).

        Example:
            >>> meter.to_table(train_labels).save("runs/mine/scores.npz")     # doctest: +SKIP
        """
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (self.num_samples,) or labels.dtype.kind not in "iu":
            raise SamplewiseError(f"labels must hold {self.num_samples} integer classes (one per "
                                  f"dataset index), got shape {labels.shape}, dtype {labels.dtype}")
        aign = self.scores()
        keep = np.flatnonzero(~np.isnan(aign))
        per_epoch = self.matrix()[keep]
        full = bool(np.isfinite(per_epoch).all())
        info = {"format": FORMAT, "num_train": self.num_samples, "mode": "meter", "p": self.p,
                **({"tracked_epochs": list(range(len(self.columns)))} if full else {}),
                **(meta or {})}
        return ScoreTable(index=keep, labels=labels[keep], scores={"aign": aign[keep]},
                          aign_per_epoch=per_epoch if full else None, meta=info)
