"""A stem convolution whose *input* gradient is one matrix product and a ``fold``.

Adversarial attacks and online AIGN tracking differentiate the loss with respect to the image,
so every step pays for the input gradient of the first convolution. For a one-channel image
(MNIST, Fashion-MNIST, digits) the library kernel for that gradient (a transposed convolution
with one output channel) is slow on the CPU: oneDNN measured 6-16 ms for a batch of 128
28x28 images against 32 filters, as long as a third of ``cnn-small``'s forward pass.

The same gradient is ``fold(grad_out^T @ W)``: a ``(B*H*W, C_out) @ (C_out, k*k)`` matrix
product gives each output position's contribution to its ``k x k`` input window, and
:func:`torch.nn.functional.fold` sums the overlapping windows (col2im). Measured 2.5 ms for the
same batch (``samplewise bench`` item ``fastpaths`` reports it). With three input channels
the matrix product no longer wins (measured equal or slower), so the fast path is used only
for one-channel stems.

:class:`StemConv2d` is an ``nn.Conv2d`` (same parameters, same ``state_dict``) that takes this
path when its input is on the CPU and requires a gradient; otherwise (training steps on
clean inputs, evaluation, autocast, ``torch.func`` transforms, ``torch.export``, and CUDA,
where it was not measured and cuDNN has its own kernels) it is the plain convolution. The weight and bias
gradients always come from the library kernel. Parity with ``nn.Conv2d`` (values, gradients
and second derivatives) is tested in ``tests/test_fastconv.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StemConv2d", "set_fast_input_grad"]


class _AddInputGrad(torch.autograd.Function):
    """Identity on ``y = conv2d(x.detach(), weight, bias)`` that adds ``x``'s gradient.

    The weight and bias gradients flow through the library convolution that made ``y`` (and are
    computed only when a caller asks for them); this node passes ``y``'s gradient on unchanged
    and gives ``x`` the input gradient as a matrix product and a fold, written in differentiable
    ops of the incoming gradient and the weight, so second derivatives (an input-gradient
    penalty differentiated with respect to the weights) are exact too.
    """

    @staticmethod
    def forward(ctx: Any, y, x, weight, stride, padding, dilation):
        ctx.mark_dirty(y)  # returned as-is: y is the conv's own output, so no copy is made
        ctx.save_for_backward(weight)
        ctx.conf = (x.shape[2:], x.dtype, stride, padding, dilation)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        size, dtype, stride, padding, dilation = ctx.conf
        b, c_out, h_out, w_out = grad.shape
        # (B, H_out*W_out, C_out) @ (C_out, C_in*kh*kw): each output position's share of its
        # input window; fold (col2im) sums the overlapping windows back onto the image
        cols = grad.permute(0, 2, 3, 1).reshape(b, h_out * w_out, c_out) @ \
            weight.reshape(c_out, -1).to(grad.dtype)
        grad_x = F.fold(cols.transpose(1, 2), size, weight.shape[2:], dilation=dilation,
                        padding=padding, stride=stride)
        return grad, grad_x.to(dtype), None, None, None, None


def _functorch_active() -> bool:
    """Inside ``torch.func`` transforms (vmap, grad, ...) the plain convolution is used."""
    probe = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(probe()) if probe is not None else True


class StemConv2d(nn.Conv2d):
    """``nn.Conv2d`` for the first layer of a network; see the module docstring.

    ``fast_input_grad`` is True when the fast path applies to this layer (one input channel,
    ``groups=1``, zero padding given as numbers); :func:`set_fast_input_grad` turns it off,
    e.g. to time the plain convolution.

    Example:
        >>> conv = StemConv2d(1, 32, 3, padding=1)
        >>> x = torch.rand(4, 1, 28, 28, requires_grad=True)
        >>> conv(x).sum().backward()   # x.grad via matmul + fold
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast_input_grad = self.fast_path_applies()

    def fast_path_applies(self) -> bool:
        """One input channel, ``groups=1``, zero padding given as numbers."""
        return (self.in_channels == 1 and self.groups == 1 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.fast_input_grad and x.requires_grad and x.dim() == 4 and x.device.type == "cpu"
                and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
                and not _functorch_active()):
            y = F.conv2d(x.detach(), self.weight, self.bias, self.stride, self.padding,
                         self.dilation)
            # the weight is passed (not detached) so that a double backward (create_graph)
            # differentiates the input gradient with respect to it; its first-order gradient
            # comes from the convolution above, so this node returns None for it
            return _AddInputGrad.apply(y, x, self.weight, self.stride, self.padding,
                                       self.dilation)
        return super().forward(x)


def set_fast_input_grad(model: nn.Module, enabled: bool) -> int:
    """Turn the fast input gradient of every :class:`StemConv2d` in ``model`` on or off (on
    only where it applies); returns how many layers it applies to."""
    n = 0
    for m in model.modules():
        if isinstance(m, StemConv2d):
            applies = m.fast_path_applies()
            m.fast_input_grad = bool(enabled) and applies
            n += applies
    return n
