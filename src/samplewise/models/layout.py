"""NHWC (channels_last) memory layout for attacks and evaluation on the CPU.

oneDNN's NHWC convolutions ran PGD-10 on cnn-small 1.57x faster than NCHW on this project's
machine (the bench's ``pgd`` rows), with the same maths. :func:`fit` trains conv nets in NHWC on
the CPU already (``TrainConfig.channels_last``); this module gives the same layout to everything
that runs a model outside :func:`fit`: the attacks, :func:`samplewise.evaluate.evaluate`
(PGD, CW, AutoAttack and clean accuracy), the vulnerability analysis and distillation teachers.

:func:`fast_layout` converts a model for the duration of a block and converts it back after, so
the caller's model keeps its layout (parameters stay the same objects; only their strides
change). It does nothing when the model is already NHWC, is not one of samplewise's models
(:class:`~samplewise.models.NormalizedModel`: an external module might ``view`` a convolution's
output, which fails on NHWC strides), has no 2-D convolution, lives off the CPU (untested on
CUDA, where NCHW stays the default), or when the block runs inside :func:`keep_layout` (which
:func:`fit` uses: it owns the layout of its models). The conversion changes the model in place
for the duration, so a model shared by threads that run it at the same time should be
attacked inside :func:`keep_layout` (or converted once by the caller).

Example:
    >>> with fast_layout(model):
    ...     x_adv = pgd(model, x, y, eps=0.1)     # NHWC inside, model restored after
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from torch import nn

__all__ = ["fast_layout", "keep_layout", "is_nhwc", "can_use_nhwc", "wants_nhwc"]

_AUTO = contextvars.ContextVar("samplewise_auto_layout", default=True)


def _conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def is_nhwc(model: nn.Module) -> bool:
    """True when every 2-D convolution weight of ``model`` is in the channels_last layout."""
    weights = _conv_weights(model)
    return bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last)
                                 and not w.is_contiguous() for w in weights
                                 if w.shape[1] > 1 and w.shape[2] * w.shape[3] > 1)


def can_use_nhwc(model: nn.Module) -> bool:
    """A samplewise conv net on the CPU that is not in NHWC yet."""
    from .core import NormalizedModel
    if not isinstance(model, NormalizedModel):
        return False
    weights = _conv_weights(model)
    if not weights or any(w.device.type != "cpu" for w in weights):
        return False
    return not is_nhwc(model)


def wants_nhwc(model: nn.Module) -> bool:
    """Whether :func:`fast_layout` would convert ``model`` here and now."""
    return _AUTO.get() and can_use_nhwc(model)


@contextlib.contextmanager
def fast_layout(model: nn.Module) -> Iterator[bool]:
    """Run ``model`` in NHWC for the block when :func:`wants_nhwc`; yields whether it did."""
    if not wants_nhwc(model):
        yield False
        return
    model.to(memory_format=torch.channels_last)
    token = _AUTO.set(False)  # nested blocks (an attack inside an evaluation) leave it alone
    try:
        yield True
    finally:
        _AUTO.reset(token)
        model.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def keep_layout() -> Iterator[None]:
    """Inside this block :func:`fast_layout` changes nothing (for code that sets the layout
    itself, like :func:`fit`, or a user who wants NCHW)."""
    token = _AUTO.set(False)
    try:
        yield
    finally:
        _AUTO.reset(token)
