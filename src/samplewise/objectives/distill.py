"""Adversarial distillation objectives: ARD, RSLAD, IAD, AdaAD, IGDM (methods.md §4).

SAAD and ``saad-measured`` live in :mod:`samplewise.objectives.saad` and build on the pieces here.

Every distiller holds a frozen teacher (eval mode, ``requires_grad=False`` on every parameter, set
once at construction and re-asserted each step). Teacher forwards run under ``torch.no_grad()``
except inside an inner maximisation that differentiates through the teacher with respect to the
*input* (AdaAD, IGDM, SAAD); even there the parameters never receive a gradient. Each teacher
output used twice in a step (e.g. ``p_T(x)`` for RSLAD's attack target and outer loss) is computed
once.

Every call returns ``loss``, ``logits`` (student on ``x'``), ``logits_adv``, ``x_adv``,
``loss_per_sample``, ``transfer`` (bool per sample: the teacher misclassifies the student-crafted
``x'``) and ``epoch_metrics = {"tas": transfer}``. Methods that do not otherwise need the teacher
on ``x'`` (ARD, RSLAD, IAD during warm-up) spend one extra no-grad teacher forward on it for
this TAS measurement; ``measure_tas=False`` skips it (and drops ``transfer``/``tas``).

Example:
    >>> obj = build_objective("rslad", teacher=teacher, eps=8 / 255, alpha=2 / 255, steps=10)
    >>> out = obj(student, x, y, generator=torch.Generator().manual_seed(0))
    >>> out["loss"].backward()
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..attacks import pgd
from ..errors import SamplewiseError
from .base import OBJECTIVES, Objective, StepContext

__all__ = ["Distiller", "ARD", "RSLAD", "IAD", "AdaAD", "IGDM", "freeze_teacher",
           "maximise_kl", "linearised_teacher", "igdm_term", "transfer_flags"]


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put ``teacher`` in eval mode and switch off ``requires_grad`` on all its parameters.

    Example:
        >>> t = freeze_teacher(nn.Linear(4, 2))
        >>> t.training, t.weight.requires_grad
        (False, False)
    """
    if not isinstance(teacher, nn.Module):
        raise SamplewiseError(f"the teacher must be an nn.Module, got {type(teacher).__name__}")
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def transfer_flags(teacher_adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Adversarial transferability per sample: ``argmax z_T(x') != y`` (bool, detached).

    Example:
        >>> transfer_flags(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
        tensor([False,  True])
    """
    return (teacher_adv_logits.detach().argmax(1) != y)


def maximise_kl(student: nn.Module, x: torch.Tensor, target_fn: Callable[[torch.Tensor], torch.Tensor],
                *, eps: float, alpha: float, steps: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """L∞ PGD maximising ``Σ_i KL(softmax(target_fn(x')_i) ‖ softmax(S(x')_i))`` over ``x'``.

    Unlike :func:`samplewise.attacks.pgd` with ``loss="kl"`` (fixed target), the target here is a
    function of ``x'`` and the gradient flows through it too: the teacher itself (AdaAD, IGDM) or
    SAAD's linearised teacher. Start ``x + 0.001·N(0, I)`` (projected), ``steps`` signed steps of
    ``alpha``, projection onto the ε-ball ∩ [0, 1]. The student runs in eval mode (restored after).
    Only input gradients are taken, so no parameter ``.grad`` is touched. It is
    :func:`samplewise.attacks.pgd` with this objective as its ``loss`` callable.

    Example:
        >>> x_adv = maximise_kl(student, x, teacher, eps=8 / 255, alpha=2 / 255, steps=10)
    """
    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        return losses.kl(target_fn(x_adv), student(x_adv), reduction="sum")

    return pgd(student, x, None, eps=eps, alpha=alpha, steps=steps, loss=objective,
               random_start="normal", generator=generator)


def linearised_teacher(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float = 1.0
                       ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """SAAD's inner-loop teacher: ``z̃_T(x') = z_T(x) + λ·<∇_x z_T(x)_y, x' − x>·e_y``.

    Only the true-class logit moves (to first order around ``x``); the others stay at ``z_T(x)``.
    Costs one teacher forward and one input-gradient backward on ``x``. Returns the detached clean
    teacher logits ``z_T(x)`` (reusable for a clean distillation term) and the target function.

    Example:
        >>> z_clean, target = linearised_teacher(teacher, x, y)
        >>> torch.allclose(target(x), z_clean)
        True
    """
    with torch.enable_grad():
        x0 = x.detach().requires_grad_(True)
        z = teacher(x0)
        g, = torch.autograd.grad(z.gather(1, y[:, None]).sum(), x0)
    z, x = z.detach(), x.detach()
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)

    def target(x_adv: torch.Tensor) -> torch.Tensor:
        shift = ((x_adv - x) * g).flatten(1).sum(1)
        return z + lam * shift[:, None] * onehot

    return z, target


def igdm_term(zt_plus: torch.Tensor, zt_minus: torch.Tensor, zs_plus: torch.Tensor,
              zs_minus: torch.Tensor) -> torch.Tensor:
    """Per-sample IGDM term ``KL(softmax(z_T(x+δ) − z_T(x−δ)) ‖ softmax(z_S(x+δ) − z_S(x−δ)))``.

    Example:
        >>> z = torch.randn(2, 3)
        >>> igdm_term(z, z, z, z)  # zero differences on both sides
        tensor([0., 0.])
    """
    return losses.kl((zt_plus - zt_minus).detach(), zs_plus - zs_minus, reduction="none")


class Distiller(Objective):
    """Base of the distillation objectives: a frozen teacher and validated options.

    Subclasses list their options with defaults in ``defaults``; each option becomes an attribute.
    """

    name = "distill"
    needs_teacher = True
    defaults: dict[str, Any] = {}
    #: the distillation recipe's weight decay, shared by every distillation method (SAAD's
    #: recipe: SGD, wd 2e-4; see "Recipe defaults" in docs/methods.md)
    recipe = {"weight_decay": 2e-4}

    def __init__(self, *, teacher: nn.Module, eps: float, alpha: float, steps: int, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise SamplewiseError(f"objective '{self.name}' got unknown option(s): {', '.join(unknown)}; "
                                  f"choose from: {', '.join(self.defaults) or '(none)'}")
        super().__init__(eps=eps, alpha=alpha, steps=steps)
        self.teacher = freeze_teacher(teacher)
        self.options = {**self.defaults, **options}
        for key, value in self.options.items():
            setattr(self, key, value)
        self._check_options()

    def _check_options(self) -> None:
        """Validate option values (subclasses extend)."""

    def settings(self) -> dict:
        return {**super().settings(), **self.options}

    def _prepare(self, x: torch.Tensor) -> None:
        """Re-assert the teacher's eval mode and move it to the batch's device if needed."""
        self.teacher.eval()
        ref = next(itertools.chain(self.teacher.parameters(), self.teacher.buffers()), None)
        if ref is not None and ref.device != x.device:
            self.teacher.to(x.device)

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)

    def _out(self, loss_ps: torch.Tensor, zs_adv: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
             zt_adv: torch.Tensor | None, **extra: Any) -> dict:
        out = {"loss": loss_ps.mean(), "logits": zs_adv, "logits_adv": zs_adv.detach(),
               "x_adv": x_adv.detach(), "loss_per_sample": loss_ps.detach(), "epoch_metrics": {}}
        if zt_adv is not None:
            out["transfer"] = transfer_flags(zt_adv, y)
            out["epoch_metrics"]["tas"] = out["transfer"].float()
        out.update(extra)
        return out

    def _tas_logits(self, x_adv: torch.Tensor) -> torch.Tensor | None:
        """Teacher logits on ``x'`` for the TAS metric only (one extra no-grad teacher forward)."""
        return self._teacher(x_adv) if self.measure_tas else None


def check_unit(obj: Distiller, name: str, low_open: bool = False) -> None:
    """Refuse option ``name`` of ``obj`` unless it is a number in [0, 1] ((0, 1] with ``low_open``)."""
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= 1) or (low_open and v == 0):
        raise SamplewiseError(f"objective '{obj.name}': {name} must be in "
                              f"{'(0' if low_open else '[0'}, 1], got {v!r}")


def check_nonneg(obj: Distiller, name: str) -> None:
    """Refuse option ``name`` of ``obj`` unless it is a number >= 0."""
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise SamplewiseError(f"objective '{obj.name}': {name} must be a number >= 0, got {v!r}")


@OBJECTIVES.register("ard", help="Goldblum et al. 2020: α·τ²·KL(p_T^τ(x) ‖ p_S^τ(x')) + (1−α)·CE(S(x), y)")
class ARD(Distiller):
    """Adversarially robust distillation. ``x'``: PGD on CE(S(x'), y) from a uniform start.

    ``loss_i = kd_weight·τ²·KL(p_T^τ(x_i) ‖ p_S^τ(x'_i)) + (1 − kd_weight)·CE(S(x_i), y_i)``; the
    student's clean forward is skipped when ``kd_weight == 1`` (the SAAD code's setting, default).

    Example:
        >>> obj = build_objective("ard", teacher=t, eps=0.1, alpha=0.025, steps=10, temperature=1.0)
    """

    name = "ard"
    defaults = {"kd_weight": 1.0, "temperature": 1.0, "measure_tas": True}

    def _check_options(self) -> None:
        check_unit(self, "kd_weight")
        if not self.temperature > 0:
            raise SamplewiseError(f"objective 'ard': temperature must be > 0, got {self.temperature!r}")

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, loss="ce",
                    random_start=True, generator=ctx.generator)
        zt_clean = self._teacher(x)
        zs_adv = model(x_adv)
        tau = self.temperature
        loss_ps = self.kd_weight * tau ** 2 * losses.kl(zt_clean, zs_adv, temperature=tau, reduction="none")
        if self.kd_weight < 1:
            loss_ps = loss_ps + (1 - self.kd_weight) * losses.ce(model(x), y, reduction="none")
        return self._out(loss_ps, zs_adv, x_adv, y, self._tas_logits(x_adv))


