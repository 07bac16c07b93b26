"""The objective interface: one call per training step, returning the loss and per-sample terms.

An objective combines pure losses (:mod:`samplewise.losses`) and attacks
(:mod:`samplewise.attacks`); the training loop reads only ``out["loss"]`` and hands the whole
dict to hooks (per-sample trackers), so objectives and trackers never know about each other.

An objective is called the same way in :func:`samplewise.train.fit` and in any hand-written loop:

    >>> obj = build_objective("pgd-at", eps=0.1, alpha=0.025, steps=10)
    >>> out = obj(model, x, y)                                   # doctest: +SKIP
    >>> out["loss"].backward()                                   # doctest: +SKIP

Objectives that keep per-sample state need ``idx=`` (dataset indices); those that ramp with the
epoch need ``epoch=`` and ``epochs=``; both say so in one error when they are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig, with_recipe
from ..errors import SamplewiseError
from ..registry import Registry
from ..threat import ThreatModel

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

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx=None,
                 ctx: StepContext | None = None, *, epoch: int | None = None,
                 epochs: int | None = None, generator: torch.Generator | None = None) -> dict:
        """One training step's loss: ``obj(model, x, y)`` in any loop.

        Args:
            model: the model being trained (its mode is the caller's: train mode in a loop).
            x, y: the batch (inputs in [0, 1] for the attacks' clipping) and int64 labels.
            idx: the batch's dataset indices; needed by objectives with per-sample state
                (:meth:`needs_index`, e.g. ``saad-measured`` with ``ema``).
            ctx: a full :class:`StepContext` (what :func:`samplewise.train.fit` passes); else it
                is built from ``epoch``, ``epochs`` and ``generator``.
            epoch, epochs: the 0-based epoch and the number of epochs; needed by objectives that
                ramp with training (:meth:`needs_epoch`, e.g. IGDM's and SAAD's ``t/E``, IAD's
                warm-up).
            generator: drives the attack's random start; ``None``: PyTorch's global generator.

        Returns:
            A dict with a scalar ``loss`` to backpropagate, ``logits`` and per-sample terms.
        """
        if idx is not None and not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(idx)
        if ctx is None:
            ctx = self._context(idx, epoch, epochs, generator)
        elif self.needs_index() and idx is None:
            raise SamplewiseError(self._missing("idx="))
        return self.forward(model, x, y, idx, ctx)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                idx: torch.Tensor | None, ctx: StepContext) -> dict:
        """The step itself (subclasses implement it); called by :meth:`__call__`."""
        raise NotImplementedError

    def needs_index(self) -> bool:
        """Whether the loss reads per-sample state by dataset index (so ``idx=`` is required)."""
        return False

    def needs_epoch(self) -> bool:
        """Whether the loss depends on the epoch (so ``epoch=`` and ``epochs=`` are required)."""
        return False

    def _missing(self, what: str) -> str:
        why = ("keeps per-sample state by dataset index" if what == "idx="
               else "depends on the epoch (a ramp or a warm-up)")
        return (f"objective '{self.name}' {why}: pass {what} when calling it "
                f"({self.settings()})")

    def _context(self, idx, epoch, epochs, generator) -> StepContext:
        if self.needs_index() and idx is None:
            raise SamplewiseError(self._missing("idx="))
        if self.needs_epoch() and (epoch is None or epochs is None):
            raise SamplewiseError(self._missing("epoch= and epochs="))
        epoch, epochs = (0 if epoch is None else epoch), (1 if epochs is None else epochs)
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, epochs))
        if not ok or epochs < 1 or not 0 <= epoch < epochs:
            raise SamplewiseError(f"objective '{self.name}': need 0 <= epoch < epochs (integers), "
                                  f"got epoch={epoch!r}, epochs={epochs!r}")
        return StepContext(epoch=epoch, epochs=epochs, generator=generator)

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


def build_objective(name: str, *, eps: float, alpha: float | None = None, steps: int = 10,
                    teacher: nn.Module | None = None, **options: Any) -> Objective:
    """Build a registered objective.

    Args:
        name: a registered objective (:func:`list_objectives`).
        eps: L∞ radius of the inner maximisation (inputs in [0, 1]).
        alpha: its step size; default ``eps / 4``.
        steps: its number of steps (default 10).
        teacher: the frozen teacher of a distillation objective (any ``nn.Module``).
        **options: the objective's options (e.g. ``beta=6.0`` for TRADES, ``ema=0.9``).

    Returns:
        An :class:`Objective`, callable as ``obj(model, x, y)`` (plus ``idx=``, ``epoch=``,
        ``epochs=`` where it needs them) returning a dict with a scalar ``loss``.

    Example:
        >>> obj = build_objective("pgd-at", eps=0.1, alpha=0.025, steps=10)
    """
    if alpha is None:  # no card here: the house default eps/4 (samplewise.threat)
        alpha = ThreatModel.default_step(None, eps, eps_given=True)
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
