"""The memory layout a model runs in, chosen once where the model is made for a run.

oneDNN's NHWC (channels_last) convolutions ran PGD-10 on cnn-small 1.58x faster than NCHW on
this project's machine (docs/performance.md), with the same maths. So a samplewise conv net on
the CPU is put in NHWC where it is made or loaded (:func:`samplewise.models.create_model`,
:func:`samplewise.models.load_model`, and through it the teacher loader), and
:func:`samplewise.train.fit` sets its student's layout from ``TrainConfig.channels_last``
(:func:`run_in_nhwc`). The attacks, :func:`samplewise.evaluate.evaluate` and the vulnerability
analysis run a model in the layout it has: they never convert it.

:func:`choose_layout` is that one choice. Automatic (``nhwc=None``), it turns NHWC on for a
:class:`~samplewise.models.NormalizedModel` with 2-D convolutions on the CPU and off for one
elsewhere (untested on CUDA, where NCHW stays the default); any other module is left as it is
(an external module might ``view`` a convolution's output, which fails on NHWC strides). To run
a samplewise model in NCHW, call ``choose_layout(model, False)`` (or ``model.to(
memory_format=torch.contiguous_format)``) once.

Example:
    >>> model = create_model("cnn-small", card)      # NHWC on the CPU
    >>> choose_layout(model, False)                  # NCHW from now on
    False
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["choose_layout", "is_nhwc", "can_use_nhwc", "run_in_nhwc"]


def _conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def is_nhwc(model: nn.Module) -> bool:
    """True when every 2-D convolution weight of ``model`` is in the channels_last layout."""
    weights = _conv_weights(model)
    return bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last)
                                 and not w.is_contiguous() for w in weights
                                 if w.shape[1] > 1 and w.shape[2] * w.shape[3] > 1)


def _samplewise_conv_net(model: nn.Module) -> bool:
    """A :class:`~samplewise.models.NormalizedModel` (``nhwc_safe``) with 2-D convolutions."""
    return getattr(model, "nhwc_safe", False) is True and bool(_conv_weights(model))


def can_use_nhwc(model: nn.Module) -> bool:
    """A samplewise conv net on the CPU (the models the automatic choice puts in NHWC)."""
    if not _samplewise_conv_net(model):
        return False
    weights = _conv_weights(model)
    return bool(weights) and all(w.device.type == "cpu" for w in weights)


def choose_layout(model: nn.Module, nhwc: Optional[bool] = None) -> bool:
    """Put ``model`` in its run layout, in place (parameters stay the same objects); returns
    whether it is NHWC now.

    ``nhwc=None`` (automatic): NHWC for a samplewise conv net on the CPU, NCHW for one on another
    device, anything else left alone. True / False: NHWC / NCHW for any model with convolutions.
    """
    if nhwc is None:
        if not _samplewise_conv_net(model):
            return is_nhwc(model)
        nhwc = can_use_nhwc(model)
    if not _conv_weights(model):
        return False
    if nhwc != is_nhwc(model):
        model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    return nhwc


def run_in_nhwc(channels_last: Optional[bool], model: nn.Module, device, *,
                ddp: bool = False) -> bool:
    """Whether a training run (:func:`samplewise.train.fit`) runs ``model`` in the NHWC
    (channels_last) memory layout, from its ``TrainConfig.channels_last``.

    ``channels_last`` True or False decides. None ("auto", the default) turns it on for a
    model with 2-D convolutions on the CPU, where oneDNN's NHWC convolutions ran a ``pgd-at``
    epoch of cnn-small 1.45-1.9x faster than NCHW on this project's machine (``samplewise bench
    --items fastpaths``); the maths is the same, only the float rounding order may differ. Auto
    stays off on CUDA (untested here: ask for it with ``channels_last: true``) and under DDP,
    whose gradient buckets are laid out before ``fit`` sees the model.
    """
    if channels_last is not None:
        return bool(channels_last)
    if ddp or torch.device(device).type != "cpu":
        return False
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