@OBJECTIVES.register("rslad", help="Zi et al. 2021: (5/6)·KL(p_T(x) ‖ p_S(x')) + (1/6)·KL(p_T(x) ‖ p_S(x))")
class RSLAD(Distiller):
    """Robust soft-label adversarial distillation.

    ``x'`` maximises ``KL(p_T(x) ‖ p_S(x'))`` from ``x + 0.001·N(0, I)``; ``p_T(x)`` is computed once
    and serves as both the attack target and the soft label of both outer terms:
    ``loss_i = adv_weight·KL(p_T(x_i) ‖ p_S(x'_i)) + (1 − adv_weight)·KL(p_T(x_i) ‖ p_S(x_i))``.

    Example:
        >>> obj = build_objective("rslad", teacher=t, eps=0.1, alpha=0.025, steps=10)
    """

    name = "rslad"
    defaults = {"adv_weight": 5 / 6, "measure_tas": True}

    def _check_options(self) -> None:
        check_unit(self, "adv_weight")

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        zt_clean = self._teacher(x)
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, loss="kl",
                    target=zt_clean, random_start="normal", generator=ctx.generator)
        zs_adv, zs_clean = model(x_adv), model(x)
        loss_ps = (self.adv_weight * losses.kl(zt_clean, zs_adv, reduction="none")
                   + (1 - self.adv_weight) * losses.kl(zt_clean, zs_clean, reduction="none"))
        return self._out(loss_ps, zs_adv, x_adv, y, self._tas_logits(x_adv))


