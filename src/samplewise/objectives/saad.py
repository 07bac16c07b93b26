"""SAAD: sample-wise adaptive adversarial distillation (methods.md §4, seed 001).

One objective, two registry presets:

* ``saad``: the official code's recipe (entropy signal, γ = 1, ``w = 5·(H − min_batch H)``
  floored at 0, ``w̃`` min–max normalised, β = 0, IGDM term weighted by ``w``, linearised teacher
  in the inner loop);
* ``saad-measured``: the abstract's description (measured transfer ``1[argmax p_T(x') ≠ y]`` as
  the weight, β = 1 clean term weighted by ``1 − w̃``, optional per-sample EMA of the signal
  across epochs, kept by dataset index).

The loss, with ``δ = x' − x`` and ``r`` IGDM's ``t/E`` ramp::

    L = (1/B) Σ_i [ w_i·(KL(p_T(x'_i) ‖ p_S(x'_i)) + α_IG·r·IGDM_i) + β·(1 − w̃_i)·KL(p_T(x_i) ‖ p_S(x_i)) ]

The transfer signal is read from the teacher logits on ``x'`` that the loss computes anyway, so
the weighting costs no extra pass (see docs/distillation.md for the counted passes).

Example:
    >>> obj = build_objective("saad-measured", teacher=t, eps=8 / 255, alpha=2 / 255, steps=10, ema=0.9)
    >>> out = obj(student, x, y, idx=idx, epoch=0, epochs=200); out["weights"].shape
    torch.Size([128])
"""

from __future__ import annotations

import torch

from .. import losses
from ..errors import SamplewiseError
from .base import OBJECTIVES, StepContext
from .distill import (Distiller, check_nonneg, check_unit, igdm_term, linearised_teacher,
                      maximise_kl, ramp_factor)

__all__ = ["SAAD", "SAADMeasured", "transfer_signal", "signal_weights", "saad_weights"]

SIGNALS = ("hard", "soft", "entropy")
CENTERS = ("min", "none")
NORMALIZATIONS = ("minmax", "clip")
INNER = ("linear", "teacher")


def transfer_signal(teacher_adv_logits: torch.Tensor, y: torch.Tensor, signal: str = "entropy",
                    gamma: float = 1.0) -> torch.Tensor:
    """Per-sample transfer signal from the teacher's logits on the student-crafted ``x'`` (detached).

    ``hard``: ``1[argmax p_T(x') ≠ y]``; ``soft``: ``1 − p_T(x')_y``; ``entropy``: Rényi entropy
    ``H_γ(p_T(x'))`` in nats (Shannon at γ = 1). Higher = more transferable.

    Example:
        >>> transfer_signal(torch.tensor([[3.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 0]), "hard")
        tensor([0., 1.])
    """
    z = teacher_adv_logits.detach()
    if signal == "hard":
        return (z.argmax(1) != y).to(z.dtype)
    if signal == "soft":
        return 1 - torch.softmax(z, dim=1).gather(1, y[:, None]).squeeze(1)
    if signal == "entropy":
        return losses.renyi_entropy(torch.softmax(z, dim=1), gamma=gamma, reduction="none")
    raise SamplewiseError(f"unknown SAAD signal {signal!r}; choose from: {', '.join(SIGNALS)}")


