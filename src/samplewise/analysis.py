"""Vulnerability analysis (methods.md §3): are low-AIGN training samples less vulnerable?

EasyCore's claim is about *training samples* and *the trained model*: easy samples (low average
input-gradient norm over training) lie further from the decision boundary. :func:`vulnerability`
measures, for each scored training sample (or a seeded stratified sample of ``n`` of them):

- ``correct``: the model classifies the clean input correctly;
- ``robust``: PGD at ε (the dataset card's by default) does not change that;
- ``radius``: the smallest L∞ ε at which PGD succeeds, found by *batched bisection* on
  ``[0, max_eps]`` with per-sample ε tensors (every sample of a batch bisects its own interval
  in the same PGD call). Misclassified samples get radius 0; samples PGD cannot break at
  ``max_eps`` get ``max_eps`` and are flagged ``censored`` (their true radius is larger).

and reports the Spearman rank correlation of AIGN with the radius (expected negative: low AIGN
-> larger radius) and with PGD success at ε (expected positive), plus robust accuracy and mean
radius per AIGN decile.

Which model: the natural choice is the scoring run's own model (``model.pt`` next to
``scores.npz``: the scores and the radii then describe the same training), and, as a check that
AIGN is a property of the data rather than of one run, a model trained on the full data with
another seed or architecture.

The radius is PGD's, an upper bound on the true minimal adversarial distance; PGD success need
not be monotone in ε, so bisection returns an ε at which PGD succeeds (``hi``) such that it
failed at ``hi - tol`` or less.

Example:
    >>> model, bundle, table = load_for_scores("runs/scores/scores.npz")
    >>> res = vulnerability(model, bundle, table, n=2000)
    >>> res["spearman"]["aign_radius"]["rho"]         # negative if the claim holds
    >>> write_vulnerability(res, "runs/vuln")
"""

from __future__ import annotations

import csv
import io as _io
import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import io
from .attacks import pgd
from .data import DataBundle, load_dataset, stratified_choice
from .errors import SamplewiseError
from .evaluate import predict
from .formats.scores import ScoreTable
from .plotting import new_figure, save_figure
from .runinfo import derived_generator
from .threat import ThreatModel, card_step_ratio

log = logging.getLogger(__name__)

CSV_COLUMNS = ("index", "label", "aign", "correct", "robust", "radius", "censored")


# ----------------------------------------------------------------------------- the radius
def _fooled(model, x, y, eps: torch.Tensor, *, steps, ratio, random_start,
            generator) -> torch.Tensor:
    """Per-sample: PGD with per-sample radius ``eps`` (step ``ratio * eps``) flips the label."""
    x_adv = pgd(model, x, y, eps=eps, alpha=eps * ratio, steps=steps, random_start=random_start,
                generator=generator)
    return predict(model, x_adv) != y


