"""The AIGN norm option (:func:`norm_kind`), per-row gradient norms, EL2N/GraNd from the logits,
:func:`input_grad_norms` (one batch, any model) and :func:`per_sample_pass`: one eval-mode pass
over a split (rows gathered across ranks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import distributed
from ...attacks import eval_mode
from ...data import Split, iter_batches
from ...errors import SamplewiseError

PNorm = int | str  # 2, 1, "sq" or "inf"


def norm_kind(p: PNorm) -> PNorm:
    """Canonical form of the AIGN norm option: ``2``, ``1``, ``"sq"`` (squared L2) or ``"inf"``.

    Example:
        >>> norm_kind("2"), norm_kind("sq"), norm_kind(float("inf"))
        (2, 'sq', 'inf')
    """
    key = str(p).strip().lower()
    table = {"2": 2, "2.0": 2, "l2": 2, "1": 1, "1.0": 1, "l1": 1, "sq": "sq", "l2sq": "sq",
             "inf": "inf", "linf": "inf"}
    if key not in table:
        raise SamplewiseError(f"unknown AIGN norm p={p!r}; choose from: 2, 1, sq, inf")
    return table[key]


def grad_norm(g: torch.Tensor, p: PNorm) -> torch.Tensor:
    """Per-row norm of a ``B x ...`` gradient: L2, L1, squared L2 (``p="sq"``) or L∞."""
    flat = g.flatten(1)
    if p == 2:
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if p == 1:
        return flat.abs().sum(1)
    if p == "inf":
        return flat.abs().amax(1)
    return flat.pow(2).sum(1)


def ce_input_grad(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample CE (``reduction='none'``) and ``∇ₓ Σᵢ CE(logitsᵢ, yᵢ)``, row i sample i's own.

    ``x`` must require grad and ``logits`` be computed from it. Only the input gradient is taken
    (``torch.autograd.grad``), so no parameter ``.grad`` is touched. Rows are independent only
    when the model does not mix samples (eval mode: BatchNorm uses its running statistics).
    """
    loss = F.cross_entropy(logits, y, reduction="none")
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss, g


def input_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, p: PNorm = 2
                     ) -> torch.Tensor:
    """Each sample's ``‖∇ₓ CE(model(xᵢ), yᵢ)‖_p``: a float tensor of shape ``[B]``.

    One batched backward of the SUM of the per-sample losses (so row i is not scaled by 1/B),
    with the model in eval mode (BatchNorm running statistics, no dropout: the rows are
    independent) and its mode restored afterwards. Only the input gradient is taken, so the
    parameters' ``.grad`` are left as they were. ``x`` is used as given (no copy kept; its own
    ``requires_grad`` and ``.grad`` are not changed). This is one column of ``samplewise score``'s
    checkpoint-mode AIGN when called on the clean training inputs after an epoch.

    Args:
        model: any ``nn.Module`` mapping ``x`` to logits.
        x: inputs (B x ...), in the space the gradient is wanted in ([0, 1] for samplewise models).
        y: int64 labels (B).
        p: ``2`` (default), ``1``, ``float("inf")`` / ``"inf"``, or ``"sq"`` (squared L2).

    Example:
        >>> norms = input_grad_norms(model, x, y, p=2)        # doctest: +SKIP
        >>> norms.shape == (len(x),)                          # doctest: +SKIP
        True
    """
    p = norm_kind(p)
    with eval_mode(model), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        _, g = ce_input_grad(model(xg), xg, y)
    return grad_norm(g.detach(), p).float()


@torch.no_grad()
def _error_terms(logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """EL2N ``‖p − onehot(y)‖₂`` and GraNd's last-layer gradient norm, per sample.

    For CE with a linear head ``z = W h + b``: ``∂L/∂W = e hᵀ`` and ``∂L/∂b = e`` with
    ``e = p − onehot(y)``, so ``‖∇_{W,b} L‖ = ‖e‖₂ · sqrt(‖h‖₂² + 1)`` without any backward pass.
    """
    err = logits.float().softmax(1)
    err[torch.arange(len(y), device=y.device), y] -= 1.0
    el2n = torch.linalg.vector_norm(err, dim=1)
    grand = el2n * torch.sqrt(h.float().pow(2).sum(1) + 1.0)
    return el2n, grand


def per_sample_pass(model: nn.Module, split: Split, *, p: PNorm = 2, batch_size: int = 512,
                    device: str | torch.device | None = None, input_grad: bool = True,
                    features: bool = False) -> dict[str, torch.Tensor]:
    """One eval-mode pass over ``split`` (clean, unaugmented, dataset order).

    The input gradient is ``∇ₓ Σᵢ CE(f(xᵢ), yᵢ)`` in [0, 1] pixel space: the gradient of the SUM,
    so row i is sample i's own gradient (not scaled by 1/B; rows are independent because the
    model is in eval mode, so BatchNorm uses its running statistics). Only the input gradient is
    taken (``torch.autograd.grad``), so no parameter ``.grad`` is touched. The model's mode is
    restored afterwards.

    Returns:
        CPU tensors in ``split`` order: ``index``, ``el2n``, ``grand``, ``loss``, ``prob`` (the
        softmax probability of the true class) and, if asked, ``aign`` (the p-norm of the input
        gradient) and ``features`` (penultimate, float32).

    Example:
        >>> out = per_sample_pass(model, bundle.train, p=2)             # doctest: +SKIP
        >>> out["aign"].shape == (len(bundle.train),)                   # doctest: +SKIP
    """
    p = norm_kind(p)
    device = device if device is not None else next(model.parameters()).device
    keys = ["index", "el2n", "grand", "loss", "prob"] + ["aign"] * input_grad + ["features"] * features
    parts: dict[str, list] = {k: [] for k in keys}
    was = model.training
    model.eval()
    try:
        for x, y, idx in iter_batches(split, batch_size, device):
            with torch.enable_grad() if input_grad else torch.no_grad():
                x.requires_grad_(input_grad)
                h = model.features(x)
                logits = model.head(h)
                if input_grad:
                    loss, g = ce_input_grad(logits, x, y)
                    parts["aign"].append(grad_norm(g, p).detach().cpu())
                else:
                    loss = F.cross_entropy(logits, y, reduction="none")
            el2n, grand = _error_terms(logits.detach(), h.detach(), y)
            parts["index"].append(idx.cpu())
            parts["el2n"].append(el2n.cpu())
            parts["grand"].append(grand.cpu())
            parts["loss"].append(loss.detach().float().cpu())
            prob = logits.detach().float().softmax(1).gather(1, y[:, None]).squeeze(1)
            parts["prob"].append(prob.cpu())
            if features:
                parts["features"].append(h.detach().float().cpu())
    finally:
        model.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


def gather_rows(out: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collect every rank's per-sample rows and return them for all of ``index``."""
    size = int(index.max()) + 1 if len(index) else 0
    merged = {}
    for name, values in out.items():
        if name == "index":
            continue
        table, seen = distributed.gather_by_index(values, out["index"], size)
        if not bool(seen[index].all()):
            raise SamplewiseError("a distributed pass missed some samples")
        merged[name] = table[index]
    merged["index"] = index.clone()
    return merged
