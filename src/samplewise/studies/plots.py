"""Study figures (matplotlib, Agg canvas, written atomically as PNG).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``'s global state, so plotting works headless and in threads.

Example:
    >>> coreset_plots(record["summary"], "runs/study", cfg.eval)
    [PosixPath('runs/study/robust_vs_fraction.png'), PosixPath('runs/study/clean_vs_fraction.png')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..plotting import finish_axes, new_figure, save_figure, shared_legend

FULL = "full"


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
            ax.axhline(m, color="black", linestyle="--", linewidth=1.2, label="full data")
            ax.annotate(f"{m:.1f} ± {sd:.1f}", (0, m), xycoords=("axes fraction", "data"),
                        xytext=(3, -2), textcoords="offset points", ha="left", va="top",
                        fontsize="x-small")  # each panel's own full-data value, on its line
        finish_axes(ax, title=objective, xlabel="fraction of the training set kept", ylabel=ylabel)
    shared_legend(fig, axes)
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
    shared_legend(fig, axes)
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, path)


def tradeoff_points(summary: Sequence[dict], metric: str) -> dict[str, dict[str, list[tuple]]]:
    """The points of :func:`plot_robust_vs_clean`: per objective and selector (``full``
    included), ``(fraction, clean mean, clean std, metric mean, metric std)`` in %, sorted by
    fraction; rows without both means are left out.

    Example:
        >>> tradeoff_points([{"objective": "standard", "selector": "random", "fraction": 0.5,
        ...                   "clean_acc_mean": 0.8, "clean_acc_std": 0.01,
        ...                   "pgd_acc_mean": 0.4, "pgd_acc_std": 0.02}], "pgd_acc")
        {'standard': {'random': [(0.5, 80.0, 1.0, 40.0, 2.0)]}}
    """
    out: dict[str, dict[str, list[tuple]]] = {}
    for s in summary:
        clean, robust = s.get("clean_acc_mean"), s.get(f"{metric}_mean")
        if clean is None or robust is None:
            continue
        pts = out.setdefault(s["objective"], {}).setdefault(s["selector"], [])
        pts.append((s["fraction"], 100 * clean, 100 * (s.get("clean_acc_std") or 0.0),
                    100 * robust, 100 * (s.get(f"{metric}_std") or 0.0)))
    for per_selector in out.values():
        for pts in per_selector.values():
            pts.sort()
    return out


def plot_robust_vs_clean(summary: Sequence[dict], metric: str, path, *, ylabel: str,
                         title: str) -> Path:
    """One panel per objective: ``metric`` against clean accuracy (mean ± std over seeds, in %
    on both axes), one line per selector through its fractions (each point labelled with its
    fraction), full data as a black star. A selector whose line lies above another's at the
    same clean accuracy buys more robustness for the accuracy it gives up, whatever the
    fraction: the comparison that a smaller, less fitted model cannot win by underfitting."""
    points = tradeoff_points(summary, metric)
    objectives = list(points)
    fig, axes = new_figure(max(1, len(objectives)), width=5.2, height=4.2)
    selectors = list(dict.fromkeys(s["selector"] for s in summary if s["selector"] != FULL))
    colors = {name: f"C{i % 10}" for i, name in enumerate(selectors)}
    for ax, objective in zip(axes, objectives):
        for name, pts in points[objective].items():
            f, cm, cs, rm, rs = (np.array(v, dtype=float) for v in zip(*pts))
            if name == FULL:
                ax.errorbar(cm, rm, xerr=cs, yerr=rs, marker="*", markersize=12, color="black",
                            linestyle="none", capsize=3, label="full data")
                continue
            ax.errorbar(cm, rm, xerr=cs, yerr=rs, marker="o", capsize=3, label=name,
                        color=colors[name])
            for x, y, frac in zip(cm, rm, f):
                ax.annotate(f"{frac:g}", (x, y), textcoords="offset points", xytext=(4, 3),
                            fontsize="x-small", color=colors[name])
        finish_axes(ax, title=objective, xlabel="clean accuracy (%)", ylabel=ylabel)
    shared_legend(fig, axes)
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, path)


def coreset_plots(summary: Sequence[dict], out_dir, ev) -> list[Path]:
    """Robust (PGD) and clean accuracy against the fraction (and AutoAttack when computed);
    with an ``eps_ladder``, also PGD accuracy against ε per fraction (``robust_vs_eps.png``) and
    against the fraction at the ladder's middle radius (``robust_vs_fraction_middle_eps.png``);
    last, robust accuracy (at the middle radius, else at the cell's ε) against clean accuracy
    (``robust_vs_clean.png``)."""
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
    metric, at = ((ladder_metric(middle[0]), f" at ε={middle[0]}") if middle is not None
                  else ("pgd_acc", ""))
    paths.append(plot_robust_vs_clean(
        summary, metric, out / "robust_vs_clean.png",
        ylabel=f"PGD-{ev.pgd_steps} accuracy{at} (%)",
        title=f"Robustness against clean accuracy (labels: fraction kept)\n"
              f"PGD-{ev.pgd_steps}{at}, n={ev.n}; {note}"))
    return paths
