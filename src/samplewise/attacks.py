"""Adversarial attacks as plain functions on inputs in [0, 1].

Every attack here (methods.md §1):

* runs the model in eval mode and restores each submodule's previous mode (:func:`eval_mode`);
* takes only input gradients (``torch.autograd.grad(loss, x_adv)``), so no parameter ``.grad``
  is created or changed; per-sample losses are summed, so a sample's step does not depend on the
  batch size;
* draws its random numbers from ``generator`` (the global RNG when ``None``), so it is
  deterministic for a given generator seed;
* never synchronises with the host inside the step loop.

``eps`` and ``alpha`` may be floats or per-sample tensors of shape ``(B,)`` (e.g. for bisection on
the vulnerability radius). Shapes: ``x`` is ``(B, C, H, W)`` (any ``(B, ...)`` works) in [0, 1],
``y`` is ``(B,)`` int64; every attack returns a detached ``x_adv`` of the shape of ``x``.

Example:
    >>> x_adv = ATTACKS.build("pgd", model, x, y, eps=8 / 255, steps=10)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import nn

from . import losses
from .errors import SamplewiseError
from .registry import Registry
from .threat import THREAT_FIELDS, ThreatModel

__all__ = ["ATTACKS", "AttackContract", "attack_contract", "run_attack", "eval_mode", "clean",
           "fgsm", "pgd", "cw_inf", "autoattack"]

log = logging.getLogger(__name__)

ATTACKS = Registry("attack")
Radius = Union[float, torch.Tensor]
PGD_LOSSES = ("ce", "kl", "cw", "dlr")
NORMS = ("linf", "l2")
AA_VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
AA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; on exit restore every submodule's previous mode.

    The root is restored with ``model.train(prev)`` (so overridden ``train`` methods run), then any
    submodule whose recorded mode differs (e.g. a frozen BatchNorm inside a training model) is
    put back with ``module.train(its_prev)``.

    Example:
        >>> with eval_mode(model):
        ...     logits = model(x)
    """
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        model.train(saved[0][1])
        for module, prev in saved:  # pre-order: parents are fixed before their children
            if module.training != prev:
                module.train(prev)


def _check_radius(value, name: str, x: torch.Tensor, *, positive: bool) -> Radius:
    """Validate a float or ``(B,)`` tensor radius / step; return a float or a broadcastable tensor."""
    bad = f"{name} must be {'> 0' if positive else '>= 0'} and finite, got"
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = float(value)
        else:
            if value.shape != (x.shape[0],):
                raise SamplewiseError(f"{name} tensor must have shape ({x.shape[0]},), got "
                                      f"{tuple(value.shape)}")
            ok = torch.isfinite(value) & ((value > 0) if positive else (value >= 0))
            if not bool(ok.all()):  # one sync per call, outside the step loop
                raise SamplewiseError(f"{bad} a tensor with invalid entries")
            return value.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SamplewiseError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SamplewiseError(f"{bad} {value}")
    return float(value)


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise SamplewiseError(f"x must be (B, ...) and y (B,), got {tuple(x.shape)} and {tuple(y.shape)}")


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise SamplewiseError(f"steps must be an integer >= 0, got {steps!r}")
    return steps


def _start_mode(random_start) -> str | None:
    if random_start is True or random_start == "uniform":
        return "uniform"
    if random_start is False or random_start is None:
        return None
    if random_start == "normal":
        return "normal"
    raise SamplewiseError(f"unknown random_start {random_start!r}; choose from: True, False, "
                          "'uniform', 'normal'")