def pgd_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_eps: float,
               steps: int = 20, tol: float = 1e-3, alpha_ratio: float = 0.25,
               random_start: bool = True, seed: int = 0, salt: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Smallest L∞ ε at which PGD succeeds, by batched bisection on ``[0, max_eps]``.

    Every sample keeps its own interval ``(lo, hi]`` with PGD failing at ``lo`` and succeeding at
    ``hi``; one PGD call per iteration attacks all unresolved samples at their midpoints
    (a ``(B,)`` ε tensor, step ``alpha_ratio * ε``). ``ceil(log2(max_eps / tol))`` iterations
    bring every interval below ``tol``.

    Args:
        x: ``(B, ...)`` inputs in [0, 1]; y: ``(B,)`` labels.
        max_eps: upper end of the search; samples not broken there are censored.
        steps, alpha_ratio, random_start: the PGD settings at every ε.
        seed, salt: seed the random starts (deterministic for given values).

    Returns:
        ``(radius, censored, iterations)``: radius ``(B,)`` (0 for misclassified samples,
        ``max_eps`` for censored ones), censored ``(B,)`` bool, and the iteration count.

    Example:
        >>> radius, censored, _ = pgd_radius(model, x, y, max_eps=0.4, steps=20)
    """
    x, y = x.detach(), y.detach()
    b = len(y)
    correct = predict(model, x) == y
    iters = max(1, math.ceil(math.log2(max_eps / tol)))
    gen = lambda it: derived_generator(seed, 15485863, salt, it)  # noqa: E731
    kw = dict(steps=steps, ratio=alpha_ratio, random_start=random_start)
    lo = torch.zeros(b, dtype=x.dtype, device=x.device)
    hi = torch.full((b,), float(max_eps), dtype=x.dtype, device=x.device)
    broken = ~correct
    if correct.any():
        c = correct.nonzero().squeeze(1)
        broken[c] = _fooled(model, x[c], y[c], hi[c], generator=gen(0), **kw)
    censored = correct & ~broken
    active = correct & broken
    for it in range(1, iters + 1):
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        mid = (lo[idx] + hi[idx]) / 2
        fooled = _fooled(model, x[idx], y[idx], mid, generator=gen(it), **kw)
        hi[idx] = torch.where(fooled, mid, hi[idx])
        lo[idx] = torch.where(fooled, lo[idx], mid)
        active[idx] = (hi[idx] - lo[idx]) > tol
    radius = torch.where(correct, hi, torch.zeros_like(hi))
    return radius, censored, iters


# ----------------------------------------------------------------------------- the analysis
def _positions(table: ScoreTable, n: Optional[int], seed: int) -> np.ndarray:
    """All rows, or a seeded class-stratified sample of ``n`` rows (sorted)."""
    if n is None or n >= len(table):
        return np.arange(len(table))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SamplewiseError(f"n must be a positive integer, got {n!r}")
    return np.sort(stratified_choice(table.labels, int(n), seed))


def spearman(a: np.ndarray, b: np.ndarray) -> dict:
    """Spearman's rank correlation ``{"rho", "p", "n"}`` (``rho`` None, with a ``note``, when one
    side is constant or there are fewer than 3 values)."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"rho": None, "p": None, "n": int(len(a)),
                "note": "undefined: one of the two is constant (e.g. PGD breaks every sample)"}
    res = spearmanr(a, b)
    rho, p = float(res.statistic if hasattr(res, "statistic") else res[0]), float(res.pvalue)
    return {"rho": rho if math.isfinite(rho) else None, "p": p if math.isfinite(p) else None,
            "n": int(len(a))}


