"""Teacher models for distillation: a samplewise model file or run directory, or RobustBench.

Every teacher comes back frozen: eval mode and ``requires_grad=False`` on all parameters, so a
distillation objective can back-propagate through it to the input (for attacks) without ever
touching its weights.

Example:
    >>> teacher = load_teacher("runs/teacher-wrn", card=bundle.card, device="cpu")
    >>> teacher = load_teacher("robustbench:Carmon2019Unlabeled", card=card, device="cuda")
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..data.cards import DatasetCard
from ..errors import SamplewiseError
from .core import load_model, wrap_external
from .layout import choose_layout

log = logging.getLogger(__name__)

ROBUSTBENCH_PREFIX = "robustbench:"
# RobustBench ids look like "Carmon2019Unlabeled", "Wang2023Better_WRN-28-10" or "Standard".
_ROBUSTBENCH_ID = re.compile(r"^(Standard(_[\w-]+)?|[A-Z][A-Za-z]+(19|20)\d\d[A-Za-z][\w-]*)$")
_THREATS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and turn off gradients for all its parameters.

    Example:
        >>> teacher = freeze(create_model("cnn-small", card, width=4))
        >>> any(p.requires_grad for p in teacher.parameters())
        False
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def default_model_dir() -> Path:
    """Where RobustBench checkpoints are looked for / downloaded to.

    ``$SAMPLEWISE_ROBUSTBENCH_DIR`` if set, else ``~/.cache/samplewise/robustbench``. RobustBench
    stores a model as ``MODEL_DIR/<dataset>/<threat>/<ID>.pt`` and skips the download when that
    file exists.
    """
    env = os.environ.get("SAMPLEWISE_ROBUSTBENCH_DIR")
    return Path(env) if env else Path.home() / ".cache" / "samplewise" / "robustbench"


def load_teacher(spec: str, *, card: DatasetCard | None, device: str | torch.device = "cpu",
                 model_dir: str | os.PathLike | None = None) -> nn.Module:
    """Load a frozen teacher from a model file, a run directory or RobustBench.

    Args:
        spec: ``PATH/model.pt``, a run directory, ``robustbench:ID[:dataset[:threat]]``, or a
            bare RobustBench id (when no such path exists).
        card: the student's dataset card; the teacher must have the same image shape and number
            of classes (``None`` skips the check).
        device: where to put the teacher.
        model_dir: RobustBench checkpoint folder (default :func:`default_model_dir`).

    Raises:
        SamplewiseError: missing file, incompatible teacher, RobustBench not installed or its
            download failed.

    Example:
        >>> teacher = load_teacher("runs/wide-cnn/model.pt", card=card, device="cpu")
        >>> teacher.training
        False
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SamplewiseError(f"teacher must be a model file, run directory or robustbench:ID, "
                              f"got {spec!r}")
    if spec.startswith(ROBUSTBENCH_PREFIX):
        teacher = _load_robustbench(spec[len(ROBUSTBENCH_PREFIX):], card, model_dir)
    elif Path(spec).exists():
        teacher = load_model(spec, device="cpu")
    elif _ROBUSTBENCH_ID.match(spec):
        teacher = _load_robustbench(spec, card, model_dir)
    else:
        raise SamplewiseError(f"teacher not found: {spec} (expected a samplewise model file, a "
                              "run directory, or robustbench:ID)")
    _check_compatible(spec, teacher, card)
    teacher = freeze(teacher.to(device))
    choose_layout(teacher)  # on its device: NHWC for a samplewise conv net on the CPU
    return teacher


def _check_compatible(spec: str, teacher: nn.Module, card: DatasetCard | None) -> None:
    tcard = getattr(teacher, "card", None)
    if card is None or tcard is None:
        return
    if tuple(tcard.shape) != tuple(card.shape) or tcard.num_classes != card.num_classes:
        raise SamplewiseError(
            f"teacher {spec} was built for {tcard.name} ({tcard.num_classes} classes, images "
            f"{tuple(tcard.shape)}), but the data is {card.name} ({card.num_classes} classes, "
            f"images {tuple(card.shape)})")
    if tcard.name != card.name:
        log.warning("teacher %s was trained on '%s', student data is '%s' (same shape/classes)",
                    spec, tcard.name, card.name)


def parse_robustbench(spec: str, card: DatasetCard | None) -> tuple[str, str, str]:
    """``ID[:dataset[:threat]]`` -> ``(id, dataset, threat)``; defaults from ``card`` and Linf.

    Example:
        >>> parse_robustbench("Carmon2019Unlabeled", None)
        ('Carmon2019Unlabeled', 'cifar10', 'Linf')
    """
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise SamplewiseError(f"bad RobustBench teacher 'robustbench:{spec}'; expected "
                              "robustbench:ID[:dataset[:threat]]")
    dataset = parts[1] if len(parts) > 1 and parts[1] else (card.name if card else "cifar10")
    threat = parts[2] if len(parts) > 2 else "Linf"
    if threat.lower() not in _THREATS:
        raise SamplewiseError(f"unknown RobustBench threat model '{threat}'; choose from: "
                              f"{', '.join(_THREATS.values())}")
    return parts[0], dataset.lower(), _THREATS[threat.lower()]


def _load_robustbench(spec: str, card: DatasetCard | None, model_dir) -> nn.Module:
    model_id, dataset, threat = parse_robustbench(spec, card)
    try:
        from robustbench.utils import load_model as rb_load_model
    except ImportError as exc:
        if getattr(exc, "name", None) in ("robustbench", "robustbench.utils"):
            raise SamplewiseError("RobustBench is not installed (pip install "
                                  "'samplewise[robustbench]'); or pass a local checkpoint: "
                                  "--teacher PATH/model.pt") from None
        # installed, but one of its own imports fails (e.g. pkg_resources on new setuptools)
        raise SamplewiseError(f"RobustBench is installed but cannot be imported ({exc}); fix "
                              "its environment, or pass a local checkpoint: "
                              "--teacher PATH/model.pt") from None
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    log.info("loading RobustBench model %s (%s, %s) from %s", model_id, dataset, threat, folder)
    try:
        module = rb_load_model(model_name=model_id, dataset=dataset, threat_model=threat,
                               model_dir=str(folder))
    except Exception as exc:  # network, gdown, unknown-id and file errors all land here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SamplewiseError(
            f"RobustBench model {model_id} ({dataset}, {threat}) could not be loaded; the download "
            f"failed or the id is wrong ({first[:160]}). Download it on a machine with internet "
            f"and copy it to {folder}/{dataset}/{threat}/{model_id}.pt, then use "
            f"robustbench:{model_id} again; or convert it to a local checkpoint with "
            "samplewise.models.wrap_external(module, card) + save_model and pass "
            "--teacher PATH/model.pt") from None
    # RobustBench models take [0, 1] images and normalise inside, like samplewise models.
    teacher = wrap_external(module, card, source=f"robustbench:{model_id}:{dataset}:{threat}")
    if card is not None:
        with torch.no_grad():
            k = teacher(torch.zeros(1, *card.shape)).shape[-1]
        if k != card.num_classes:
            raise SamplewiseError(f"RobustBench model {model_id} predicts {k} classes, but "
                                  f"{card.name} has {card.num_classes}")
    return teacher
