"""The distillation study's two figures: student vs teacher robustness, and student robustness
vs TAS."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..grid import EvalSpec
from .config import NONE, TRANSFER_STEPS


def distill_plots(summary: Sequence[dict], out_dir, ev: EvalSpec) -> list[Path]:
    """Student robustness against teacher robustness (one line per method, the student alone
    as dashed lines) and against the TAS (one colour and line per method, one marker per
    teacher, weakest first)."""
    import numpy as np

    from ...plotting import finish_axes, new_figure, save_figure, shared_legend

    out = Path(out_dir)
    use_aa = ev.autoattack and any(s.get("autoattack_acc_mean") is not None for s in summary
                                   if s["teacher"] != NONE)
    metric = "autoattack_acc" if use_aa else "pgd_acc"
    label = ev.autoattack_label() if use_aa else f"PGD-{ev.pgd_steps}"
    short = "AutoAttack" if use_aa else label  # the axes' name; the titles give the attacks
    t_metric = "teacher_aa" if use_aa else "teacher_pgd"
    seeds = max((s.get(f"{metric}_n") or 0 for s in summary), default=0)  # seeds with a value
    note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed (no error bars)"
    distilled = [s for s in summary if s["teacher"] != NONE and s.get(f"{metric}_mean") is not None]
    alone = [s for s in summary if s["teacher"] == NONE and s.get(f"{metric}_mean") is not None]
    methods = list(dict.fromkeys(s["method"] for s in summary))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = "osD^v<>pP*Xh"
    paths = []

    fig, (ax,) = new_figure(width=6.0, height=4.4)
    for m in methods:
        pts = sorted((s[t_metric], s[f"{metric}_mean"], s[f"{metric}_std"]) for s in distilled
                     if s["method"] == m and s.get(t_metric) is not None)
        if pts:
            x, y, sd = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(100 * x, 100 * y, yerr=100 * sd, marker="o", capsize=3, label=m,
                        color=colors[m])
    for s in alone:
        ax.axhline(100 * s[f"{metric}_mean"], color=colors[s["method"]], linestyle="--",
                   linewidth=1.2, label=f"{s['method']} alone (no teacher)")
    xs = [100 * s[t_metric] for s in distilled if s.get(t_metric) is not None]
    if xs:  # a student on this line matches its teacher
        lo, hi = min(xs) - 1, max(xs) + 1
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", linewidth=1,
                label="student = teacher")
    ax.set_xlabel(f"teacher {short} accuracy (%)")
    ax.set_ylabel(f"student {short} accuracy (%)")
    fig.suptitle(f"Student vs teacher robustness\n{label} on the test slice; {note}",
                 fontsize="medium")
    finish_axes(ax)
    shared_legend(fig, [ax])
    paths.append(save_figure(fig, out / "student_vs_teacher_robustness.png"))

    fig, (ax,) = new_figure(width=6.0, height=4.4)
    tas_key = "tas_test" if any(s.get("tas_test_mean") is not None for s in distilled) \
        else "tas_train"
    # colour: the method; marker: the teacher (weakest first), so no point needs a text label
    strength = {s["teacher"]: s.get(t_metric) or 0.0 for s in distilled}
    teachers = sorted(strength, key=lambda t: (strength[t], t))
    shape = {t: markers[j % 12] for j, t in enumerate(teachers)}
    for m in methods:
        pts = sorted(((s[f"{tas_key}_mean"], s[f"{metric}_mean"], s["teacher"]) for s in distilled
                      if s["method"] == m and s.get(f"{tas_key}_mean") is not None),
                     key=lambda p: teachers.index(p[2]))
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], color=colors[m], linewidth=1,
                alpha=0.6, label=m)
        for x, y, name in pts:
            ax.scatter([x], [100 * y], marker=shape[name], color=colors[m], s=40, zorder=3)
    for s in alone:
        ax.axhline(100 * s[f"{metric}_mean"], color=colors[s["method"]], linestyle="--",
                   linewidth=1.2, label=f"{s['method']} alone (no teacher)")
    for t in teachers:  # legend entries for the teachers' markers
        ax.scatter([], [], marker=shape[t], color="grey", s=40, label=f"teacher {t}")
    which = f"held-out TAS (PGD-{TRANSFER_STEPS} by the student on the test slice)" \
        if tas_key == "tas_test" else "training TAS (last epoch)"
    ax.set_xlabel(which)
    ax.set_ylabel(f"student {short} accuracy (%)")
    fig.suptitle(f"Student robustness vs transferability\n{label}; {note}",
                 fontsize="medium")
    finish_axes(ax)
    shared_legend(fig, [ax])
    paths.append(save_figure(fig, out / "student_robustness_vs_tas.png"))
    return paths
