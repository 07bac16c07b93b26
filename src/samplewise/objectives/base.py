"""The objective interface: one call per training step, returning the loss and per-sample terms.

An objective combines pure losses (:mod:`samplewise.losses`) and attacks
(:mod:`samplewise.attacks`); the training loop reads only ``out["loss"]`` and hands the whole
dict to hooks (per-sample trackers), so objectives and trackers never know about each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig, with_recipe
from ..errors import SamplewiseError
from ..registry import Registry

OBJECTIVES = Registry("objective")


@dataclass
class StepContext:
    """Where a step sits in training; ``generator`` drives the step's attack randomness."""

    epoch: int = 0
    epochs: int = 1
    step: int = 0
    steps_per_epoch: int = 1
    generator: torch.Generator | None = None

    @property
    def progress(self) -> float:
        """Fraction of training done at this step, in [0, 1)."""
        return (self.epoch + self.step / max(self.steps_per_epoch, 1)) / max(self.epochs, 1)


class Objective:
    """Base class. Subclasses set ``name``, accept their options as keyword arguments and
    implement :meth:`__call__`.

    Args:
        eps: L∞ radius of the inner maximisation.
        alpha: step size of the inner maximisation.
        steps: number of inner steps.
    """

    name = "objective"
    #: teacher forward/backward passes per step, for the documentation and the counting tests
    needs_teacher = False
    #: the recipe's defaults for training keys (``samplewise.config.RECIPE_KEYS``); they apply
    #: to a run that leaves those keys unset, below a YAML file, ``--set`` and flags
    recipe: dict[str, Any] = {}

    def __init__(self, *, eps: float, alpha: float, steps: int, **options: Any):
        if options:
            raise SamplewiseError(
                f"objective '{self.name}' got unknown option(s): {', '.join(sorted(options))}")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                 ctx: StepContext) -> dict:
        raise NotImplementedError

    def bind(self, index: torch.Tensor) -> None:
        """Called by :func:`samplewise.train.fit` before the first step with the dataset indices
        it trains on (CPU int64), so that per-sample state can be sized up front instead of
        inside the step loop (a host-device sync on CUDA). The base class ignores it."""

    def settings(self) -> dict:
        """Plain-data description of the objective, written into results."""
        return {"name": self.name, "eps": self.eps, "alpha": self.alpha, "steps": self.steps}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def check_number(objective: str, name: str, value, *, positive: bool = False) -> float:
    """A finite real option (``>= 0``, or ``> 0`` with ``positive``), else our error."""
    import math
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise SamplewiseError(f"objective '{objective}': {name} must be a finite number "
                              f"{'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def build_objective(name: str, *, eps: float, alpha: float, steps: int,
                    teacher: nn.Module | None = None, **options: Any) -> Objective:
    """Build a registered objective.

    Example:
        >>> obj = build_objective("pgd-at", eps=0.1, alpha=0.025, steps=10)
    """
    cls = OBJECTIVES.get(name)
    if getattr(cls, "needs_teacher", False):
        if teacher is None:
            raise SamplewiseError(f"objective '{name}' is a distillation method and needs a teacher")
        return cls(teacher=teacher, eps=eps, alpha=alpha, steps=steps, **options)
    if teacher is not None:
        raise SamplewiseError(f"objective '{name}' does not use a teacher")
    return cls(eps=eps, alpha=alpha, steps=steps, **options)


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the recipe keys it leaves unset taken from its objective's ``recipe`` (else
    the code defaults): the one place a run's recipe defaults are resolved.

    Example:
        >>> resolve_recipe(TrainConfig(objective="saad")).weight_decay
        0.0002
    """
    return with_recipe(cfg, OBJECTIVES.get(cfg.objective).recipe)


def list_objectives() -> list[str]:
    return OBJECTIVES.names()
