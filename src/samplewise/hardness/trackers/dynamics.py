""":class:`TrainingDynamicsTracker`: forgetting events, AUM and cumulative loss from the training
minibatches."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import distributed
from ...errors import SamplewiseError
from .base import TrackerBase


class TrainingDynamicsTracker(TrackerBase):
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
        self.check_rows()
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
