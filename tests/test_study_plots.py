"""The coreset study's robustness-against-clean-accuracy plot: its points are the summary's
means and stds, per objective and selector, sorted by fraction."""

from __future__ import annotations

import pytest

from samplewise.studies.plots import plot_robust_vs_clean, tradeoff_points


def row(selector, fraction, clean, robust, objective="standard", std=0.01):
    return {"objective": objective, "selector": selector, "fraction": fraction,
            "clean_acc_mean": clean, "clean_acc_std": std,
            "pgd_acc@0.02_mean": robust, "pgd_acc@0.02_std": std / 2}


SUMMARY = [row("easycore", 0.5, 0.80, 0.60), row("easycore", 0.1, 0.30, 0.25),
           row("random", 0.3, 0.84, 0.58), row("full", 1, 0.89, 0.54),
           row("random", 0.5, 0.86, 0.55, objective="trades"),
           {"objective": "standard", "selector": "random", "fraction": 0.7,  # not evaluated yet
            "clean_acc_mean": 0.88, "clean_acc_std": 0.0, "pgd_acc@0.02_mean": None}]


def test_points_are_the_summary_in_percent_sorted_by_fraction():
    pts = tradeoff_points(SUMMARY, "pgd_acc@0.02")
    assert list(pts) == ["standard", "trades"]
    assert [p[0] for p in pts["standard"]["easycore"]] == [0.1, 0.5]
    assert pts["standard"]["easycore"][1] == pytest.approx((0.5, 80.0, 1.0, 60.0, 0.5))
    assert [p[0] for p in pts["standard"]["random"]] == [0.3]        # the unevaluated 0.7 is out
    assert pts["standard"]["full"] == [pytest.approx((1, 89.0, 1.0, 54.0, 0.5))]
    assert list(pts["trades"]) == ["random"]
    assert pts["trades"]["random"] == [pytest.approx((0.5, 86.0, 1.0, 55.0, 0.5))]


def test_plot_writes_one_png(tmp_path):
    path = plot_robust_vs_clean(SUMMARY, "pgd_acc@0.02", tmp_path / "f.png", ylabel="y",
                                title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]   # no temporary left behind


@pytest.mark.parametrize("draw", ["fraction", "clean"])
def test_the_legend_stands_outside_every_panel(tmp_path, monkeypatch, draw):
    """One legend for the figure, drawn beside the panels: it can hide no point (a legend inside
    a panel covered the 10% points of the CIFAR-10 plot)."""
    from samplewise.studies import plots
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    rows = [{**r, "pgd_acc_mean": r.get("pgd_acc@0.02_mean"), "pgd_acc_std": 0.01}
            for r in SUMMARY]
    if draw == "fraction":
        plots.plot_vs_fraction(rows, "pgd_acc", tmp_path / "f.png", ylabel="y", title="t")
    else:
        plots.plot_robust_vs_clean(rows, "pgd_acc", tmp_path / "f.png", ylabel="y", title="t")
    (fig,) = figures
    fig.canvas.draw()
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == len(set(labels)) and "easycore" in labels
    box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent())


def test_student_vs_teacher_plot_draws_the_diagonal_over_the_teachers(tmp_path, monkeypatch):
    """A student on the dotted line matches its teacher: the line spans the teachers' range."""
    from samplewise.studies.distill import plots as dplots
    from samplewise.studies.grid import EvalSpec
    figures = []
    monkeypatch.setattr("samplewise.plotting.save_figure",
                        lambda fig, path: figures.append(fig) or path)

    def cell(teacher, method, acc, teacher_acc):
        return {"teacher": teacher, "method": method, "pgd_acc_mean": acc, "pgd_acc_std": 0.01,
                "pgd_acc_n": 3, "teacher_pgd": teacher_acc, "tas_train_mean": 0.3}
    summary = [cell("weak", "ard", 0.50, 0.55), cell("strong", "ard", 0.56, 0.66),
               cell("none", "pgd-at", 0.58, None)]
    dplots.distill_plots(summary, tmp_path, EvalSpec())
    ax = figures[0].axes[0]
    (diag,) = [line for line in ax.get_lines() if line.get_label() == "student = teacher"]
    assert list(diag.get_xdata()) == list(diag.get_ydata()) == pytest.approx([54.0, 67.0])
    assert len(figures[0].legends) == 1 and ax.get_legend() is None
