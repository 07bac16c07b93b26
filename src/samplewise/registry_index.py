"""All registries in one place, for ``samplewise list`` and the registry-wide tests."""

from __future__ import annotations

from .registry import Registry


def registries() -> dict[str, Registry]:
    from .attacks import ATTACKS
    from .data import DATASETS
    from .models import MODELS
    from .objectives import OBJECTIVES
    out = {"datasets": DATASETS, "models": MODELS, "attacks": ATTACKS, "objectives": OBJECTIVES}
    try:
        from .coreset import SELECTORS
        out["selectors"] = SELECTORS
    except ImportError:  # pragma: no cover - during partial installs
        pass
    return out
