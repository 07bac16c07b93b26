"""Per-sample hardness trackers: training hooks indexed by dataset index (methods.md §3).

Three hooks (:class:`samplewise.train.Hook`) record what the scores need while a standard
training run goes on; each keeps its state in ``state_dict()`` so a killed run resumes exactly:

- :class:`EvalPassTracker` (AIGN mode ``"checkpoint"``, the default): at the end of every
  tracked epoch, ONE pass over the clean, unaugmented training inputs with the model in eval
  mode gives, per sample, the input-gradient norm ``‖∇ₓ CE(f(xᵢ), yᵢ)‖_p`` (the AIGN column),
  the softmax error ``‖softmax(z) − onehot(y)‖₂`` (EL2N) and the closed-form last-layer
  gradient norm (GraNd).
- :class:`OnlineAIGNTracker` (mode ``"online"``): reads the input gradients the training step
  computes anyway (nearly free), i.e. on augmented inputs with the model in train mode.
- :class:`TrainingDynamicsTracker`: forgetting events, area under the margin and cumulative
  loss, from the training minibatches' logits and per-sample losses.

Every final score is oriented **higher = harder**. Epoch labels are 0-based epoch indices: the
column taken at the end of epoch ``e`` is labelled ``e`` (``metrics.jsonl`` counts from 1).

Example:
    >>> trackers = [EvalPassTracker(p=2), TrainingDynamicsTracker()]
    >>> fit(model, bundle, build_objective("standard", eps=0.1, alpha=0.025, steps=0), cfg,
    ...     hooks=trackers)                                            # doctest: +SKIP
    >>> trackers[0].scores()["aign"][:3]                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..data import Split, iter_batches
from ..errors import SamplewiseError
from ..train import Hook

PNorm = int | str  # 2, 1 or "sq"


def norm_kind(p: PNorm) -> PNorm:
    """Canonical form of the AIGN norm option: ``2``, ``1`` or ``"sq"`` (squared L2).

    Example:
        >>> norm_kind("2"), norm_kind("sq")
        (2, 'sq')
    """
    key = str(p).strip().lower()
    table = {"2": 2, "2.0": 2, "l2": 2, "1": 1, "1.0": 1, "l1": 1, "sq": "sq", "l2sq": "sq"}
    if key not in table:
        raise SamplewiseError(f"unknown AIGN norm p={p!r}; choose from: 2, 1, sq")
    return table[key]


def grad_norm(g: torch.Tensor, p: PNorm) -> torch.Tensor:
    """Per-row norm of a ``B x ...`` gradient: L2, L1 or squared L2 (``p="sq"``)."""
    flat = g.flatten(1)
    if p == 2:
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if p == 1:
        return flat.abs().sum(1)
    return flat.pow(2).sum(1)


@torch.no_grad()
def _error_terms(logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """EL2N ``‖p − onehot(y)‖₂`` and GraNd's last-layer gradient norm, per sample.

    For CE with a linear head ``z = W h + b``: ``∂L/∂W = e hᵀ`` and ``∂L/∂b = e`` with
    ``e = p − onehot(y)``, so ``‖∇_{W,b} L‖ = ‖e‖₂ · sqrt(‖h‖₂² + 1)`` without any backward pass.
    """
    err = logits.float().softmax(1)
    err[torch.arange(len(y), device=y.device), y] -= 1.0
    el2n = torch.linalg.vector_norm(err, dim=1)
    grand = el2n * torch.sqrt(h.float().pow(2).sum(1) + 1.0)
    return el2n, grand


def per_sample_pass(model: nn.Module, split: Split, *, p: PNorm = 2, batch_size: int = 512,
                    device: str | torch.device | None = None, input_grad: bool = True,
                    features: bool = False) -> dict[str, torch.Tensor]:
    """One eval-mode pass over ``split`` (clean, unaugmented, dataset order).

    The input gradient is ``∇ₓ Σᵢ CE(f(xᵢ), yᵢ)`` in [0, 1] pixel space: the gradient of the SUM,
    so row i is sample i's own gradient (not scaled by 1/B; rows are independent because the
    model is in eval mode, so BatchNorm uses its running statistics). Only the input gradient is
    taken (``torch.autograd.grad``), so no parameter ``.grad`` is touched. The model's mode is
    restored afterwards.

    Returns:
        CPU tensors in ``split`` order: ``index``, ``el2n``, ``grand``, ``loss`` and, if asked,
        ``aign`` (the p-norm of the input gradient) and ``features`` (penultimate, float32).

    Example:
        >>> out = per_sample_pass(model, bundle.train, p=2)             # doctest: +SKIP
        >>> out["aign"].shape == (len(bundle.train),)                   # doctest: +SKIP
    """
    p = norm_kind(p)
    device = device if device is not None else next(model.parameters()).device
    keys = ["index", "el2n", "grand", "loss"] + ["aign"] * input_grad + ["features"] * features
    parts: dict[str, list] = {k: [] for k in keys}
    was = model.training
    model.eval()
    try:
        for x, y, idx in iter_batches(split, batch_size, device):
            with torch.enable_grad() if input_grad else torch.no_grad():
                x.requires_grad_(input_grad)
                h = model.features(x)
                logits = model.head(h)
                loss = F.cross_entropy(logits, y, reduction="none")
                if input_grad:
                    (g,) = torch.autograd.grad(loss.sum(), x)
                    parts["aign"].append(grad_norm(g, p).detach().cpu())
            el2n, grand = _error_terms(logits.detach(), h.detach(), y)
            parts["index"].append(idx.cpu())
            parts["el2n"].append(el2n.cpu())
            parts["grand"].append(grand.cpu())
            parts["loss"].append(loss.detach().float().cpu())
            if features:
                parts["features"].append(h.detach().float().cpu())
    finally:
        model.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


def _gather_rows(out: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collect every rank's per-sample rows and return them for all of ``index``."""
    size = int(index.max()) + 1 if len(index) else 0
    merged = {}
    for name, values in out.items():
        if name == "index":
            continue
        table, seen = distributed.gather_by_index(values, out["index"], size)
        if not bool(seen[index].all()):
            raise SamplewiseError("a distributed pass missed some samples")
        merged[name] = table[index]
    merged["index"] = index.clone()
    return merged


