"""Training objectives: one registry, one interface (see :class:`Objective`)."""

from .base import (OBJECTIVES, Objective, StepContext, build_objective, list_objectives,
                   resolve_recipe)
from . import adversarial  # noqa: F401  (registers standard, pgd-at, fgsm-rs, trades, mart)
from . import distill  # noqa: F401  (registers ard, rslad, iad, adaad, igdm)
from . import saad  # noqa: F401  (registers saad, saad-measured; built on distill)

__all__ = ["OBJECTIVES", "Objective", "StepContext", "build_objective", "list_objectives",
           "resolve_recipe"]
