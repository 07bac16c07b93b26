"""Clean and robust accuracy, per-sample robust flags, and the vulnerability radius.

Every result states its attack settings, so a number never travels without how it was made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from .attacks import ATTACKS, autoattack
from .data import Split
from .errors import SamplewiseError
from .models.layout import fast_layout
from .runinfo import derived_generator

EVAL_ATTACKS = ("clean", "fgsm", "pgd", "cw", "autoattack")
_DEFAULT_STEPS = {"pgd": 20, "cw": 30, "fgsm": 1, "clean": 0, "autoattack": 0}


def eval_slice(split: Split, n: int | None) -> Split:
    """The first ``n`` samples of a fixed permutation of ``split`` (seed 0, independent of the
    run's seed), so every run in a study is scored on the same samples."""
    if n is None or n >= len(split):
        return split
    if n < 1:
        raise SamplewiseError(f"n must be >= 1, got {n}")
    perm = torch.randperm(len(split), generator=derived_generator(0, len(split)))[:n]
    keep = split.index[perm.sort().values]
    return split.subset(keep.numpy())


class _BatchState:
    """Per-batch results of a long evaluation in a JSON file, so a killed AutoAttack run resumes
    at the first unfinished batch (pyautoattack 0.2.0 cannot reload its own state file). The file
    records the settings; a file for other settings is refused rather than mixed in."""

    def __init__(self, path, settings: dict):
        self.path, self.settings, self.done = (Path(path) if path else None), settings, {}
        if self.path is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
            except (ValueError, UnicodeDecodeError):
                raise SamplewiseError(f"{self.path}: not a valid evaluation state file") from None
            if not isinstance(saved, dict) or saved.get("settings") != json.loads(json.dumps(settings)):
                raise SamplewiseError(f"{self.path} was written by an evaluation with other "
                                      "settings; delete it or choose another state file")
            self.done = saved.get("batches", {})

    def has(self, b: int) -> bool:
        return str(b) in self.done

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = self.done[str(b)]
        return torch.tensor(c, dtype=torch.bool), torch.tensor(r, dtype=torch.bool)

    def put(self, b: int, correct: torch.Tensor, robust: torch.Tensor) -> None:
        if self.path is None:
            return
        self.done[str(b)] = [correct.cpu().tolist(), robust.cpu().tolist()]
        io.write_json(self.path, {"settings": self.settings, "batches": self.done})


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels for float inputs in [0, 1] (model put in eval mode, mode restored)."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


def _to_float(x_uint8: torch.Tensor, device) -> torch.Tensor:
    return x_uint8.to(device).float().div_(255.0)


def evaluate(model: nn.Module, split: Split, *, attack: str = "pgd", eps: float | None = None,
             alpha: float | None = None, steps: int | None = None, n: int | None = None,
             batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
             per_sample: bool = False, card=None, aa_version: str = "standard",
             aa_attacks: list | None = None, state_path=None) -> dict[str, Any]:
    """Clean and robust accuracy of ``model`` on (a fixed slice of) ``split``.

    Args:
        attack: one of ``clean``, ``fgsm``, ``pgd``, ``cw``, ``autoattack``.
        eps, alpha: L∞ radius and step (defaults: the model's dataset card, alpha = ε/4).
        steps: attack steps (defaults: PGD-20, CW-30).
        n: evaluate on the first ``n`` samples of a fixed permutation (all when None).
        per_sample: include per-sample ``index``, ``correct`` and ``robust`` lists.
        state_path: JSON file of per-batch results: a killed evaluation rerun with the same
            settings resumes at the first unfinished batch (use it for long AutoAttack runs).

    Returns:
        A dict with ``clean_acc``, ``robust_acc`` (fractions) and every attack setting.

    Example:
        >>> res = evaluate(model, bundle.test, attack="pgd", eps=0.1, n=500)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SamplewiseError(f"batch_size must be >= 1, got {batch_size}")
    if attack not in EVAL_ATTACKS:
        raise SamplewiseError(f"unknown attack '{attack}'; choose from: {', '.join(EVAL_ATTACKS)}")
    card = card if card is not None else getattr(model, "card", None)
    if eps is None:
        if card is None:
            raise SamplewiseError("eps is required when the model carries no dataset card")
        eps = card.eps
    if eps < 0 or not math.isfinite(eps):
        raise SamplewiseError(f"eps must be >= 0, got {eps}")
    alpha = alpha if alpha is not None else (card.alpha if card is not None and eps == card.eps else eps / 4)
    steps = _DEFAULT_STEPS[attack] if steps is None else steps
    if steps < 0:
        raise SamplewiseError(f"steps must be >= 0, got {steps}")
    data = eval_slice(split, n)
    model = model.to(device)
    gen = derived_generator(seed, 7919, device="cpu")
    settings = {"attack": attack, "eps": float(eps), "alpha": float(alpha), "steps": int(steps),
                "n": len(data), "seed": seed, "batch_size": batch_size, "aa": [aa_version, aa_attacks],
                "index_sum": int(data.index.sum())}
    resume = _BatchState(state_path, settings)
    correct, robust = [], []
    with fast_layout(model):  # NHWC on the CPU for the whole evaluation (samplewise.models.layout)
        for b, i in enumerate(range(0, len(data), batch_size)):
            if resume.has(b):  # a batch finished before the evaluation was killed
                c, r = resume.get(b)
                correct.append(c)
                robust.append(r)
                continue
            x = _to_float(data.x[i:i + batch_size], device)
            y = data.y[i:i + batch_size].to(device)
            correct.append(predict(model, x) == y)
            if attack == "clean":
                robust.append(correct[-1])
                continue
            if attack == "autoattack":
                x_adv = autoattack(model, x, y, eps=eps, version=aa_version, attacks=aa_attacks,
                                   batch_size=batch_size, seed=seed + b)
            elif attack == "fgsm":
                x_adv = ATTACKS.get("fgsm")(model, x, y, eps=eps, generator=gen)
            else:
                x_adv = ATTACKS.get(attack)(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=gen)
            # a sample counts as robust only if it is also classified correctly when clean
            robust.append((predict(model, x_adv) == y) & correct[-1])
            resume.put(b, correct[-1], robust[-1])
    correct_t = torch.cat([t.cpu() for t in correct])
    robust_t = torch.cat([t.cpu() for t in robust])
    out = {"attack": attack, "eps": float(eps), "alpha": float(alpha) if attack in ("pgd", "cw") else None,
           "steps": int(steps), "n": len(data), "seed": seed,
           "clean_acc": correct_t.float().mean().item(), "robust_acc": robust_t.float().mean().item()}
    if attack == "autoattack":
        out["autoattack"] = {"version": aa_version, "attacks": aa_attacks}
    if per_sample:
        out["per_sample"] = {"index": data.index.tolist(), "correct": correct_t.tolist(),
                             "robust": robust_t.tolist()}
    return out
