"""The threat model: one spec (norm, ε, step, steps, random start), resolved once.

:meth:`ThreatModel.resolve` turns a dataset card and the caller's flags (``None`` = not given)
into the spec every attack call of a run, an evaluation, a transfer measurement or the
vulnerability analysis uses. ε defaults to the card's; the step ``alpha`` defaults to the card's
step or to the house default ``ε/4``, by one of three rules (``card_step``), which keep each
caller's numbers as they were before the spec existed (docs/methods.md, "Threat model"):

* ``"same-eps"`` (:func:`samplewise.evaluate.evaluate`): the card's step when ε equals the
  card's ε (given or not), else ``ε/4``;
* ``"default-eps"`` (training, :func:`samplewise.runs.resolve_attack`): the card's step only
  when ε itself comes from the card; a given ε takes ``ε/4``;
* ``"ratio"`` (:func:`samplewise.analysis.vulnerability`): ``ε · card.alpha / card.eps``.

Without a card (``card=None``: transfer rates, the studies' ε ladder) ε is required and the step
is ``ε/4``. The rules differ only on cards whose step is not ε/4 (``mnist``: 0.3 / 0.01,
``svhn``: 8/255 / 1/255); for every other built-in card they give the same numbers.

This module sits in the bottom layer: it holds numbers, not tensors, so the configuration, the
attacks and every engine above can share it.

Example:
    >>> tm = ThreatModel.resolve(card, steps=None, default_steps=20)   # evaluation at the card's ε
    >>> tm.eps, tm.alpha, tm.steps
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import SamplewiseError

__all__ = ["ThreatModel", "CARD_STEP_RULES", "THREAT_FIELDS", "card_step_ratio"]

CARD_STEP_RULES = ("same-eps", "default-eps", "ratio")
#: the fields an attack can take from the spec (an attack's registry entry names its subset)
THREAT_FIELDS = ("norm", "eps", "alpha", "steps", "random_start")


def card_step_ratio(card) -> float:
    """The card's step over its radius (``alpha / eps``; 1/4 on most built-in cards)."""
    return card.alpha / card.eps


@dataclass(frozen=True)
class ThreatModel:
    """An L-p attack budget: radius ``eps``, step ``alpha``, ``steps`` iterations, ``norm``
    (``"linf"`` or ``"l2"``), ``random_start`` (``True``/``False``/``"uniform"``/``"normal"``)."""

    norm: str
    eps: float
    alpha: float
    steps: int
    random_start: Union[bool, str] = True

    def __post_init__(self) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) \
                or not math.isfinite(self.eps) or self.eps < 0:
            raise SamplewiseError(f"eps must be >= 0, got {self.eps}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha) or self.alpha < 0:
            raise SamplewiseError(f"alpha must be >= 0, got {self.alpha}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise SamplewiseError(f"steps must be >= 0, got {self.steps}")
        if str(self.norm).lower() != self.norm:
            object.__setattr__(self, "norm", str(self.norm).lower())

    @classmethod
    def resolve(cls, card=None, *, eps: Optional[float] = None, alpha: Optional[float] = None,
                steps: Optional[int] = None, default_steps: int = 10, norm: str = "linf",
                random_start: Union[bool, str] = True, card_step: str = "same-eps") -> "ThreatModel":
        """The spec from a dataset card (anything with ``eps`` and ``alpha``, or None) and the
        caller's flags; ``None`` flags take the defaults described in the module docstring.

        Example:
            >>> ThreatModel.resolve(None, eps=0.1).alpha
            0.025
        """
        if card_step not in CARD_STEP_RULES:
            raise SamplewiseError(f"unknown card_step {card_step!r}; choose from: "
                                  f"{', '.join(CARD_STEP_RULES)}")
        given = eps is not None
        if eps is None:
            if card is None:
                raise SamplewiseError("eps is required when the model carries no dataset card")
            eps = card.eps
        eps = float(eps)
        if not math.isfinite(eps) or eps < 0:
            raise SamplewiseError(f"eps must be >= 0, got {eps}")
        if alpha is None:
            alpha = cls.default_step(card, eps, eps_given=given, card_step=card_step)
        return cls(norm=norm, eps=eps, alpha=float(alpha),
                   steps=default_steps if steps is None else steps, random_start=random_start)

    @staticmethod
    def default_step(card, eps: float, *, eps_given: bool, card_step: str = "same-eps") -> float:
        """The step when none is given (see the module docstring for the rules)."""
        if card is None:
            return eps / 4
        if card_step == "ratio":
            return eps * card_step_ratio(card)
        if card_step == "default-eps":
            return card.alpha if not eps_given else eps / 4
        return card.alpha if eps == card.eps else eps / 4

    def replace(self, **changes: Any) -> "ThreatModel":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
