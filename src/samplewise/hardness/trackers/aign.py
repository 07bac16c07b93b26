"""The AIGN trackers: :class:`EvalPassTracker` (mode ``"checkpoint"``; also EL2N and GraNd) and
:class:`OnlineAIGNTracker` (mode ``"online"``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ... import distributed
from ...data import Split
from ...errors import SamplewiseError
from .base import TrackerBase
from .sample_pass import PNorm, gather_rows, grad_norm, norm_kind, per_sample_pass


class EvalPassTracker(TrackerBase):
    """AIGN, EL2N and GraNd from an eval-mode pass over clean inputs after tracked epochs.

    With ``aign=True`` every pass also keeps each sample's softmax probability of its true class
    (:meth:`prob_matrix`): the per-epoch confidence of a data map (Swayamdipta et al. 2020,
    ``p_θ(e)(y|x)`` with ``θ(e)`` the weights at the end of epoch ``e``).

    Args:
        p: norm of the input gradient: ``2`` (default), ``1`` or ``"sq"`` (squared L2).
        track_every: pass after every ``track_every``-th epoch (epochs ``k-1, 2k-1, ...``).
        early_epochs: EL2N and GraNd average the first ``early_epochs`` tracked passes
            (Paul et al. 2021 score early in training). Default: ``ceil(10%)`` of the planned
            tracked epochs, at least 1. Only those columns are kept.
        batch_size: batch size of the pass (results do not depend on it).
        aign: compute input gradients (``False``: forward-only passes for EL2N/GraNd, which then
            stop once the early window is full; used by the online mode).
        split: samples to pass over; default: the training loader's split.

    Example:
        >>> t = EvalPassTracker(p=2, track_every=1)
        >>> fit(model, bundle, objective, cfg, hooks=[t])                    # doctest: +SKIP
        >>> t.aign_matrix().shape                                             # doctest: +SKIP
        (1347, 10)
    """

    kind = "eval-pass"

    def __init__(self, *, p: PNorm = 2, track_every: int = 1, early_epochs: int | None = None,
                 batch_size: int = 512, aign: bool = True, split: Split | None = None):
        super().__init__(track_every)
        if early_epochs is not None and (isinstance(early_epochs, bool) or early_epochs < 1):
            raise SamplewiseError(f"early_epochs must be >= 1, got {early_epochs!r}")
        if batch_size < 1:
            raise SamplewiseError(f"batch_size must be >= 1, got {batch_size}")
        self.p, self.early_epochs, self.batch_size = norm_kind(p), early_epochs, int(batch_size)
        self.aign, self.split = bool(aign), split
        self.early = early_epochs or 1
        self._reset()

    def _reset(self) -> None:
        self.tracked: list[int] = []          # epoch labels of the passes (AIGN columns)
        self.cols: dict[str, list[torch.Tensor]] = {"aign": [], "el2n": [], "grand": [],
                                                    "prob": []}

    def on_fit_start(self, model, loader, cfg) -> None:
        self.split = self.split if self.split is not None else loader.split
        self._bind(self.split.index)
        planned = sum(self.tracks(e) for e in range(cfg.epochs))
        self.early = self.early_epochs or max(1, -(-planned // 10))
        self._reset()

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict | None:
        early = len(self.cols["el2n"]) < self.early
        if not self.tracks(epoch) or not (self.aign or early):
            return None
        env = distributed.current()
        split = self.split
        if env.enabled:  # each rank passes over its share; the columns are gathered by index
            part = distributed.shard(len(split), env)
            split = split.subset(split.index[part].numpy())
        out = per_sample_pass(model, split, p=self.p, batch_size=self.batch_size,
                              input_grad=self.aign)
        if env.enabled:
            out = gather_rows(out, self.index)
        rows = self.rows(out["index"])
        names = (["aign", "prob"] if self.aign else []) + (["el2n", "grand"] if early else [])
        for name in names:
            col = torch.empty(len(self.index))
            col[rows] = out[name]
            self.cols[name].append(col)
        self.tracked.append(int(epoch))
        metrics = {"track_loss": out["loss"].mean().item(), "el2n_mean": out["el2n"].mean().item()}
        if self.aign:
            metrics["aign_mean"] = out["aign"].mean().item()
        return metrics

    def aign_matrix(self) -> np.ndarray:
        """The N x E float32 AIGN matrix (rows: sorted dataset indices, columns: passes)."""
        return self._matrix(self.cols["aign"], len(self.index)).numpy()

    def prob_matrix(self) -> np.ndarray | None:
        """The N x E float32 true-class probabilities of the passes (columns as
        :meth:`aign_matrix`); None without AIGN passes (online mode) or from an old checkpoint."""
        if not self.aign or len(self.cols["prob"]) != len(self.cols["aign"]):
            return None
        return self._matrix(self.cols["prob"], len(self.index)).numpy()

    def early_epochs_used(self) -> list[int]:
        """Epoch labels of the passes averaged into EL2N and GraNd."""
        return self.tracked[:len(self.cols["el2n"])]

    def scores(self, window: tuple | None = None) -> dict[str, np.ndarray]:
        """``aign`` (mean over tracked epochs in ``window``), ``el2n`` and ``grand`` (early)."""
        if not self.cols["el2n"]:
            raise SamplewiseError("no tracked epoch finished yet: no scores to report")
        out = {}
        if self.aign:
            cols = self._window(self.tracked, window)
            out["aign"] = self.aign_matrix()[:, cols].astype(np.float64).mean(1)
        for name in ("el2n", "grand"):
            out[name] = self._matrix(self.cols[name], len(self.index)).double().mean(1).numpy()
        return {k: v.astype(np.float32) for k, v in out.items()}

    def state_dict(self) -> dict:
        n = 0 if self.index is None else len(self.index)
        return {"kind": self.kind, "p": self.p, "track_every": self.track_every,
                "aign_on": self.aign, "early": self.early, "index": self.index,
                "tracked": list(self.tracked),
                **{k: self._matrix(v, n) for k, v in self.cols.items()}}

    def load_state_dict(self, state: dict) -> None:
        early = {"early": self.early_epochs} if self.early_epochs is not None else {}
        self._check_state(state, p=self.p, track_every=self.track_every, aign_on=self.aign,
                          **early)
        self.early, self.tracked = int(state["early"]), [int(e) for e in state["tracked"]]
        # a checkpoint written before "prob" was tracked has no such matrix: prob_matrix() -> None
        self.cols = {k: [c.clone() for c in state[k].unbind(1)] if k in state else []
                     for k in self.cols}


class OnlineAIGNTracker(TrackerBase):
    """AIGN read from the training step's own input gradients (mode ``"online"``).

    The loop makes the batch inputs require grad (``needs_input_grad``); after its
    ``loss.backward()`` the input gradient is that of the batch-MEAN loss, so it is multiplied by
    the batch size to give each sample's own gradient (of the sum). The inputs are the training
    inputs: AUGMENTED (crop/flip when the run augments) with the model in TRAIN mode (BatchNorm
    batch statistics couple the samples of a batch, dropout is active). This tracker never
    changes training: the parameter gradients are the same with or without input gradients.

    Args:
        p: ``2``, ``1`` or ``"sq"``; track_every: as :class:`EvalPassTracker`.

    Example:
        >>> t = OnlineAIGNTracker(p=2)
        >>> fit(model, bundle, build_objective("standard", eps=0.1, alpha=0.025, steps=0), cfg,
        ...     hooks=[t])                                                  # doctest: +SKIP
    """

    kind = "online-aign"
    needs_input_grad = True

    def __init__(self, *, p: PNorm = 2, track_every: int = 1):
        super().__init__(track_every)
        self.p = norm_kind(p)
        self.tracked: list[int] = []
        self.cols: list[torch.Tensor] = []
        self._epoch, self._sum, self._count = None, None, None

    def on_fit_start(self, model, loader, cfg) -> None:
        self._bind(loader.split.index)
        self.tracked, self.cols, self._epoch = [], [], None

    def on_batch_end(self, model, x, y, idx, out, epoch, step) -> None:
        if not self.tracks(epoch):
            return
        if x.grad is None:
            raise SamplewiseError("online AIGN needs the inputs' gradient, but the objective did "
                                  "not backpropagate to its inputs (use the standard objective)")
        if self._epoch != epoch:
            n = len(self.index)
            self._sum = torch.zeros(n, device=x.device)
            self._count = torch.zeros(n, device=x.device)
            self._epoch = epoch
        elif self._sum.device != x.device:  # restored from a mid-epoch checkpoint
            self._sum, self._count = self._sum.to(x.device), self._count.to(x.device)
        rows = self.rows(idx)
        # x.grad = ∇ₓ (1/B) Σ CE, so B · x.grad[i] = ∇ₓᵢ CE(f(xᵢ), yᵢ)
        norms = grad_norm(x.grad.detach() * len(y), self.p)
        self._sum.index_add_(0, rows, norms.float())
        self._count.index_add_(0, rows, torch.ones_like(norms, dtype=torch.float32))

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict | None:
        self.check_rows()
        if not self.tracks(epoch) or self._epoch != epoch:
            return None
        distributed.all_reduce_sum(self._sum)
        distributed.all_reduce_sum(self._count)
        col = torch.where(self._count > 0, self._sum / self._count.clamp(min=1),
                          torch.full_like(self._sum, float("nan"))).cpu()
        self.cols.append(col)
        self.tracked.append(int(epoch))
        self._epoch = None
        return {"aign_mean": col.nanmean().item()}

    def aign_matrix(self) -> np.ndarray:
        """The N x E float32 AIGN matrix (NaN where a sample was not presented)."""
        return self._matrix(self.cols, len(self.index)).numpy()

    def scores(self, window: tuple | None = None) -> dict[str, np.ndarray]:
        cols = self._window(self.tracked, window)
        m = self.aign_matrix()[:, cols]
        if np.isnan(m).all(1).any():
            raise SamplewiseError("some samples were never presented in a tracked epoch")
        return {"aign": np.nanmean(m.astype(np.float64), 1).astype(np.float32)}

    def state_dict(self) -> dict:
        n = 0 if self.index is None else len(self.index)
        return {"kind": self.kind, "p": self.p, "track_every": self.track_every,
                "index": self.index, "tracked": list(self.tracked),
                "aign": self._matrix(self.cols, n),
                # the sums of an epoch in progress (a run preempted mid-epoch), else None
                "partial": None if self._epoch is None else
                {"epoch": self._epoch, "sum": self._sum.cpu().clone(),
                 "count": self._count.cpu().clone()}}

    def load_state_dict(self, state: dict) -> None:
        self._check_state(state, p=self.p, track_every=self.track_every)
        self.tracked = [int(e) for e in state["tracked"]]
        self.cols = [c.clone() for c in state["aign"].unbind(1)]
        partial = state.get("partial")
        self._epoch = None if partial is None else int(partial["epoch"])
        if partial is not None:
            self._sum, self._count = partial["sum"].clone(), partial["count"].clone()
