"""Provenance written next to every run's outputs: version, git hash, seeds, RNG states."""

from __future__ import annotations

import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from .version import __version__


def git_hash() -> str | None:
    """The commit of the samplewise checkout, if it is one (with ``+dirty`` for local changes)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    return {"samplewise_version": __version__, "git": git_hash(), "torch": str(torch.__version__),
            "python": platform.python_version()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Global RNG states as plain data/tensors (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": _py_state(random.getstate()),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))


def _py_state(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def derived_generator(seed: int, *salt: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator whose seed depends only on ``(seed, *salt)``: resumable without saved state."""
    g = torch.Generator(device=device)
    value = seed
    for s in salt:
        value = (value * 1_000_003 + int(s) + 1) % (2**63 - 1)
    g.manual_seed(value)
    return g