def _noise(kind: str, x: torch.Tensor, generator: torch.Generator | None,
           shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``U(0, 1)`` or ``N(0, 1)`` noise (shape of ``x`` by default), drawn on ``generator``'s device."""
    fn = torch.rand if kind == "uniform" else torch.randn
    shape = tuple(x.shape) if shape is None else shape
    if generator is None:
        return fn(shape, device=x.device, dtype=x.dtype)
    return fn(shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped ``(B, 1, ..., 1)`` for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: Radius) -> torch.Tensor:
    """Scale ``x_adv - x`` into the L2 ball, then clip to [0, 1].

    Clipping moves each coordinate toward ``x`` (which lies in [0, 1]), so it never leaves the ball.
    """
    delta = x_adv - x
    delta = delta * (eps / (_flat_norm(delta) + 1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def _random_start(x: torch.Tensor, eps: Radius, mode: str | None, norm: str,
                  generator: torch.Generator | None) -> torch.Tensor:
    """The PGD start point x0 (projected into the threat model)."""
    if mode is None:
        return x.clone()
    if mode == "normal":  # the TRADES start: x + 0.001 * N(0, I)
        return x + 0.001 * _noise("normal", x, generator)
    if norm == "linf":  # U(-eps, eps) per coordinate
        return x + (2.0 * _noise("uniform", x, generator) - 1.0) * eps
    # uniform in the L2 ball: Gaussian direction, radius eps * u^(1/d)
    direction = _noise("normal", x, generator)
    direction = direction / (_flat_norm(direction) + 1e-12)
    u = _noise("uniform", x, generator, shape=(x.shape[0],)).view(-1, *([1] * (x.dim() - 1)))
    return x + direction * eps * u.pow(1.0 / x[0].numel())


def _objective(model, loss, y: torch.Tensor | None, target: torch.Tensor | None) -> Callable:
    """The summed per-sample attack loss as a function of ``x_adv`` (sum: the step direction does
    not depend on the batch size); a callable ``loss`` is that function already."""
    if callable(loss):
        return loss
    if loss == "ce":
        return lambda xa: losses.ce(model(xa), y, reduction="sum")
    if loss == "kl":
        return lambda xa: losses.kl(target, model(xa), reduction="sum")
    if loss == "cw":
        return lambda xa: losses.cw_margin(model(xa), y, reduction="sum")
    return lambda xa: losses.dlr(model(xa), y, reduction="sum")


def _run_pgd(x, objective, *, eps, alpha, steps, norm, start) -> torch.Tensor:
    """The PGD loop: ``x_{t+1} = Proj(x_t + alpha * dir(grad objective(x_t)))``; detached result."""
    if norm == "linf":
        lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
        x_adv = torch.max(torch.min(start, hi), lo)
    else:
        x_adv = _project_l2(start, x, eps)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        grad, = torch.autograd.grad(objective(x_adv), x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = torch.max(torch.min(x_adv + alpha * grad.sign(), hi), lo)
            else:
                step = grad / (_flat_norm(grad) + 1e-12)
                x_adv = _project_l2(x_adv + alpha * step, x, eps)
    return x_adv.detach()


def _attack(model, x, y, *, eps, alpha, steps, loss, mode, target, norm, generator) -> torch.Tensor:
    """Validated entry point shared by the public attacks: eval mode, target logits, start, loop."""
    x = x.detach()
    if isinstance(eps, float) and eps == 0.0:
        return x.clone()
    with eval_mode(model), torch.enable_grad():
        if loss == "kl":
            if target is None:  # the clean logits, computed once
                with torch.no_grad():
                    target = model(x)
            target = target.detach()
        start = _random_start(x, eps, mode, norm, generator)
        return _run_pgd(x, _objective(model, loss, y, target), eps=eps, alpha=alpha, steps=steps,
                        norm=norm, start=start)


@ATTACKS.register("pgd", help="projected gradient descent (Madry et al. 2018), L-inf or L2",
                  threat=("norm", "eps", "alpha", "steps", "random_start"), eval_steps=20)
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, eps: Radius,
        alpha: Radius | None = None, steps: int = 10, loss: str | Callable = "ce",
        random_start: bool | str = True,
        target: torch.Tensor | None = None, norm: str = "linf",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent (PGD-k, Madry et al. 2018, "Towards deep learning models
    resistant to adversarial attacks").

    L-inf (default): ``x0 = clip(x + U(-eps, eps))``, ``x_{t+1} = Proj(x_t + alpha * sign(g_t))``
    with ``Proj`` the clamp onto ``[x - eps, x + eps] ∩ [0, 1]`` and ``g_t`` the gradient of the
    summed per-sample loss. L2 (``norm="l2"``): start uniform in the L2 ball, steps along
    ``g / ||g||_2``, projection by rescaling ``x - x_adv`` into the ball then clipping to [0, 1].

    Args:
        model: classifier on [0, 1] inputs; run in eval mode and restored.
        x: ``(B, ...)`` clean inputs in [0, 1]. y: ``(B,)`` int64 labels.
        eps: radius >= 0 (float or ``(B,)`` tensor); ``eps == 0`` returns ``x.clone()``.
        alpha: step > 0; default ``eps / 4`` (CIFAR: 8/255 -> 2/255).
        steps: iterations k >= 0 (default 10, the training setting; evaluation uses 20).
        loss: ``"ce"`` (default), ``"kl"`` (maximise ``KL(softmax(target) || softmax(f(x')))``),
            ``"cw"`` (margin ``max_{j!=y} z_j - z_y``), ``"dlr"`` (Croce & Hein 2020), or a
            callable ``loss(x_adv) -> scalar``: the summed objective to maximise, which calls
            the model itself (distillation's inner maximisation; ``y`` may then be None).
        random_start: ``True``/``"uniform"`` (default), ``False``, or ``"normal"``
            (``x + 0.001 * N(0, I)``, the TRADES start).
        target: ``(B, K)`` reference logits for ``"kl"``; default: the model's clean logits,
            computed once in eval mode and detached.
        norm: ``"linf"`` (default) or ``"l2"``.
        generator: ``torch.Generator`` for the random start (global RNG when ``None``).

    Returns:
        ``x_adv`` (detached, shape of ``x``) with ``||x_adv - x|| <= eps`` and values in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x_adv = pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=20, generator=g)
    """
    if not (callable(loss) and y is None):
        _check_inputs(x, y)
    eps = _check_radius(eps, "eps", x, positive=False)
    alpha = eps / 4 if alpha is None else _check_radius(alpha, "alpha", x, positive=True)
    steps = _check_steps(steps)
    mode = _start_mode(random_start)
    if not callable(loss) and loss not in PGD_LOSSES:
        raise SamplewiseError(f"unknown PGD loss {loss!r}; choose from: {', '.join(PGD_LOSSES)}")
    norm = str(norm).lower()
    if norm not in NORMS:
        raise SamplewiseError(f"unknown norm {norm!r} for pgd; choose from: {', '.join(NORMS)}")
    if target is not None and target.shape[0] != x.shape[0]:
        raise SamplewiseError(f"target must have {x.shape[0]} rows, got {tuple(target.shape)}")
    return _attack(model, x, y, eps=eps, alpha=alpha, steps=steps, loss=loss, mode=mode,
                   target=target, norm=norm, generator=generator)


@ATTACKS.register("fgsm", help="FGSM (Goodfellow et al. 2015) / FGSM-RS (Wong et al. 2020), L-inf",
                  threat=("eps",), eval_steps=1)
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Radius, alpha: Radius | None = None,
         random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast gradient sign method, L-inf (Goodfellow et al. 2015) and its random-start variant
    FGSM-RS ("Fast is better than free", Wong et al. 2020).

    ``random_start=False``: ``x_adv = clip(x + alpha * sign(grad CE(x)))`` with ``alpha = eps`` by
    default. ``random_start=True``: ``x0 = x + U(-eps, eps)``, one step of ``alpha = 1.25 * eps``
    (default), then projection onto ``[x - eps, x + eps] ∩ [0, 1]``. One forward/backward pass.

    Args:
        model, x, y: as in :func:`pgd` (``x`` is ``(B, ...)`` in [0, 1], ``y`` is ``(B,)``).
        eps: L-inf radius >= 0. alpha: step > 0 (default ``eps``, or ``1.25 * eps`` with random start).
        random_start: uniform start (FGSM-RS). generator: RNG for the start.

    Example:
        >>> x_adv = fgsm(model, x, y, eps=8 / 255, random_start=True, generator=g)
    """
    _check_inputs(x, y)
    if not isinstance(random_start, bool):
        raise SamplewiseError(f"fgsm random_start must be True or False, got {random_start!r}")
    eps = _check_radius(eps, "eps", x, positive=False)
    if alpha is None:
        alpha = (1.25 if random_start else 1.0) * eps
    else:
        alpha = _check_radius(alpha, "alpha", x, positive=True)
    return _attack(model, x, y, eps=eps, alpha=alpha, steps=1, loss="ce",
                   mode="uniform" if random_start else None, target=None, norm="linf",
                   generator=generator)


@ATTACKS.register("cw", help="CW-inf: PGD-30 on the Carlini-Wagner margin loss, L-inf",
                  threat=("eps", "alpha", "steps"), eval_steps=30)
def cw_inf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Radius, alpha: Radius | None = None,
           steps: int = 30, generator: torch.Generator | None = None) -> torch.Tensor:
    """CW-inf: L-inf PGD on the Carlini-Wagner margin ``max_{j!=y} z_j - z_y`` (Carlini & Wagner
    2017, in the PGD form of Madry et al. 2018).

    Defaults: 30 steps, ``alpha = eps / 4``, uniform random start. Shapes and guarantees as in
    :func:`pgd`.

    Example:
        >>> x_adv = cw_inf(model, x, y, eps=8 / 255, generator=g)
    """
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, loss="cw", random_start=True,
               generator=generator)


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on the parameters (third-party attacks call ``.backward()``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _check_aa_options(version: str, attacks: Sequence[str] | None, norm: str, batch_size) -> str:
    if version not in AA_VERSIONS:
        raise SamplewiseError(f"unknown AutoAttack version {version!r}; choose from: {', '.join(AA_VERSIONS)}")
    if version == "custom":
        if not attacks:
            raise SamplewiseError("AutoAttack version 'custom' needs a non-empty attacks list, "
                                  f"e.g. ['apgd-ce', 'apgd-t']; choose from: {', '.join(AA_ATTACKS)}")
        for name in attacks:
            if name not in AA_ATTACKS:
                raise SamplewiseError(f"unknown AutoAttack attack {name!r}; choose from: {', '.join(AA_ATTACKS)}")
    elif attacks is not None:
        raise SamplewiseError(f"attacks is only used with version='custom', not {version!r}")
    if str(norm).lower() not in AA_NORMS:
        raise SamplewiseError(f"unknown norm {norm!r} for AutoAttack; choose from: Linf, L2, L1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SamplewiseError(f"batch_size must be a positive integer, got {batch_size!r}")
    return AA_NORMS[str(norm).lower()]


def _build_adversary(model, *, eps, norm, version, attacks, seed, device, verbose):
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise SamplewiseError("autoattack needs the 'pyautoattack' package (pip install pyautoattack)") from None
    accepted = inspect.signature(AutoAttack.__init__).parameters
    kwargs = {"norm": norm, "eps": eps, "version": version, "seed": seed, "device": device,
              "verbose": verbose}
    if attacks is not None:
        kwargs["attacks" if "attacks" in accepted else "attacks_to_run"] = list(attacks)
    adversary = AutoAttack(model, **{k: v for k, v in kwargs.items() if k in accepted})
    adversary.verbose = verbose
    return adversary


def _can_resume() -> bool:
    """pyautoattack <= 0.2.0 cannot load its own state: it writes the attack sets to JSON as a
    repr string / list that ``from_disk`` never turns back into sets ("different set of
    attacks"), and a restored run ends in ``UnboundLocalError`` (``y_adv``)."""
    import pyautoattack
    try:
        version = tuple(int(part) for part in pyautoattack.__version__.split(".")[:3])
    except (AttributeError, ValueError):
        return True
    return version > (0, 2, 0)


def _run_kwargs(run: Callable, batch_size: int, state_path) -> dict:
    """Keyword arguments for ``run_standard_evaluation`` in the installed pyautoattack."""
    accepted = inspect.signature(run).parameters
    kwargs = {"batch_size" if "batch_size" in accepted else "bs": batch_size}
    if state_path is None:
        return kwargs
    if "state_path" not in accepted:
        raise SamplewiseError("the installed pyautoattack does not support state_path (resumable runs)")
    state_path = Path(state_path)
    if state_path.exists() and not _can_resume():
        raise SamplewiseError(f"{state_path} exists, but pyautoattack <= 0.2.0 cannot resume from "
                              "its own state file; delete the file to start over")
    if state_path.exists():
        log.warning("autoattack: resuming from %s; points broken before the resume are returned "
                    "unperturbed (the state file's robust flags are authoritative)", state_path)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs["state_path"] = state_path
    return kwargs


@contextlib.contextmanager
def _kept_tracer() -> Iterator[None]:
    """pyautoattack's dynamic-defense check ends with ``sys.settrace(None)``, which would switch
    off a coverage tool or debugger; put the caller's trace function back."""
    tracer = sys.gettrace()
    try:
        yield
    finally:
        sys.settrace(tracer)


@ATTACKS.register("autoattack", help="AutoAttack (Croce & Hein 2020) through pyautoattack",
                  threat=("norm", "eps"), eval_steps=0)
def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, version: str = "standard",
               attacks: Sequence[str] | None = None, batch_size: int = 256, seed: int = 0,
               state_path: str | Path | None = None, norm: str = "Linf",
               verbose: bool = False) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks"), a thin adapter over ``pyautoattack``.

    ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square (5000 queries) at L-inf radius
    ``eps``; ``version="custom"`` runs the listed ``attacks`` (``apgd-ce``, ``apgd-dlr``,
    ``apgd-t``, ``fab``, ``fab-t``, ``square``); ``"plus"`` and ``"rand"`` are passed through.
    Robust points keep ``x_adv == x``. The model runs in eval mode (restored afterwards), its
    parameters are frozen during the run (so no ``.grad`` appears), and the global RNG state,
    which pyautoattack re-seeds, is restored on exit.

    Args:
        model: classifier on [0, 1] inputs. x: ``(B, C, H, W)`` in [0, 1]. y: ``(B,)`` int64.
        eps: radius >= 0 (``eps == 0`` returns ``x.clone()``). norm: ``"Linf"`` (default),
            ``"L2"`` or ``"L1"``.
        version, attacks: see above. batch_size: attack batch size (default 256).
        seed: seed of every sub-attack (default 0). verbose: log pyautoattack's progress.
        state_path: JSON file where pyautoattack records its progress (``EvaluationState``:
            attacks run, per-sample robust flags, clean accuracy), written as the run goes. When
            the file exists the run resumes from it (attacks recorded there are skipped, and
            points broken before the resume come back unperturbed: the file's flags are
            authoritative); pyautoattack <= 0.2.0 cannot resume, so an existing file is then a
            :class:`SamplewiseError`.

    Returns:
        ``x_adv`` of the shape of ``x``, on ``x``'s device.

    Example:
        >>> x_adv = autoattack(model, x, y, eps=8 / 255, version="custom", attacks=["apgd-ce"])
    """
    _check_inputs(x, y)
    aa_norm = _check_aa_options(version, attacks, norm, batch_size)
    eps = _check_radius(eps, "eps", x, positive=False)
    if not isinstance(eps, float):
        raise SamplewiseError("autoattack needs a scalar eps")
    x = x.detach()
    if eps == 0.0:
        return x.clone()
    adversary = _build_adversary(model, eps=eps, norm=aa_norm, version=version, attacks=attacks,
                                 seed=seed, device=x.device, verbose=verbose)
    run = adversary.run_standard_evaluation
    run_kwargs = _run_kwargs(run, batch_size, state_path)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with eval_mode(model), _frozen_parameters(model), torch.random.fork_rng(devices=cuda), \
            _kept_tracer():
        try:
            result = run(x, y.long(), **run_kwargs)
        except ValueError as exc:  # a state file made for another set of attacks
            if state_path is None:
                raise
            raise SamplewiseError(f"autoattack: {exc}") from None
    x_adv = result[0] if isinstance(result, (tuple, list)) else result
    return x_adv.detach().to(x.device)


@ATTACKS.register("clean", help="no attack (x_adv = x): the robust accuracy is the clean accuracy",
                  threat=(), eval_steps=0)
def clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The empty attack: returns ``x`` unchanged (detached), so an evaluation with it measures
    clean accuracy."""
    _check_inputs(x, y)
    return x if not x.requires_grad else x.detach()


# --- the calling contract every registered attack follows --------------------------------------

#: keyword arguments an attack may take besides the threat model: the RNG of a step loop, the
#: seed and batch size of a self-seeding, self-batching attack (AutoAttack)
RUNTIME_ARGS = ("generator", "seed", "batch_size")


@dataclass(frozen=True)
class AttackContract:
    """How an attack is called from a :class:`~samplewise.threat.ThreatModel`.

    ``threat``: the spec's fields it takes (the others are the attack's own rule, e.g. FGSM's step
    ``eps``); ``eval_steps``: the spec's step count when an evaluation gives none (PGD-20, CW-30);
    ``runtime``: which of ``generator``, ``seed``, ``batch_size`` it takes."""

    threat: tuple[str, ...]
    eval_steps: int
    runtime: tuple[str, ...]


def attack_contract(name: str) -> AttackContract:
    """The contract of a registered attack: ``threat=`` and ``eval_steps=`` of its registration,
    else read from its signature (the threat-model fields among its keyword parameters; the
    default of its ``steps`` parameter, else 0).

    Example:
        >>> attack_contract("fgsm").threat
        ('eps',)
    """
    entry, _ = ATTACKS.resolve(name)
    params = inspect.signature(entry.obj).parameters
    threat = entry.meta.get("threat")
    if threat is None:
        threat = tuple(f for f in THREAT_FIELDS if f in params)
    unknown = sorted(set(threat) - set(THREAT_FIELDS))
    if unknown:
        raise SamplewiseError(f"attack '{name}' declares unknown threat-model field(s) "
                              f"{', '.join(unknown)}; choose from: {', '.join(THREAT_FIELDS)}")
    steps = entry.meta.get("eval_steps")
    if steps is None:
        default = params["steps"].default if "steps" in params else 0
        steps = default if isinstance(default, int) and not isinstance(default, bool) else 0
    return AttackContract(tuple(threat), int(steps),
                          tuple(a for a in RUNTIME_ARGS if a in params))


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               *, generator: torch.Generator | None = None, seed: int = 0, batch_size: int = 256,
               **options) -> torch.Tensor:
    """Run the registered attack ``name`` under ``threat``: the one way every engine calls an
    attack by name (evaluation, ``samplewise eval --attack``, the studies).

    The attack receives the spec's fields its contract names (:func:`attack_contract`), the
    runtime arguments it takes (``generator``, ``seed``, ``batch_size``) and ``options`` (its own
    keywords, e.g. AutoAttack's ``version``). A spec the attack cannot honour is refused: a norm
    other than L-inf for an attack that takes no ``norm``.

    Example:
        >>> tm = ThreatModel.resolve(card, default_steps=attack_contract("pgd").eval_steps)
        >>> x_adv = run_attack("pgd", model, x, y, tm, generator=torch.Generator().manual_seed(0))
    """
    fn = ATTACKS.get(name)
    contract = attack_contract(name)
    if "norm" not in contract.threat and threat.norm != "linf":
        raise SamplewiseError(f"attack '{name}' is L-inf only; the threat model asks for "
                              f"{threat.norm}")
    kwargs = {f: getattr(threat, f) for f in contract.threat}
    runtime = {"generator": generator, "seed": seed, "batch_size": batch_size}
    kwargs.update({a: runtime[a] for a in contract.runtime})
    return fn(model, x, y, **kwargs, **options)
