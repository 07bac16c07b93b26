"""Pure loss functions on logits.

Every function here maps tensors to a tensor: none of them touches a model's train/eval mode, an
optimizer or a gradient buffer, and none synchronises with the host (no ``.item()``), so they can
sit inside attack loops. Objectives combine them (docs/architecture.md).

Conventions:
    * ``logits`` are ``(B, K)`` unnormalised scores, ``y`` is ``(B,)`` int64 labels.
    * ``p = softmax(z)``; ``KL(p || q) = sum_c p_c (log p_c - log q_c)``, the target (teacher,
      clean) distribution first, as in ``kl(target_logits, logits)``.
    * ``reduction`` is ``"mean"`` (mean over samples of the per-sample value, i.e. PyTorch's
      ``"batchmean"`` for KL), ``"sum"`` (sum over samples) or ``"none"`` (the ``(B,)`` vector).

Example:
    >>> z = torch.randn(4, 10); y = torch.randint(0, 10, (4,))
    >>> ce(z, y, reduction="none").shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import SamplewiseError

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")

__all__ = ["Reduction", "reduce", "ce", "kl", "kl_probs", "trades_kl", "cw_margin", "dlr",
           "mart_loss", "renyi_entropy"]


def reduce(t: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Reduce a per-sample tensor ``t`` of shape ``(B,)`` over the batch.

    ``"mean"`` -> ``t.mean()``, ``"sum"`` -> ``t.sum()``, ``"none"`` -> ``t`` unchanged.

    Example:
        >>> reduce(torch.tensor([1.0, 3.0]), "mean")
        tensor(2.)
    """
    if reduction == "mean":
        return t.mean()
    if reduction == "sum":
        return t.sum()
    if reduction == "none":
        return t
    raise SamplewiseError(f"unknown reduction {reduction!r}; choose from: {', '.join(_REDUCTIONS)}")


def _check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    if logits.dim() != 2:
        raise SamplewiseError(f"{name} must have shape (B, K), got {tuple(logits.shape)}")


def _check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    _check_logits(logits)
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise SamplewiseError(f"labels must have shape ({logits.shape[0]},), got {tuple(y.shape)}")


