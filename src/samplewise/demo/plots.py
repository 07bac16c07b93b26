"""The demo's three PNG plots: AIGN distribution, coreset accuracy, and student accuracy and TAS."""

from __future__ import annotations

import io as _io

import numpy as np

from .settings import model_label


def _figure(ncols: int, width: float = 5.0, height: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def plot_aign(table, results: dict) -> bytes:
    """AIGN histogram (log scale, EasyCore's kept part shaded) and AIGN per class."""
    aign = np.maximum(table.get("aign").astype(np.float64), 1e-12)
    labels = table.labels
    cut = results["scoring"]["easycore_cut"]
    frac = results["settings"]["fraction"]
    fig, (ax, bx) = _figure(2)
    bins = np.logspace(np.log10(aign.min()), np.log10(aign.max()), 40)
    kept = aign <= cut
    ax.hist([aign[kept], aign[~kept]], bins=bins, stacked=True, color=["C2", "C7"],
            label=[f"kept by EasyCore ({kept.sum()})", f"dropped ({(~kept).sum()})"])
    ax.axvline(cut, color="black", linestyle="--", linewidth=1.2,
               label=f"EasyCore {frac:.0%} cut ({cut:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("AIGN (mean ‖∇ₓ CE‖₂ over epochs, log scale)")
    ax.set_ylabel("training samples")
    ax.set_title("AIGN of every training sample")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    classes = sorted(set(int(c) for c in labels))
    data = [aign[labels == c] for c in classes]
    share = [float((aign[labels == c] <= cut).mean()) for c in classes]
    bx.boxplot(data, showfliers=False)
    bx.set_xticks(range(1, len(classes) + 1),
                  [f"{c}\n{p:.0%}" for c, p in zip(classes, share)], fontsize="small")
    bx.axhline(cut, color="black", linestyle="--", linewidth=1.2, label="EasyCore cut")
    bx.plot([], [], color="C1", label="median (box: quartiles)")
    bx.set_yscale("log")
    bx.set_xlabel("class (below: share kept by EasyCore)")
    bx.set_ylabel("AIGN (log scale)")
    bx.set_title("AIGN per class")
    bx.legend(fontsize="small")
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{results['dataset']}: sample hardness from the scoring run "
                 f"({results['scoring']['model']}, {results['scoring']['epochs']} epochs)")
    return _png(fig)


def _bars(ax, names, series: dict, ylabel: str, title: str, fmt="{:.0f}", scale=100.0):
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for j, (label, values) in enumerate(series.items()):
        pos = x + (j - (len(series) - 1) / 2) * width
        vals = [scale * v if v is not None else 0.0 for v in values]
        bars = ax.bar(pos, vals, width, label=label, color=f"C{j}")
        for b, v in zip(bars, values):
            if v is not None:
                ax.annotate(fmt.format(scale * v), (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x, names, fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")


def plot_coreset(results: dict) -> bytes:
    """Accuracy against the PGD radius, one line per arm (ε = 0 is clean accuracy; the last
    radius is the card's ε); the same data and scale for every arm."""
    c, ev = results["coreset"], results["eval"]
    radii = c["radii"]
    fig, (ax,) = _figure(1, width=6.4, height=4.4)
    x = [0.0, *radii]
    style = {"full": ("black", "--", "s"), "easycore": ("C2", "-", "o"),
             "random": ("C0", "-", "^"), "el2n": ("C3", "-", "v")}
    for name, r in c["methods"].items():
        y = [100 * r["clean_acc"], *(100 * e["robust_acc"] for e in r["ladder"])]
        color, ls, marker = style.get(name, (None, "-", "o"))
        label = "full data" if name == "full" else f"{name} {c['fraction']:.0%}"
        ax.plot(x, y, color=color, linestyle=ls, marker=marker, label=label)
    ax.set_xticks(x, ["clean", *(f"{r:g}" for r in radii[:-1]), f"{radii[-1]:g}\n(card)"],
                  fontsize="small")
    ax.set_xlabel(f"PGD-{ev['steps']} radius ε (step ε/4; {ev['n']} test images)")
    ax.set_ylabel("accuracy on the test slice (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title(f"{c['objective']} training on coresets ({results['dataset']}, "
                 f"{model_label(c)}, {c['epochs']} epochs)")
    return _png(fig)


def plot_distill(results: dict) -> bytes:
    d, ev = results["distillation"], results["eval"]
    names = list(d["methods"])
    fig, (ax, bx) = _figure(2, width=4.8, height=4.0)
    _bars(ax, names, {"clean": [d["methods"][n]["clean_acc"] for n in names],
                      f"PGD-{ev['steps']}": [d["methods"][n]["robust_acc"] for n in names]},
          "student accuracy on the test slice (%)", f"students {model_label(d['student_alone'])}")
    t, a = d["teacher"]["robust_acc"], d["student_alone"]["robust_acc"]
    ax.axhline(100 * t, color="black", linestyle="--", linewidth=1.2,
               label=f"teacher PGD ({100 * t:.0f})")
    ax.axhline(100 * a, color="C3", linestyle=":", linewidth=1.4,
               label=f"student alone, PGD ({100 * a:.0f})")
    ax.set_ylim(0, 128)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("distillation method")
    ax.legend(fontsize="x-small", loc="upper center", ncol=2)
    tas = [d["methods"][n].get("tas") for n in names]
    _bars(bx, names, {"TAS": tas}, "TAS (share of student x' fooling the teacher)",
          "adversarial transferability (last epoch)", fmt="{:.2f}", scale=1.0)
    bx.set_ylim(0, 1.05)
    bx.set_xlabel("distillation method")
    bx.legend(fontsize="small", loc="upper right", title="higher: more x' transfer",
              title_fontsize="x-small")
    fig.suptitle(f"{results['dataset']}: distilling {model_label(d['teacher'])} "
                 f"({d['teacher']['objective']}) into {model_label(d['student_alone'])}, "
                 f"ε = {ev['eps']:g}")
    return _png(fig)
