"""Standard and adversarial training objectives (methods.md §2)."""

from __future__ import annotations

import torch

from .. import losses
from ..attacks import fgsm, pgd
from .base import OBJECTIVES, Objective, StepContext, check_number


def _out(loss_ps: torch.Tensor, logits: torch.Tensor, **extra) -> dict:
    out = {"loss": loss_ps.mean(), "logits": logits, "loss_per_sample": loss_ps.detach()}
    out.update(extra)
    return out


@OBJECTIVES.register("standard", help="cross-entropy on clean inputs")
class Standard(Objective):
    """CE(f(x), y)."""

    name = "standard"

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        logits = model(x)
        return _out(losses.ce(logits, y, reduction="none"), logits)


@OBJECTIVES.register("pgd-at", help="Madry et al. 2018: CE on PGD-k adversarial examples")
class PGDAT(Objective):
    """CE(f(x_adv), y) with x_adv from PGD-k on CE (uniform random start)."""

    name = "pgd-at"

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                    generator=ctx.generator)
        logits = model(x_adv)
        return _out(losses.ce(logits, y, reduction="none"), logits, x_adv=x_adv.detach(),
                    logits_adv=logits.detach())


@OBJECTIVES.register("fgsm-rs", help="Wong et al. 2020: fast AT with FGSM from a random start")
class FGSMRS(Objective):
    """CE(f(x_adv), y) with x_adv one FGSM step of size ``alpha`` (default 1.25ε) from a uniform start."""

    name = "fgsm-rs"

    def __init__(self, *, eps, alpha, steps, step_scale: float = 1.25, **options):
        super().__init__(eps=eps, alpha=alpha, steps=steps, **options)
        self.step_scale = check_number(self.name, "step_scale", step_scale, positive=True)

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        x_adv = fgsm(model, x, y, eps=self.eps, alpha=self.step_scale * self.eps,
                     random_start=True, generator=ctx.generator)
        logits = model(x_adv)
        return _out(losses.ce(logits, y, reduction="none"), logits, x_adv=x_adv.detach(),
                    logits_adv=logits.detach())


@OBJECTIVES.register("trades", help="Zhang et al. 2019: CE(clean) + β·KL(p(x) ‖ p(x_adv))")
class TRADES(Objective):
    """CE(f(x), y) + β·KL(p(x) ‖ p(x_adv)); x_adv maximises the KL from x + 0.001·N(0, I)."""

    name = "trades"

    def __init__(self, *, eps, alpha, steps, beta: float = 6.0, **options):
        super().__init__(eps=eps, alpha=alpha, steps=steps, **options)
        self.beta = check_number(self.name, "beta", beta)

    def settings(self) -> dict:
        return {**super().settings(), "beta": self.beta}

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, loss="kl",
                    random_start="normal", generator=ctx.generator)
        logits = model(x)
        logits_adv = model(x_adv)
        loss_ps = (losses.ce(logits, y, reduction="none")
                   + self.beta * losses.trades_kl(logits, logits_adv, reduction="none"))
        return _out(loss_ps, logits, x_adv=x_adv.detach(), logits_adv=logits_adv.detach())


@OBJECTIVES.register("mart", help="Wang et al. 2020: boosted CE + β·KL·(1 − p_y(x))")
class MART(Objective):
    """MART loss on PGD-k (CE) adversarial examples; β = 6 by default."""

    name = "mart"

    def __init__(self, *, eps, alpha, steps, beta: float = 6.0, **options):
        super().__init__(eps=eps, alpha=alpha, steps=steps, **options)
        self.beta = check_number(self.name, "beta", beta)

    def settings(self) -> dict:
        return {**super().settings(), "beta": self.beta}

    def forward(self, model, x, y, idx, ctx: StepContext) -> dict:
        x_adv = pgd(model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                    generator=ctx.generator)
        logits = model(x)
        logits_adv = model(x_adv)
        loss_ps = losses.mart_loss(logits, logits_adv, y, beta=self.beta, reduction="none")
        return _out(loss_ps, logits, x_adv=x_adv.detach(), logits_adv=logits_adv.detach())