def _check_same(a: torch.Tensor, b: torch.Tensor) -> None:
    _check_logits(a, "target")
    _check_logits(b)
    if a.shape != b.shape:
        raise SamplewiseError(f"target and logits shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def ce(logits: torch.Tensor, y: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Cross-entropy ``CE_i = -log softmax(z_i)_{y_i} = logsumexp(z_i) - z_{i, y_i}``.

    Args:
        logits: ``(B, K)`` logits.
        y: ``(B,)`` integer labels.
        reduction: ``"mean" | "sum" | "none"``.

    Example:
        >>> ce(torch.zeros(2, 4), torch.tensor([0, 3]))  # log 4
        tensor(1.3863)
    """
    _check_labels(logits, y)
    return reduce(F.cross_entropy(logits, y, reduction="none"), reduction)


def kl(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
       reduction: Reduction = "mean") -> torch.Tensor:
    """Per-sample ``KL(softmax(t / T) || softmax(z / T))``, the target first.

    ``KL_i = sum_c p_c (log p_c - log q_c)`` with ``log p = log_softmax(t / T)`` and
    ``log q = log_softmax(z / T)`` (both in log space for stability). The ``T^2`` factor of
    Hinton-style distillation is *not* applied here: objectives that want it multiply by it.
    Gradients flow into both arguments; detach the target if it is a constant.

    Args:
        target_logits: ``(B, K)`` logits of the target (teacher / clean) distribution.
        logits: ``(B, K)`` logits of the model distribution.
        temperature: softmax temperature ``T > 0`` (default 1).
        reduction: ``"mean"`` (= PyTorch's ``batchmean``) | ``"sum"`` | ``"none"``.

    Example:
        >>> z = torch.randn(3, 5)
        >>> kl(z, z, reduction="none")
        tensor([0., 0., 0.])
    """
    _check_same(target_logits, logits)
    if not temperature > 0:
        raise SamplewiseError(f"temperature must be > 0, got {temperature}")
    log_p = F.log_softmax(target_logits / temperature, dim=1)
    log_q = F.log_softmax(logits / temperature, dim=1)
    per_sample = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return reduce(per_sample, reduction)


def kl_probs(target_probs: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
             reduction: Reduction = "mean") -> torch.Tensor:
    """Per-sample ``KL(p || softmax(z / T))`` with the target given as probabilities ``p``.

    ``KL_i = sum_c [p_c log p_c - p_c log q_c]`` with ``0 log 0 = 0`` (``torch.xlogy``), so
    one-hot or sparse targets are fine. ``temperature`` applies to ``logits`` only.

    Args:
        target_probs: ``(B, K)`` rows summing to 1.
        logits: ``(B, K)`` model logits.
        temperature: softmax temperature of the model distribution (default 1).
        reduction: ``"mean" | "sum" | "none"``.

    Example:
        >>> kl_probs(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))  # log 2
        tensor(0.6931)
    """
    _check_same(target_probs, logits)
    if not temperature > 0:
        raise SamplewiseError(f"temperature must be > 0, got {temperature}")
    log_q = F.log_softmax(logits / temperature, dim=1)
    per_sample = (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(dim=1)
    return reduce(per_sample, reduction)


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor,
              reduction: Reduction = "mean") -> torch.Tensor:
    """TRADES robustness term (Zhang et al. 2019): per-sample ``KL(p(x) || p(x_adv))``.

    Same as ``kl(clean_logits, adv_logits)``; the TRADES reference lets gradients flow through
    both terms, so nothing is detached here.

    Example:
        >>> z = torch.randn(2, 10)
        >>> bool(trades_kl(z, z + 1.0).abs() < 1e-6)  # a constant shift leaves softmax unchanged
        True
    """
    return kl(clean_logits, adv_logits, reduction=reduction)


def _max_other(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y_i} z_{i, j}`` per sample (the true class masked with -inf)."""
    mask = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(mask, float("-inf")).amax(dim=1)


def cw_margin(logits: torch.Tensor, y: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Carlini-Wagner margin ``m_i = max_{j != y_i} z_{i,j} - z_{i,y_i}`` (Carlini & Wagner 2017).

    Positive iff the sample is misclassified; attacks maximise it (CW-inf = PGD on this loss).

    Example:
        >>> cw_margin(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0]))
        tensor(-1.)
    """
    _check_labels(logits, y)
    if logits.shape[1] < 2:
        raise SamplewiseError("cw_margin needs at least 2 classes")
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return reduce(_max_other(logits, y) - z_y, reduction)


def dlr(logits: torch.Tensor, y: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Difference of Logits Ratio loss (Croce & Hein 2020, AutoAttack), to be maximised.

    ``DLR_i = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`` where ``z_pi1 >= z_pi2 >= ...``
    are the sorted logits; it is the CW margin divided by the spread of the top-3 logits, so it is
    invariant to shifting and rescaling the logits. Needs at least 3 classes.

    Example:
        >>> dlr(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([0]))
        tensor(-0.5000)
    """
    _check_labels(logits, y)
    if logits.shape[1] < 3:
        raise SamplewiseError(f"dlr needs at least 3 classes, got {logits.shape[1]}")
    top3 = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    per_sample = (_max_other(logits, y) - z_y) / (top3[:, 0] - top3[:, 2] + 1e-12)
    return reduce(per_sample, reduction)


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor,
              beta: float = 6.0, reduction: Reduction = "mean") -> torch.Tensor:
    """MART loss (Wang et al. 2020, "Improving adversarial robustness requires revisiting
    misclassified examples").

    Per sample, with ``p = softmax(z(x))``, ``p' = softmax(z(x_adv))``::

        BCE_i  = -log p'_y - log(1 - max_{k != y} p'_k)          (boosted CE on x_adv)
        MART_i = BCE_i + beta * KL(p || p') * (1 - p_y)

    The second log is clamped at ``log(1e-12)`` for stability (the reference code adds small
    constants instead; the difference is below float32 resolution for non-degenerate inputs).
    Default ``beta = 6`` (the paper's CIFAR-10 setting).

    Example:
        >>> z = torch.randn(4, 10); y = torch.randint(0, 10, (4,))
        >>> mart_loss(z, z, y, reduction="none").shape
        torch.Size([4])
    """
    _check_same(clean_logits, adv_logits)
    _check_labels(adv_logits, y)
    log_p_adv = F.log_softmax(adv_logits, dim=1)
    p_adv_other = _max_other(log_p_adv, y).exp()
    bce = -log_p_adv.gather(1, y[:, None]).squeeze(1) - torch.log((1 - p_adv_other).clamp_min(1e-12))
    p_clean_y = F.softmax(clean_logits, dim=1).gather(1, y[:, None]).squeeze(1)
    robust = kl(clean_logits, adv_logits, reduction="none") * (1 - p_clean_y)
    return reduce(bce + beta * robust, reduction)


def renyi_entropy(probs: torch.Tensor, gamma: float = 1.0,
                  reduction: Reduction = "mean") -> torch.Tensor:
    """Rényi entropy of order ``gamma`` of each row of ``probs`` (natural log).

    ``H_gamma(p) = log(sum_c p_c^gamma) / (1 - gamma)`` for ``gamma`` not 1; the limit
    ``gamma -> 1`` is the Shannon entropy ``-sum_c p_c log p_c`` (used exactly at ``gamma == 1``);
    ``gamma = 0`` is ``log |support|`` and ``gamma = inf`` is the min-entropy ``-log max_c p_c``.
    Used by SAAD's entropy transfer signal.

    Args:
        probs: ``(B, K)`` rows summing to 1.
        gamma: order ``>= 0`` (default 1, Shannon).
        reduction: ``"mean" | "sum" | "none"``.

    Example:
        >>> renyi_entropy(torch.full((1, 4), 0.25), gamma=2.0)  # log 4
        tensor(1.3863)
    """
    _check_logits(probs, "probs")
    if not gamma >= 0:
        raise SamplewiseError(f"gamma must be >= 0, got {gamma}")
    if gamma == 1:
        per_sample = -torch.xlogy(probs, probs).sum(dim=1)
    elif math.isinf(gamma):
        per_sample = -torch.log(probs.amax(dim=1))
    elif gamma == 0:
        per_sample = torch.log((probs > 0).sum(dim=1).to(probs.dtype))
    else:
        per_sample = torch.log(probs.pow(gamma).sum(dim=1)) / (1.0 - gamma)
    return reduce(per_sample, reduction)