def signal_weights(s: torch.Tensor, *, scale: float = 5.0, center: str = "min",
                   normalize: str = "minmax", floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial weights ``w`` and normalised weights ``w̃`` from a per-sample signal ``s``.

    ``w = max(scale·(s − c), floor)`` with ``c = min_batch s`` (``center="min"``, official) or 0
    (``"none"``); ``w̃ = (w − min w)/(max w − min w + 1e-8)`` (``normalize="minmax"``, official) or
    ``clamp(w, 0, 1)`` (``"clip"``). Both are detached constants.

    Example:
        >>> signal_weights(torch.tensor([0.0, 1.0]), scale=1.0, center="none", normalize="clip")
        (tensor([0., 1.]), tensor([0., 1.]))
    """
    s = s.detach()
    if center not in CENTERS:
        raise SamplewiseError(f"unknown SAAD center {center!r}; choose from: {', '.join(CENTERS)}")
    w = scale * (s - s.min()) if center == "min" else scale * s
    w = w.clamp(min=floor)
    if normalize == "minmax":
        w_tilde = (w - w.min()) / (w.max() - w.min() + 1e-8)
    elif normalize == "clip":
        w_tilde = w.clamp(0.0, 1.0)
    else:
        raise SamplewiseError(f"unknown SAAD normalize {normalize!r}; choose from: {', '.join(NORMALIZATIONS)}")
    return w, w_tilde


def saad_weights(teacher_adv_logits: torch.Tensor, y: torch.Tensor, signal: str = "entropy",
                 gamma: float = 1.0, *, scale: float = 5.0, center: str = "min",
                 normalize: str = "minmax", floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SAAD's per-sample weights ``(w, w̃)`` from the teacher logits on ``x'`` (no EMA).

    :func:`transfer_signal` followed by :func:`signal_weights`; the defaults are the official
    code's (entropy, γ = 1, ``w = 5·(H − min H)`` floored at 0, min–max ``w̃``).

    Example:
        >>> w, w_tilde = saad_weights(torch.randn(8, 10), torch.randint(0, 10, (8,)))
    """
    s = transfer_signal(teacher_adv_logits, y, signal, gamma)
    return signal_weights(s, scale=scale, center=center, normalize=normalize, floor=floor)


@OBJECTIVES.register("saad", help="SAAD, the official code's recipe: entropy-weighted AdaAD+IGDM")
class SAAD(Distiller):
    """Sample-wise adaptive adversarial distillation (one class; ``saad-measured`` changes defaults).

    Options (defaults: the official code):
        signal: ``"entropy"`` | ``"hard"`` | ``"soft"``; gamma: Rényi order (1.0).
        scale (5.0), center (``"min"``), normalize (``"minmax"``), floor (0.0): see :func:`signal_weights`.
        beta: weight of the clean term ``(1 − w̃)·KL(p_T(x) ‖ p_S(x))`` (0.0: off, no clean passes).
        ema: momentum μ of a per-sample EMA of the signal across epochs, by dataset index
            (``None``: off, signal recomputed per batch).
        alpha_ig (1.0), ramp (True): IGDM term ``α_IG·(t/E)``; ``alpha_ig=0`` drops it and its passes.
        inner: ``"linear"`` (official code: the teacher's true-class logit linearised around ``x``,
            :func:`linearised_teacher`) or ``"teacher"`` (exact teacher in the loop, as AdaAD/IGDM).
        lambda_inner: λ of the linearisation (1.0).
        clean_bn_pass: with ``beta=0``, also run the student on ``x`` (train mode, no gradient)
            after the loss's forwards, as the official code does (it computes the clean term and
            multiplies it by 0). Loss and gradient are unchanged; only BatchNorm running
            statistics move, which the eval-mode inner maximisation then uses. Off by default:
            one student forward more per step, for the official code's BN statistics.

    Example:
        >>> obj = build_objective("saad", teacher=t, eps=8 / 255, alpha=2 / 255, steps=10)
    """

    name = "saad"
    defaults = {"signal": "entropy", "gamma": 1.0, "scale": 5.0, "center": "min", "normalize": "minmax",
                "floor": 0.0, "beta": 0.0, "ema": None, "alpha_ig": 1.0, "ramp": True,
                "inner": "linear", "lambda_inner": 1.0, "clean_bn_pass": False}

    def __init__(self, *, teacher, eps, alpha, steps, **options):
        super().__init__(teacher=teacher, eps=eps, alpha=alpha, steps=steps, **options)
        self._ema_values: torch.Tensor | None = None  # per dataset index, grown on demand
        self._ema_seen: torch.Tensor | None = None
        self._index_size: int | None = None  # max dataset index + 1, when fit() has told us

    def bind(self, index: torch.Tensor) -> None:
        """Size the per-sample EMA from the training split once, so the step never syncs."""
        self._index_size = int(index.max()) + 1 if len(index) else 0

    def _check_options(self) -> None:
        for key, choices in (("signal", SIGNALS), ("center", CENTERS), ("normalize", NORMALIZATIONS),
                             ("inner", INNER)):
            if getattr(self, key) not in choices:
                raise SamplewiseError(f"objective '{self.name}': unknown {key} {getattr(self, key)!r}; "
                                      f"choose from: {', '.join(choices)}")
        for key in ("gamma", "scale", "floor", "beta", "alpha_ig", "lambda_inner"):
            check_nonneg(self, key)
        if self.ema is not None:
            check_unit(self, "ema")
            if self.ema == 1:
                raise SamplewiseError(f"objective '{self.name}': ema must be in [0, 1) or None, got 1")
        if not isinstance(self.clean_bn_pass, bool):
            raise SamplewiseError(f"objective '{self.name}': clean_bn_pass must be true or false, "
                                  f"got {self.clean_bn_pass!r}")

    def needs_index(self) -> bool:
        return self.ema is not None  # the per-sample EMA is kept by dataset index

    def needs_epoch(self) -> bool:
        return bool(self.ramp) and self.alpha_ig > 0  # IGDM's t/E ramp

    # ----- per-sample EMA of the transfer signal, indexed by dataset index -----
    def smooth_signal(self, s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Update the per-sample EMA at dataset indices ``idx`` with ``s``; return the smoothed signal.

        ``m_i ← μ·m_i + (1 − μ)·s_i`` (``m_i = s_i`` the first time ``i`` is seen). The state grows
        on demand to ``max(idx) + 1`` entries (at once to the split's size after :meth:`bind`), so it
        does not depend on batch order. Without
        ``ema`` the signal is returned unchanged.

        Example:
            >>> obj.smooth_signal(torch.tensor([1.0, 0.0]), torch.tensor([7, 3]))
            tensor([1., 0.])
        """
        if self.ema is None:
            return s
        idx = idx.to(s.device).long()
        # bound by fit(): sized once, no sync; used on its own: grow to this batch (one sync)
        self._grow(self._index_size if self._index_size is not None else int(idx.max()) + 1, s)
        prev, seen = self._ema_values[idx], self._ema_seen[idx]
        new = torch.where(seen, self.ema * prev + (1 - self.ema) * s.detach(), s.detach())
        self._ema_values[idx] = new
        self._ema_seen[idx] = True
        return new

    def _grow(self, n: int, like: torch.Tensor) -> None:
        if self._ema_values is None:
            self._ema_values = like.new_zeros(0)
            self._ema_seen = torch.zeros(0, dtype=torch.bool, device=like.device)
        self._ema_values = self._ema_values.to(like.device, like.dtype)
        self._ema_seen = self._ema_seen.to(like.device)
        old = len(self._ema_values)
        if n > old:
            self._ema_values = torch.cat([self._ema_values, like.new_zeros(n - old)])
            self._ema_seen = torch.cat([self._ema_seen, self._ema_seen.new_zeros(n - old)])

    def state_dict(self) -> dict:
        if self._ema_values is None:
            return {}
        return {"ema_values": self._ema_values.detach().cpu().clone(),
                "ema_seen": self._ema_seen.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            self._ema_values = self._ema_seen = None
            return
        try:
            values, seen = state["ema_values"], state["ema_seen"]
        except (KeyError, TypeError):
            raise SamplewiseError(f"objective '{self.name}': bad state (expected ema_values, ema_seen)") from None
        if values.shape != seen.shape or values.dim() != 1:
            raise SamplewiseError(f"objective '{self.name}': ema_values and ema_seen shapes differ")
        self._ema_values, self._ema_seen = values.clone(), seen.clone().bool()

    # ----- the step -----
    def _inner(self, model, x, y, ctx: StepContext):
        """``(x', z_T(x) or None)``: the inner maximisation of ``KL(p̃_T(x') ‖ p_S(x'))``."""
        if self.inner == "linear":
            zt_clean, target = linearised_teacher(self.teacher, x, y, self.lambda_inner)
        else:
            zt_clean, target = None, self.teacher
        x_adv = maximise_kl(model, x, target, eps=self.eps, alpha=self.alpha, steps=self.steps,
                            generator=ctx.generator)
        return x_adv, zt_clean

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        x_adv, zt_clean = self._inner(model, x, y, ctx)
        zt_adv = self._teacher(x_adv)
        zs_adv = model(x_adv)
        adv_term = losses.kl(zt_adv, zs_adv, reduction="none")
        if self.alpha_ig > 0:
            x_minus = x - (x_adv - x)
            ig = igdm_term(zt_adv, self._teacher(x_minus), zs_adv, model(x_minus))
            adv_term = adv_term + self.alpha_ig * ramp_factor(ctx, self.ramp) * ig
        s = self.smooth_signal(transfer_signal(zt_adv, y, self.signal, self.gamma), idx)
        w, w_tilde = signal_weights(s, scale=self.scale, center=self.center, normalize=self.normalize,
                                    floor=self.floor)
        loss_ps = w * adv_term
        if self.beta > 0:
            zt_clean = self._teacher(x) if zt_clean is None else zt_clean
            loss_ps = loss_ps + self.beta * (1 - w_tilde) * losses.kl(zt_clean, model(x), reduction="none")
        elif self.clean_bn_pass and model.training:
            with torch.no_grad():  # the official code's zero-weighted clean forward: BN stats only
                model(x)
        return self._out(loss_ps, zs_adv, x_adv, y, zt_adv, weights=w, weights_tilde=w_tilde,
                         signal=s.detach())


@OBJECTIVES.register("saad-measured", help="SAAD as the abstract describes it: measured-transfer weights, β=1")
class SAADMeasured(SAAD):
    """:class:`SAAD` with the abstract's defaults: ``signal="hard"`` (``w_i = 1[teacher wrong on
    x'_i]``), ``scale=1``, ``center="none"``, ``normalize="clip"``, ``beta=1`` (clean term on
    non-transferred samples); ``ema`` optional. Same code path as ``saad``.

    Example:
        >>> obj = build_objective("saad-measured", teacher=t, eps=0.1, alpha=0.025, steps=10, ema=0.9)
    """

    name = "saad-measured"
    defaults = {**SAAD.defaults, "signal": "hard", "scale": 1.0, "center": "none", "normalize": "clip",
                "beta": 1.0}