class _Tracker(Hook):
    """Shared plumbing: the tracked dataset indices (sorted) and the epoch schedule."""

    kind = "tracker"

    def __init__(self, track_every: int = 1):
        if isinstance(track_every, bool) or not isinstance(track_every, int) or track_every < 1:
            raise SamplewiseError(f"track_every must be an integer >= 1, got {track_every!r}")
        self.track_every = track_every
        self.index: torch.Tensor | None = None  # sorted dataset indices, CPU int64
        self._index_on: dict[str, torch.Tensor] = {}

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
        if not bool((ref[pos] == idx).all()):
            raise SamplewiseError("a batch holds dataset indices this tracker does not track")
        return pos

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


class EvalPassTracker(_Tracker):
    """AIGN, EL2N and GraNd from an eval-mode pass over clean inputs after tracked epochs.

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
        self.cols: dict[str, list[torch.Tensor]] = {"aign": [], "el2n": [], "grand": []}

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
            out = _gather_rows(out, self.index)
        rows = self.rows(out["index"])
        names = (["aign"] if self.aign else []) + (["el2n", "grand"] if early else [])
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
        self.cols = {k: [c.clone() for c in state[k].unbind(1)] for k in self.cols}


class OnlineAIGNTracker(_Tracker):
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
        rows = self.rows(idx)
        # x.grad = ∇ₓ (1/B) Σ CE, so B · x.grad[i] = ∇ₓᵢ CE(f(xᵢ), yᵢ)
        norms = grad_norm(x.grad.detach() * len(y), self.p)
        self._sum.index_add_(0, rows, norms.float())
        self._count.index_add_(0, rows, torch.ones_like(norms, dtype=torch.float32))

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict | None:
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
                "aign": self._matrix(self.cols, n)}

    def load_state_dict(self, state: dict) -> None:
        self._check_state(state, p=self.p, track_every=self.track_every)
        self.tracked = [int(e) for e in state["tracked"]]
        self.cols = [c.clone() for c in state["aign"].unbind(1)]
        self._epoch = None


class TrainingDynamicsTracker(_Tracker):
    """Forgetting events, AUM and cumulative loss from every training minibatch.

    - ``forgetting`` (Toneva et al. 2019): the number of correct → incorrect transitions between
      successive presentations of a sample. A sample NEVER classified correctly gets the number of
      its presentations (the epochs), which exceeds any count a learned sample can reach (at most
      ⌊n/2⌋ events in n presentations): never-learned samples rank hardest, as in the paper,
      with a finite, data-independent value.
    - ``aum`` (Pleiss et al. 2020): ``−mean`` over presentations of the margin
      ``z_y − max_{k≠y} z_k`` (negated so higher = harder).
    - ``loss``: the sum of the sample's training losses over all presentations (cumulative
      training loss), from ``out["loss_per_sample"]`` (CE of the logits if absent).

    Example:
        >>> t = TrainingDynamicsTracker()
        >>> fit(model, bundle, objective, cfg, hooks=[t])                     # doctest: +SKIP
        >>> t.scores()["forgetting"].max()                                    # doctest: +SKIP
    """

    kind = "dynamics"
    _FIELDS = ("prev", "forget", "learned", "margin", "seen", "loss")

    def __init__(self):
        super().__init__(1)

    def on_fit_start(self, model, loader, cfg) -> None:
        self._bind(loader.split.index)
        n = len(self.index)
        self.prev = torch.full((n,), -1, dtype=torch.int8)   # -1 unseen, 0 wrong, 1 right
        self.forget = torch.zeros(n, dtype=torch.int64)
        self.learned = torch.zeros(n, dtype=torch.bool)
        self.margin = torch.zeros(n, dtype=torch.float64)
        self.seen = torch.zeros(n, dtype=torch.int64)
        self.loss = torch.zeros(n, dtype=torch.float64)
        self._start = self._snapshot()

    def _to(self, device: torch.device) -> None:
        if self.prev.device != device:
            for name in self._FIELDS:
                setattr(self, name, getattr(self, name).to(device))

    @torch.no_grad()
    def on_batch_end(self, model, x, y, idx, out, epoch, step) -> None:
        logits = out["logits"].detach().float()
        self._to(logits.device)
        rows = self.rows(idx)
        correct = logits.argmax(1) == y
        self.forget.index_add_(0, rows, ((self.prev[rows] == 1) & ~correct).long())
        self.prev[rows] = correct.to(torch.int8)
        self.learned[rows] |= correct
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        z_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        self.margin.index_add_(0, rows, (z_y - z_other).double())
        self.seen.index_add_(0, rows, torch.ones_like(rows))
        loss = out.get("loss_per_sample")
        loss = F.cross_entropy(logits, y, reduction="none") if loss is None else loss.detach()
        self.loss.index_add_(0, rows, loss.double())

    def _snapshot(self) -> dict:
        return {k: getattr(self, k).clone() for k in self._FIELDS}

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict | None:
        """Merge the ranks' views of this epoch (a no-op for a single process)."""
        if distributed.current().enabled:
            self._merge_ranks(self._start)
        self._start = self._snapshot()
        return None

    def _merge_ranks(self, start: dict) -> None:
        """Each rank saw its shard this epoch: sum the additive counters' increments, take each
        shown sample's latest outcome from the rank that showed it, OR the 'learned' flags."""
        dist = torch.distributed
        start = {k: v.to(self.seen.device) for k, v in start.items()}
        shown_here = self.seen > start["seen"]
        for name in ("forget", "margin", "seen", "loss"):
            delta = getattr(self, name) - start[name]
            setattr(self, name, start[name] + distributed.all_reduce_sum(delta))
        vote = torch.where(shown_here, self.prev.to(torch.int64), torch.full_like(start["seen"], -2))
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)  # -2 where this rank did not show the sample
        self.prev = torch.where(vote > -2, vote, start["prev"].to(torch.int64)).to(torch.int8)
        learned = self.learned.to(torch.int64)
        dist.all_reduce(learned, op=dist.ReduceOp.MAX)
        self.learned = learned.bool()

    def scores(self) -> dict[str, np.ndarray]:
        seen = self.seen.cpu()
        if bool((seen == 0).any()):
            raise SamplewiseError(f"{int((seen == 0).sum())} samples were never presented")
        forget = torch.where(self.learned.cpu(), self.forget.cpu(), seen)
        return {"forgetting": forget.numpy().astype(np.float32),
                "aum": (-self.margin.cpu() / seen).numpy().astype(np.float32),
                "loss": self.loss.cpu().numpy().astype(np.float32)}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index,
                **{k: getattr(self, k).cpu().clone() for k in self._FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        self._check_state(state)
        for k in self._FIELDS:
            setattr(self, k, state[k].clone())
        self._start = self._snapshot()
