"""Adversarial transferability between a student and its teacher (methods.md §4).

``transfer_i = 1[argmax z_T(x'_i) != y_i]`` for the adversarial example ``x'_i`` that the
*student* crafted for itself: does it also fool the teacher? Its mean over a set is the TAS rate.
SAAD's finding is that student robustness follows TAS rather than teacher robustness.

- :func:`transfer_rate` measures it on held-out data (``samplewise analyze transfer``).
- :class:`TransferHistory` records each training sample's transfer flag at every epoch of a
  distillation run, from the logits the objective computed anyway, indexed by dataset index.

Example:
    >>> res = transfer_rate(teacher, student, bundle.test, eps=0.1, n=500)
    >>> res["tas"], res["tas_given_student_fooled"]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .attacks import pgd
from .data import Split
from .evaluate import eval_slice, predict
from .runinfo import derived_generator
from .threat import ThreatModel
from .hooks import Hook


def transfer_rate(teacher: nn.Module, student: nn.Module, split: Split, *, eps: float,
                  alpha: float | None = None, steps: int = 10, n: int | None = None,
                  batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
                  per_sample: bool = False) -> dict:
    """TAS of student-crafted PGD examples on (a fixed slice of) ``split``.

    Returns the TAS over all samples (``tas``, the quantity logged during training), the TAS
    among the samples whose adversarial example fools the student (``tas_given_student_fooled``),
    the student's and the teacher's accuracy on clean and on the student-crafted inputs, and
    every attack setting.
    """
    threat = ThreatModel.resolve(None, eps=eps, alpha=alpha, steps=steps)  # step default: ε/4
    eps, alpha, steps = threat.eps, threat.alpha, threat.steps
    data = eval_slice(split, n)
    gen = derived_generator(seed, 15485863)
    student, teacher = student.to(device), teacher.to(device)
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("s_clean", "s_adv", "t_clean", "t_adv")}
    for i in range(0, len(data), batch_size):
        x = data.x[i:i + batch_size].to(device).float().div_(255)
        y = data.y[i:i + batch_size].to(device)
        x_adv = pgd(student, x, y, eps=eps, alpha=alpha, steps=steps,
                    random_start=threat.random_start, generator=gen)
        for key, model, inp in (("s_clean", student, x), ("s_adv", student, x_adv),
                                ("t_clean", teacher, x), ("t_adv", teacher, x_adv)):
            cols[key].append((predict(model, inp) == y).cpu())
    c = {k: torch.cat(v) for k, v in cols.items()}
    transfer = ~c["t_adv"]
    fooled = ~c["s_adv"]
    out = {"n": len(data), "eps": float(eps), "alpha": float(alpha), "steps": int(steps),
           "tas": transfer.float().mean().item(),
           "tas_given_student_fooled": (transfer & fooled).sum().item() / max(int(fooled.sum()), 1),
           "student_clean_acc": c["s_clean"].float().mean().item(),
           "student_robust_acc": c["s_adv"].float().mean().item(),
           "teacher_clean_acc": c["t_clean"].float().mean().item(),
           "teacher_acc_on_student_adv": c["t_adv"].float().mean().item()}
    if per_sample:
        out["per_sample"] = {"index": data.index.tolist(), "transfer": transfer.tolist(),
                             "student_fooled": fooled.tolist()}
    return out


class TransferHistory(Hook):
    """Per-sample transfer flag at every epoch of a distillation run (int8: 1 transferred,
    0 did not, -1 not presented), indexed by dataset index; saved in checkpoints for resume."""

    def __init__(self):
        self.index: torch.Tensor | None = None
        self.columns: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None

    def on_fit_start(self, model, loader, cfg) -> None:
        self.index = loader.split.index.cpu().sort().values
        self.columns, self._current = [], None

    def on_batch_end(self, model, x, y, idx, out, epoch, step) -> None:
        flags = out.get("transfer")
        if flags is None:
            return
        if self._current is None:
            self._current = torch.full((len(self.index),), -1, dtype=torch.int8)
        rows = torch.searchsorted(self.index, idx.cpu())
        self._current[rows] = flags.detach().cpu().to(torch.int8)

    def on_epoch_end(self, model, epoch) -> dict | None:
        if self._current is not None:
            from . import distributed
            if distributed.current().enabled:  # any rank's flag (-1 where a rank did not see it)
                torch.distributed.all_reduce(self._current, op=torch.distributed.ReduceOp.MAX)
            self.columns.append(self._current)
            self._current = None
        return None

    def matrix(self) -> np.ndarray:
        if not self.columns:
            return np.zeros((0 if self.index is None else len(self.index), 0), dtype=np.int8)
        return torch.stack(self.columns, 1).numpy()

    def state_dict(self) -> dict:
        current = None if self._current is None else self._current.clone()  # mid-epoch
        return {"index": self.index, "matrix": torch.from_numpy(self.matrix()), "current": current}

    def load_state_dict(self, state: dict) -> None:
        self.index = state["index"]
        self.columns = list(state["matrix"].unbind(1)) if state["matrix"].numel() else []
        current = state.get("current")
        self._current = None if current is None else current.clone()