@OBJECTIVES.register("iad", help="Zhu et al. 2022: KL(p_T(x) ‖ p_S(x')) + introspection after a warm-up")
class IAD(Distiller):
    """Introspective adversarial distillation (IAD-I form). ``x'``: PGD on CE, uniform start.

    ``loss_i = KL(p_T(x_i) ‖ p_S(x'_i))``, plus from epoch ``⌊warmup·epochs⌋`` on
    ``(1 − p_T(x'_i)_{y_i}^beta)·KL(p_S(x_i) ‖ p_S(x'_i))`` (gradients flow through both student
    terms). Defaults: ``beta = 0.1``, ``warmup = 0.3`` (the reference code starts at epoch 60 of 200).
    After the warm-up the teacher forward on ``x'`` serves both the weight and TAS.

    Example:
        >>> obj = build_objective("iad", teacher=t, eps=0.1, alpha=0.025, steps=10, warmup=0.0)
    """

    name = "iad"
    defaults = {"warmup": 0.3, "beta": 0.1, "measure_tas": True}

    def _check_options(self) -> None:
        check_unit(self, "warmup")
        check_nonneg(self, "beta")

    def needs_epoch(self) -> bool:
        return self.warmup > 0  # the introspection term starts after the warm-up epochs

    def introspecting(self, ctx: StepContext) -> bool:
        """Whether the introspection term is on at this step (after the warm-up epochs)."""
        return ctx.epoch >= int(self.warmup * ctx.epochs)

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, loss="ce",
                    random_start=True, generator=ctx.generator)
        zt_clean = self._teacher(x)
        zs_adv = model(x_adv)
        loss_ps = losses.kl(zt_clean, zs_adv, reduction="none")
        if self.introspecting(ctx):
            zt_adv = self._teacher(x_adv)
            trust = F.softmax(zt_adv, dim=1).gather(1, y[:, None]).squeeze(1).pow(self.beta)
            loss_ps = loss_ps + (1 - trust) * losses.kl(model(x), zs_adv, reduction="none")
        else:
            zt_adv = self._tas_logits(x_adv)
        return self._out(loss_ps, zs_adv, x_adv, y, zt_adv)


