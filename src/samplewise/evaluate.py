"""Clean and robust accuracy, per-sample robust flags, and the vulnerability radius.

Every result states its attack settings, so a number never travels without how it was made.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from .attacks import ATTACKS, attack_contract, run_attack
from .data import Split
from .errors import SamplewiseError
from .runinfo import derived_generator
from .threat import ThreatModel


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
             aa_attacks: list | None = None, state_path=None, threat: ThreatModel | None = None,
             options: dict | None = None) -> dict[str, Any]:
    """Clean and robust accuracy of ``model`` on (a fixed slice of) ``split``.

    Args:
        attack: any registered attack (``samplewise.attacks.ATTACKS``: ``clean``, ``fgsm``,
            ``pgd``, ``cw``, ``autoattack``, and any attack registered later), called through
            :func:`samplewise.attacks.run_attack`.
        eps, alpha: L∞ radius and step (defaults: the model's dataset card; the card's step when
            ε is the card's, else ε/4: :meth:`ThreatModel.resolve`, rule ``"same-eps"``).
        steps: attack steps (default: the attack's ``eval_steps``: PGD-20, CW-30).
        threat: a resolved spec instead of ``eps``/``alpha``/``steps``.
        options: the attack's own keyword options; ``aa_version`` / ``aa_attacks`` are
            AutoAttack's ``version`` / ``attacks``, passed to any attack that takes them.
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
    contract = attack_contract(attack)  # unknown names: "unknown attack 'x'; choose from: ..."
    if threat is None:
        card = card if card is not None else getattr(model, "card", None)
        threat = ThreatModel.resolve(card, eps=eps, alpha=alpha, steps=steps,
                                     default_steps=contract.eval_steps)
    eps, alpha, steps = threat.eps, threat.alpha, threat.steps
    params = inspect.signature(ATTACKS.get(attack)).parameters
    aa = {"version": aa_version, "attacks": aa_attacks}
    options = {**{k: v for k, v in aa.items() if k in params}, **(options or {})}
    data = eval_slice(split, n)
    model = model.to(device)
    gen = derived_generator(seed, 7919, device="cpu")
    settings = {"attack": attack, "eps": float(eps), "alpha": float(alpha), "steps": int(steps),
                "n": len(data), "seed": seed, "batch_size": batch_size, "aa": [aa_version, aa_attacks],
                "index_sum": int(data.index.sum())}
    if threat.norm != "linf" or threat.random_start is not True:
        settings.update(norm=threat.norm, random_start=threat.random_start)
    if set(options) - set(aa):
        settings["options"] = options
    resume = _BatchState(state_path, settings)
    correct, robust = [], []
    for b, i in enumerate(range(0, len(data), batch_size)):
        if resume.has(b):  # a batch finished before the evaluation was killed
            c, r = resume.get(b)
            correct.append(c)
            robust.append(r)
            continue
        x = _to_float(data.x[i:i + batch_size], device)
        y = data.y[i:i + batch_size].to(device)
        correct.append(predict(model, x) == y)
        x_adv = run_attack(attack, model, x, y, threat, generator=gen, seed=seed + b,
                           batch_size=batch_size, **options)
        # a sample counts as robust only if it is also classified correctly when clean
        robust.append(correct[-1] if x_adv is x else (predict(model, x_adv) == y) & correct[-1])
        resume.put(b, correct[-1], robust[-1])
    correct_t = torch.cat([t.cpu() for t in correct])
    robust_t = torch.cat([t.cpu() for t in robust])
    out = {"attack": attack, "eps": float(eps),
           "alpha": float(alpha) if "alpha" in contract.threat else None,
           "steps": int(steps), "n": len(data), "seed": seed,
           "clean_acc": correct_t.float().mean().item(), "robust_acc": robust_t.float().mean().item()}
    if options:  # the attack's own options, under its name (AutoAttack: version and attacks)
        out[attack] = options
    if per_sample:
        out["per_sample"] = {"index": data.index.tolist(), "correct": correct_t.tolist(),
                             "robust": robust_t.tolist()}
    return out