def decile_bins(score: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each sample's equal-count score decile, 1 (lowest, easiest) .. 10; ties by dataset index."""
    order = np.lexsort((index, score))
    n = len(order)
    which = np.empty(n, dtype=np.int64)
    which[order] = np.arange(n) * 10 // max(n, 1) + 1
    return which


def deciles(score: np.ndarray, index: np.ndarray, robust: np.ndarray, correct: np.ndarray,
            radius: np.ndarray, censored: np.ndarray) -> list[dict]:
    """Equal-count bins of the score (ties by dataset index), 1 = lowest (easiest)."""
    which = decile_bins(score, index)
    out = []
    for d in range(1, 11):
        m = which == d
        if not m.any():
            continue
        out.append({"decile": d, "n": int(m.sum()), "score_min": float(score[m].min()),
                    "score_max": float(score[m].max()), "score_mean": float(score[m].mean()),
                    "clean_acc": float(correct[m].mean()), "robust_acc": float(robust[m].mean()),
                    "mean_radius": float(radius[m].mean()), "censored": int(censored[m].sum())})
    return out


def vulnerability(model: nn.Module, bundle: DataBundle, table: ScoreTable, *,
                  eps: Optional[float] = None, steps: int = 20, n: Optional[int] = None,
                  tol: float = 1e-3, max_eps: Optional[float] = None, batch_size: int = 256,
                  seed: int = 0, alpha_ratio: Optional[float] = None, random_start: bool = True,
                  score: str = "aign", device: str | torch.device = "cpu") -> dict:
    """Per-sample PGD vulnerability of the scored training samples, and its relation to AIGN.

    Args:
        model: classifier on [0, 1] inputs (evaluated in eval mode).
        bundle: the dataset the score file was computed on (fingerprints must match).
        table: the score table (``aign`` by default; ``score`` names another column).
        eps: the radius of the success test (default: the dataset card's ε).
        steps: PGD steps at every ε (step size ``alpha_ratio * ε``; default ratio: the card's
            ``alpha / eps``, 1/4).
        n: analyse a seeded class-stratified sample of ``n`` scored samples (default: all).
        tol: bisection resolution; max_eps: search bound (default ``min(4 ε, 1)``).
        batch_size: samples per PGD call. seed: sample choice and PGD random starts.
        random_start: PGD's uniform random start (False: deterministic PGD from x).

    Returns:
        A dict with ``settings``, ``clean_acc``, ``robust_acc``, ``mean_radius``,
        ``censored``, ``spearman`` (``aign_radius``, ``aign_success``, ``aign_radius_correct``:
        each ``{"rho", "p", "n"}``), ``deciles`` and ``per_sample`` (lists per CSV column).

    Example:
        >>> res = vulnerability(load_model("runs/scores"), load_dataset("digits"),
        ...                     ScoreTable.load("runs/scores/scores.npz"), n=500)
    """
    table.check_dataset(bundle.fingerprint, bundle.card.name)
    card = getattr(model, "card", None) or bundle.card
    ratio = float(alpha_ratio if alpha_ratio is not None else card_step_ratio(card))
    threat = ThreatModel.resolve(card, eps=eps, steps=steps, random_start=random_start,
                                 card_step="ratio")  # the step at every radius: ratio * radius
    eps = threat.eps
    max_eps = float(min(4 * eps, 1.0) if max_eps is None else max_eps)
    for name, v in (("eps", eps), ("tol", tol), ("max_eps", max_eps), ("alpha_ratio", ratio)):
        if not (math.isfinite(v) and v > 0):
            raise SamplewiseError(f"{name} must be > 0, got {v}")
    if max_eps < eps:
        raise SamplewiseError(f"max_eps ({max_eps}) must be >= eps ({eps})")
    if batch_size < 1 or steps < 1:
        raise SamplewiseError("batch_size and steps must be >= 1")
    pos = _positions(table, n, seed)
    values = table.get(score)[pos].astype(np.float64)
    split = bundle.train.subset(table.index[pos])
    if not np.array_equal(split.y.numpy(), table.labels[pos]):
        raise SamplewiseError("the score file's labels differ from the dataset's")
    model = model.to(device)
    parts: dict[str, list] = {k: [] for k in ("correct", "robust", "radius", "censored")}
    for b, start in enumerate(range(0, len(split), batch_size)):
        x = split.x[start:start + batch_size].to(device).float().div_(255)
        y = split.y[start:start + batch_size].to(device)
        correct = predict(model, x) == y
        gen = derived_generator(seed, 7919, b)
        x_adv = pgd(model, x, y, eps=eps, alpha=ratio * eps, steps=threat.steps,
                    random_start=threat.random_start, generator=gen)
        radius, censored, iters = pgd_radius(model, x, y, max_eps=max_eps, steps=steps, tol=tol,
                                             alpha_ratio=ratio, random_start=random_start,
                                             seed=seed, salt=b)
        for k, v in (("correct", correct), ("robust", correct & (predict(model, x_adv) == y)),
                     ("radius", radius), ("censored", censored)):
            parts[k].append(v.cpu())
        log.info("vulnerability: %d/%d samples", min(start + batch_size, len(split)), len(split))
    cols = {k: torch.cat(v).numpy() for k, v in parts.items()}
    correct, robust = cols["correct"].astype(bool), cols["robust"].astype(bool)
    radius, censored = cols["radius"].astype(np.float64), cols["censored"].astype(bool)
    index = table.index[pos]
    return {
        "settings": {"eps": eps, "steps": steps, "alpha_ratio": ratio, "tol": tol,
                     "max_eps": max_eps, "iterations": iters if len(split) else 0,
                     "random_start": random_start, "n": int(len(pos)), "n_scored": len(table),
                     "seed": seed, "score": score, "batch_size": batch_size},
        "dataset": bundle.card.name, "fingerprint": bundle.fingerprint,
        "score_file": table.source, "model": getattr(model, "arch", type(model).__name__),
        "clean_acc": float(correct.mean()), "robust_acc": float(robust.mean()),
        "mean_radius": float(radius.mean()), "median_radius": float(np.median(radius)),
        "censored": int(censored.sum()),
        "spearman": {
            "aign_radius": spearman(values, radius),
            "aign_success": spearman(values, (~robust).astype(np.float64)),
            "aign_radius_correct": spearman(values[correct], radius[correct]),
            "expected": "aign_radius < 0 and aign_success > 0 if low-AIGN samples are less "
                        "vulnerable"},
        "deciles": deciles(values, index, robust, correct, radius, censored),
        "per_sample": {"index": index.tolist(), "label": table.labels[pos].tolist(),
                       "aign": values.tolist(), "correct": correct.astype(int).tolist(),
                       "robust": robust.astype(int).tolist(), "radius": radius.tolist(),
                       "censored": censored.astype(int).tolist()},
    }


# ----------------------------------------------------------------------------- figures
def plot_radius_scatter(score: np.ndarray, radius: np.ndarray, censored: np.ndarray, path, *,
                        rho: float, eps: float, max_eps: float, score_name: str = "AIGN",
                        correct: Optional[np.ndarray] = None, log_x: Optional[bool] = None) -> Path:
    """Scatter of the PGD radius against the score; censored samples (never broken up to
    ``max_eps``) as open markers at ``max_eps``, misclassified ones (radius 0) in gray; ε as a
    dotted line; Spearman ρ in the title."""
    fig, (ax,) = new_figure(width=5.6, height=4.2)
    score = np.asarray(score, dtype=float)
    correct = np.ones(len(score), bool) if correct is None else np.asarray(correct, bool)
    if log_x is None:  # log x when the positive scores span more than two decades
        pos = score[score > 0]
        log_x = len(pos) == len(score) and len(pos) > 1 and pos.max() / pos.min() > 100
    kw = dict(s=9, alpha=0.5)
    broken = correct & ~censored
    ax.scatter(score[broken], radius[broken], color="C0", label="broken by PGD", **kw)
    if (~correct).any():
        ax.scatter(score[~correct], radius[~correct], color="gray", marker="x",
                   label="misclassified clean (radius 0)", **kw)
    if censored.any():
        ax.scatter(score[censored], radius[censored], facecolors="none", edgecolors="C3",
                   label=f"not broken at {max_eps:g} (censored)", **kw)
    ax.axhline(eps, color="gray", linestyle=":", label=f"ε = {eps:g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(f"{score_name} (training-set hardness)" + (", log scale" if log_x else ""))
    ax.set_ylabel("smallest L∞ ε at which PGD succeeds")
    ax.set_title(f"Vulnerability radius vs {score_name}: Spearman ρ = {rho:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_deciles(deciles: Sequence[dict], path, *, eps: float, score_name: str = "AIGN") -> Path:
    """Robust accuracy at ε (bars) and mean radius (line, right axis) per score decile."""
    fig, (ax,) = new_figure(width=6.0, height=4.0)
    x = np.array([d["decile"] for d in deciles])
    acc = np.array([100 * d["robust_acc"] for d in deciles])
    rad = np.array([d["mean_radius"] for d in deciles])
    ax.bar(x, acc, color="C0", alpha=0.7, label=f"PGD accuracy at ε = {eps:g} (%)")
    ax.set_xlabel(f"{score_name} decile (1 = easiest, 10 = hardest)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(x)
    right = ax.twinx()
    right.plot(x, rad, color="C3", marker="o", label="mean radius")
    right.set_ylabel("mean PGD radius (L∞)")
    right.set_ylim(bottom=0, top=max(float(rad.max()) * 1.15, 1e-6))
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize="small", loc="upper right")
    ax.set_title(f"Vulnerability per {score_name} decile")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- files
def write_vulnerability(result: dict, out_dir) -> list[Path]:
    """Write ``vulnerability.json`` (everything but the per-sample columns),
    ``vulnerability.csv`` (one row per sample), ``vulnerability_scatter.png`` and
    ``vulnerability_deciles.png`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = result["per_sample"]
    summary = {k: v for k, v in result.items() if k != "per_sample"}
    io.write_json(out / "vulnerability.json", summary)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(zip(*(cols[c] for c in CSV_COLUMNS)))
    io.write_text(out / "vulnerability.csv", buf.getvalue())
    s = result["settings"]
    name = s["score"].upper() if s["score"] == "aign" else s["score"]
    rho = result["spearman"]["aign_radius"]["rho"]
    scatter = plot_radius_scatter(np.array(cols["aign"]), np.array(cols["radius"]),
                                  np.array(cols["censored"], dtype=bool),
                                  out / "vulnerability_scatter.png",
                                  correct=np.array(cols["correct"], dtype=bool),
                                  rho=float("nan") if rho is None else rho, eps=s["eps"],
                                  max_eps=s["max_eps"], score_name=name)
    dec = plot_deciles(result["deciles"], out / "vulnerability_deciles.png", eps=s["eps"],
                       score_name=name)
    return [out / "vulnerability.json", out / "vulnerability.csv", scatter, dec]


def load_scored_dataset(scores, *, dataset: Optional[str] = None
                        ) -> tuple[DataBundle, ScoreTable]:
    """The score table and the training set it was computed on.

    The dataset defaults to the one named in the score file (with its ``train_size`` sample);
    its fingerprint must match the score file's.

    Example:
        >>> bundle, table = load_scored_dataset("runs/scores/scores.npz")
    """
    from .runs import TRAIN_SIZE_SEED

    table = ScoreTable.load(scores)
    meta = table.meta
    name = dataset or meta.get("dataset")
    if not name:
        raise SamplewiseError(f"{scores} does not name its dataset; pass --dataset")
    root = (meta.get("config") or {}).get("data_root")
    same = name == meta.get("dataset")
    bundle = load_dataset(name, root=root, train_size=meta.get("train_size") if same else None,
                          seed=TRAIN_SIZE_SEED)
    table.check_dataset(bundle.fingerprint, bundle.card.name)
    return bundle, table


def load_for_scores(scores, model=None, *, dataset: Optional[str] = None,
                    device: str = "cpu") -> tuple[nn.Module, DataBundle, ScoreTable]:
    """The score table, its training set and a model to analyse.

    The dataset defaults to the one named in the score file (with its ``train_size`` sample);
    its fingerprint must match the score file's. The model defaults to the scoring run's
    ``model.pt`` next to the score file.

    Example:
        >>> model, bundle, table = load_for_scores("runs/scores/scores.npz")
    """
    from .models import load_model

    bundle, table = load_scored_dataset(scores, dataset=dataset)
    name = bundle.card.name
    if model is None:
        model = Path(scores).parent / "model.pt"
        if not model.is_file():
            raise SamplewiseError(f"no model given and no scoring model at {model}; pass --model")
    net = load_model(model, device=device)
    shape = getattr(getattr(net, "card", None), "shape", None)
    if shape is not None and tuple(shape) != tuple(bundle.card.shape):
        raise SamplewiseError(f"model {model} expects inputs of shape {tuple(shape)}, dataset "
                              f"{name} has {tuple(bundle.card.shape)}")
    return net, bundle, table