@OBJECTIVES.register("adaad", help="Huang et al. 2023: KL(p_T(x') ‖ p_S(x')), x' maximises it (teacher in the loop)")
class AdaAD(Distiller):
    """Adaptive adversarial distillation: ``x'`` maximises ``KL(p_T(x') ‖ p_S(x'))`` with the
    teacher in the loop (:func:`maximise_kl`, start ``x + 0.001·N(0, I)``); the outer loss is the
    same KL, ``loss_i = KL(p_T(x'_i) ‖ p_S(x'_i))``.

    Example:
        >>> obj = build_objective("adaad", teacher=t, eps=0.1, alpha=0.025, steps=10)
    """

    name = "adaad"

    def _inner(self, model, x, y, ctx: StepContext) -> torch.Tensor:
        return maximise_kl(model, x, self.teacher, eps=self.eps, alpha=self.alpha,
                           steps=self.steps, generator=ctx.generator)

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        x_adv = self._inner(model, x, y, ctx)
        zt_adv = self._teacher(x_adv)
        zs_adv = model(x_adv)
        return self._out(losses.kl(zt_adv, zs_adv, reduction="none"), zs_adv, x_adv, y, zt_adv)


def ramp_factor(ctx: StepContext, ramp: bool) -> float:
    """IGDM's ``t/E`` with ``t`` the 1-based epoch (1/E in the first epoch, 1 in the last)."""
    return (ctx.epoch + 1) / max(ctx.epochs, 1) if ramp else 1.0


@OBJECTIVES.register("igdm", help="Lee et al. 2024: AdaAD + α_IG·(t/E)·IGDM term")
class IGDM(AdaAD):
    """Indirect gradient distillation on top of AdaAD. With ``δ = x' − x``:

    ``loss_i = KL(p_T(x'_i) ‖ p_S(x'_i)) + alpha_ig·r·KL(softmax(z_T(x+δ) − z_T(x−δ)) ‖
    softmax(z_S(x+δ) − z_S(x−δ)))``, ``r = t/E`` (1-based epoch) when ``ramp`` else 1.
    ``x − δ`` is not clipped to [0, 1] (as in the reference code). ``alpha_ig``: 1 for CIFAR-10,
    10 for CIFAR-100 / Tiny-ImageNet.

    Example:
        >>> obj = build_objective("igdm", teacher=t, eps=0.1, alpha=0.025, steps=10, alpha_ig=10.0)
    """

    name = "igdm"
    defaults = {"alpha_ig": 1.0, "ramp": True}

    def _check_options(self) -> None:
        check_nonneg(self, "alpha_ig")

    def needs_epoch(self) -> bool:
        return bool(self.ramp) and self.alpha_ig > 0  # the t/E ramp

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        self._prepare(x)
        x_adv = self._inner(model, x, y, ctx)
        x_minus = x - (x_adv - x)  # x − δ
        zt_adv, zt_minus = self._teacher(x_adv), self._teacher(x_minus)
        zs_adv, zs_minus = model(x_adv), model(x_minus)
        loss_ps = (losses.kl(zt_adv, zs_adv, reduction="none") + self.alpha_ig * ramp_factor(ctx, self.ramp)
                   * igdm_term(zt_adv, zt_minus, zs_adv, zs_minus))
        return self._out(loss_ps, zs_adv, x_adv, y, zt_adv)

