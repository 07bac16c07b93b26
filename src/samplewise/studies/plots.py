"""Study figures (matplotlib, Agg canvas, written atomically as PNG).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``'s global state, so plotting works headless and in threads.

Example:
    >>> coreset_plots(record["summary"], "runs/study", cfg.eval)
    [PosixPath('runs/study/robust_vs_fraction.png'), PosixPath('runs/study/clean_vs_fraction.png')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..io import atomic_path

FULL = "full"


def new_figure(ncols: int = 1, *, width: float = 4.6, height: float = 3.6, nrows: int = 1):
    """A figure with ``nrows`` x ``ncols`` axes on an Agg canvas; returns ``(fig, axes)`` with
    the axes in row-major order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG through a temporary file and an atomic rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def plot_vs_fraction(summary: Sequence[dict], metric: str, path, *, ylabel: str,
                     title: str) -> Path:
    """One panel per objective: ``metric`` (mean ± std over seeds, in %) against the fraction
    kept, one line per selector, and the full-data mean as a dashed horizontal line."""
    objectives = list(dict.fromkeys(s["objective"] for s in summary))
    fig, axes = new_figure(max(1, len(objectives)))
    selectors = list(dict.fromkeys(s["selector"] for s in summary if s["selector"] != FULL))
    colors = {name: f"C{i % 10}" for i, name in enumerate(selectors)}
    for ax, objective in zip(axes, objectives):
        rows = [s for s in summary if s["objective"] == objective
                and s.get(f"{metric}_mean") is not None]
        for name in selectors:
            pts = sorted((s["fraction"], s[f"{metric}_mean"], s[f"{metric}_std"])
                         for s in rows if s["selector"] == name)
            if pts:
                f, m, sd = (np.array(v, dtype=float) for v in zip(*pts))
                ax.errorbar(f, 100 * m, yerr=100 * sd, marker="o", capsize=3, label=name,
                            color=colors[name])
        full = [s for s in rows if s["selector"] == FULL]
        if full:
            m, sd = 100 * full[0][f"{metric}_mean"], 100 * full[0][f"{metric}_std"]
            ax.axhline(m, color="black", linestyle="--", linewidth=1.2,
                       label=f"full data ({m:.1f} ± {sd:.1f})")
        ax.set_title(objective)
        ax.set_xlabel("fraction of the training set kept")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, path)


def plot_vs_eps(summary: Sequence[dict], ev, path, *, title: str) -> Path:
    """One panel per objective (rows) × fraction (columns): PGD accuracy (mean ± std over seeds,
    in %) against the ladder's radii, one line per selector, and the full-data reference as a
    dashed black line in every panel."""
    from .tables import ladder_metric

    ladder = ev.ladder()
    objectives = list(dict.fromkeys(s["objective"] for s in summary))
    fractions = sorted({s["fraction"] for s in summary if s["selector"] != FULL})
    fig, axes = new_figure(max(1, len(fractions)), nrows=max(1, len(objectives)))
    selectors = list(dict.fromkeys(s["selector"] for s in summary if s["selector"] != FULL))
    colors = {name: f"C{i % 10}" for i, name in enumerate(selectors)}
    radii = np.array([r for _, r in ladder], dtype=float)

    def line(ax, row, **kw):
        pts = [(r, row[f"{ladder_metric(label)}_mean"], row[f"{ladder_metric(label)}_std"])
               for label, r in ladder if row.get(f"{ladder_metric(label)}_mean") is not None]
        if pts:
            x, m, sd = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(x, 100 * m, yerr=100 * sd, capsize=3, **kw)

    for k, objective in enumerate(objectives):
        full = [s for s in summary if s["objective"] == objective and s["selector"] == FULL]
        for j, fraction in enumerate(fractions):
            ax = axes[k * len(fractions) + j]
            for name in selectors:
                rows = [s for s in summary if s["objective"] == objective
                        and s["selector"] == name and s["fraction"] == fraction]
                if rows:
                    line(ax, rows[0], marker="o", label=name, color=colors[name])
            if full:
                line(ax, full[0], marker="s", color="black", linestyle="--", label="full data")
            ax.set_title(f"{objective}, fraction {fraction:g}")
            ax.set_xticks(radii)
            ax.set_xticklabels([label for label, _ in ladder])
            ax.set_xlabel("L∞ radius ε")
            ax.set_ylabel(f"PGD-{ev.pgd_steps} accuracy (%)")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, path)


def coreset_plots(summary: Sequence[dict], out_dir, ev) -> list[Path]:
    """Robust (PGD) and clean accuracy against the fraction (and AutoAttack when computed);
    with an ``eps_ladder``, also PGD accuracy against ε per fraction (``robust_vs_eps.png``) and
    against the fraction at the ladder's middle radius (``robust_vs_fraction_middle_eps.png``)."""
    from .tables import ladder_metric

    out = Path(out_dir)
    seeds = max((s["seeds"] for s in summary), default=0)
    note = f"mean ± std over {seeds} seed{'s' if seeds != 1 else ''}"
    paths = [
        plot_vs_fraction(summary, "pgd_acc", out / "robust_vs_fraction.png",
                         ylabel=f"PGD-{ev.pgd_steps} accuracy (%)",
                         title=f"Robust accuracy vs coreset size\nPGD-{ev.pgd_steps} on "
                               f"n={ev.n} test samples; {note}"),
        plot_vs_fraction(summary, "clean_acc", out / "clean_vs_fraction.png",
                         ylabel="clean accuracy (%)",
                         title=f"Clean accuracy vs coreset size\nn={ev.n} test samples; {note}")]
    if ev.autoattack and any(s.get("autoattack_acc_mean") is not None for s in summary):
        paths.append(plot_vs_fraction(summary, "autoattack_acc", out / "autoattack_vs_fraction.png",
                                      ylabel=f"{ev.autoattack_label()} accuracy (%)",
                                      title=f"{ev.autoattack_label()} accuracy vs coreset size\n"
                                            f"n={ev.autoattack_n} test samples; {note}"))
    middle = ev.middle()
    if middle is not None:
        steps = f"PGD-{ev.pgd_steps}, step ε/4, n={ev.n}; {note}"
        paths.append(plot_vs_eps(summary, ev, out / "robust_vs_eps.png",
                                 title=f"Robust accuracy vs radius\n{steps}"))
        paths.append(plot_vs_fraction(summary, ladder_metric(middle[0]),
                                      out / "robust_vs_fraction_middle_eps.png",
                                      ylabel=f"PGD-{ev.pgd_steps} accuracy at ε={middle[0]} (%)",
                                      title=f"Robust accuracy at ε={middle[0]} vs coreset size\n"
                                            f"{steps}"))
    return paths


# ----------------------------------------------------------------------------- vulnerability
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
