"""Figure helpers shared by every module that draws (matplotlib, Agg canvas, atomic PNG).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``'s global state, so plotting works headless and in threads. Bottom layer: imports
only :mod:`samplewise.io`.
"""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path


def new_figure(ncols: int = 1, *, width: float = 4.6, height: float = 3.6, nrows: int = 1):
    """A figure with ``nrows`` x ``ncols`` axes on an Agg canvas; returns ``(fig, axes)`` with
    the axes in row-major order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def finish_axes(ax, *, title: str | None = None, xlabel: str | None = None,
                ylabel: str | None = None) -> None:
    """The last touches every panel gets: its title and axis labels (those given) and a light
    grid. The legend is the figure's (:func:`shared_legend`), beside the panels."""
    if title is not None:
        ax.set_title(title)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def shared_legend(fig, axes) -> None:
    """One legend for every panel of ``fig``, outside them at the right, so that it hides no
    point (beside them, centred, clear of the title); each label once, in the order first drawn."""
    entries: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right center",
                   fontsize="small")


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG through a temporary file and an atomic rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
