"""Count forward and backward passes through a module: the compute cost of a training step.

:class:`PassCounter` attaches a forward hook to a module. Each call of the module counts one
forward (and its batch size in samples); when the call's output takes part in autograd, a tensor
hook on it counts one backward each time a gradient reaches that output, whether through
``loss.backward()`` or ``torch.autograd.grad`` (input gradients of an attack). So a backward is
counted per forward call back-propagated through, in units of one batch-sized pass; a call under
``torch.no_grad()`` (or on a frozen module with an input that needs no gradient) has no backward.

Example:
    >>> with PassCounter(model) as c:
    ...     model(x).sum().backward()
    >>> c.counts()
    {'forward': 1, 'backward': 1, 'forward_samples': 8, 'backward_samples': 8}
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

__all__ = ["PassCounter", "count_passes"]


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((t for t in output if isinstance(t, torch.Tensor)), None)
    if isinstance(output, dict):
        return next((t for t in output.values() if isinstance(t, torch.Tensor)), None)
    return None


class PassCounter:
    """Counts forward calls and backward passes through ``module`` until :meth:`remove`.

    Attributes:
        forward, backward: number of calls / back-propagations through a call's output.
        forward_samples, backward_samples: the same, weighted by the batch size.

    Example:
        >>> counter = PassCounter(teacher)
        >>> _ = teacher(x)
        >>> counter.forward, counter.backward
        (1, 0)
        >>> counter.remove()
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.reset()
        self._handle = module.register_forward_hook(self._on_forward)

    def reset(self) -> None:
        self.forward = self.backward = self.forward_samples = self.backward_samples = 0

    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        t = _first_tensor(output)
        if t is None:
            return
        self.forward += 1
        self.forward_samples += t.shape[0] if t.dim() else 1
        if t.requires_grad:
            t.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1
        self.backward_samples += grad.shape[0] if grad.dim() else 1

    def counts(self) -> dict:
        return {"forward": self.forward, "backward": self.backward,
                "forward_samples": self.forward_samples, "backward_samples": self.backward_samples}

    def remove(self) -> None:
        """Detach the forward hook (tensor hooks already placed still count until their graph dies)."""
        self._handle.remove()

    def __enter__(self) -> "PassCounter":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def count_passes(objective, student: nn.Module, teacher: nn.Module | None, x: torch.Tensor,
                 y: torch.Tensor, idx: torch.Tensor, ctx, *, backward: bool = True) -> dict:
    """Passes of one training step: ``objective(student, x, y, idx, ctx)`` then, as the trainer
    does, one ``out["loss"].backward()`` (skip it with ``backward=False``).

    ``teacher`` defaults to ``objective.teacher``. The student's ``.grad`` is left as that backward
    made it (no optimiser step is taken).

    Returns:
        ``{"student_forward", "student_backward", "teacher_forward", "teacher_backward"}`` in
        batch-sized passes, plus the same keys with ``_samples`` appended.

    Example:
        >>> obj = build_objective("saad", teacher=t, eps=0.1, alpha=0.025, steps=10)
        >>> count_passes(obj, student, None, x, y, idx, StepContext())["teacher_forward"]
        3
    """
    teacher = teacher if teacher is not None else getattr(objective, "teacher", None)
    with PassCounter(student) as s, (PassCounter(teacher) if teacher is not None else nullcontext()) as t:
        out = objective(student, x, y, idx, ctx)
        if backward:
            out["loss"].backward()
    result = {}
    for who, counter in (("student", s), ("teacher", t)):
        counts = counter.counts() if counter is not None else dict.fromkeys(s.counts(), 0)
        result[f"{who}_forward"] = counts["forward"]
        result[f"{who}_backward"] = counts["backward"]
        result[f"{who}_forward_samples"] = counts["forward_samples"]
        result[f"{who}_backward_samples"] = counts["backward_samples"]
    return result
