"""The hardness atlas: see which training samples a score calls easy and which it calls hard.

:func:`atlas` reads a score file and the training set it was computed on, and
:func:`write_atlas` writes:

- ``grid_<score>.png``: one row per class; the ``k`` samples with the lowest score at the left
  (easiest first) and the ``k`` with the highest at the right (hardest last), each labelled with
  its score and dataset index. Images keep the dataset's own resolution and colour (grey or
  RGB) and are enlarged by an integer factor without smoothing (each pixel becomes a block).
- ``datamap.png``: a data map (Swayamdipta et al. 2020, *Dataset Cartography*). Per sample,
  **confidence** is the mean over tracked epochs of the true-class probability and
  **variability** its standard deviation (``ddof=0``), from the score file's
  ``prob_per_epoch``: the eval-mode model's softmax at the end of each tracked epoch on the
  clean input (the paper's ``p_θ(e)(y|x)``, ``θ(e)`` the weights at the end of epoch ``e``;
  the paper's released code reads the training batches' probabilities instead). One point per
  sample, coloured by AIGN. Regions: **ambiguous** = the third of the samples with the highest
  variability (the paper's 33% subsets); among the others, **easy-to-learn** at confidence
  >= 0.5 and **hard-to-learn** below. A score file without ``prob_per_epoch`` (written before
  it was tracked, or by an online-mode run) gets no data map, and ``atlas.md`` says so.
- ``atlas.md`` linking both, with a reading computed from the data: the Spearman correlation of
  AIGN with confidence and with variability, each region's share among the lowest and the
  highest AIGN deciles, and the class mix of the easiest and the hardest 10% by the score.
- ``atlas.json``: the same numbers and the indices shown in the grid.

Example:
    >>> res = atlas("runs/scores/scores.npz", k=8)
    >>> write_atlas(res, "runs/atlas")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from . import io
from .analysis import decile_bins, load_scored_dataset, spearman
from .errors import SamplewiseError
from .formats.scores import ScoreTable

REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")
#: the ambiguous region: variability at or above this quantile (the top third)
AMBIGUOUS_QUANTILE = 2 / 3
#: easy-to-learn vs hard-to-learn among the rest
CONFIDENCE_SPLIT = 0.5
#: target tile size in screen pixels; the enlargement factor is an integer
_TILE = 80
#: the grid's layout in screen pixels: space under a tile for its label, gap between the easy
#: and the hard half, left margin (class names), space between tiles, title band
GRID_LAYOUT = {"label_h": 26, "gap": 30, "margin": 110, "pad": 4, "top": 30}


# ----------------------------------------------------------------------------- numbers
def extremes(values: np.ndarray, labels: np.ndarray, index: np.ndarray, k: int
             ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per class: positions (rows of the table) of the ``k`` lowest and ``k`` highest values.

    Both arrays are in ascending order of the value (ties by dataset index), so a grid row reads
    easiest -> ... -> hardest from left to right. A class with fewer than ``2k`` samples shows
    each sample once (the highest part takes what the lowest part left).

    Example:
        >>> lo, hi = extremes(np.array([3., 1., 2., 5.]), np.zeros(4, int), np.arange(4), 1)[0]
        >>> lo.tolist(), hi.tolist()
        ([1], [3])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SamplewiseError(f"k must be a positive integer, got {k!r}")
    out = {}
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        order = pos[np.lexsort((index[pos], values[pos]))]
        n = len(order)
        out[int(c)] = (order[:min(k, n)], order[max(k, n - k):])
    return out


def data_map(prob_per_epoch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence (mean), variability (std, ``ddof=0``) over epochs, and each sample's region.

    Returns:
        ``(confidence, variability, region)``: float64 ``(N,)``, float64 ``(N,)`` and int
        ``(N,)`` positions into :data:`REGIONS`.

    Example:
        >>> conf, var, region = data_map(np.array([[0.9, 1.0], [0.1, 0.9], [0.1, 0.1]]))
        >>> [REGIONS[r] for r in region]
        ['easy-to-learn', 'ambiguous', 'hard-to-learn']
    """
    p = np.asarray(prob_per_epoch, dtype=np.float64)
    conf, var = p.mean(1), p.std(1)
    thr = np.quantile(var, AMBIGUOUS_QUANTILE) if len(var) else 0.0
    region = np.where(conf >= CONFIDENCE_SPLIT, 0, 2)
    region[var >= thr] = 1
    if len(var) and np.ptp(var) == 0:  # no sample varies more than another: none is ambiguous
        region = np.where(conf >= CONFIDENCE_SPLIT, 0, 2)
    return conf, var, region


def _shares(region: np.ndarray) -> dict[str, float]:
    n = max(len(region), 1)
    return {name: float((region == r).sum() / n) for r, name in enumerate(REGIONS)}


def _class_mix(labels: np.ndarray, classes: tuple, mask: np.ndarray) -> dict[str, float]:
    n = max(int(mask.sum()), 1)
    return {classes[c] if c < len(classes) else str(c): float((labels[mask] == c).sum() / n)
            for c in range(max(len(classes), int(labels.max(initial=-1)) + 1))}


def atlas(scores, *, score: str = "aign", k: int = 8, dataset: Optional[str] = None) -> dict:
    """The atlas of a score file: grid picks, data map and the reading (see the module docs).

    Args:
        scores: the score file (``DIR/scores.npz``).
        score: the score that orders the grids and the 10% class mix (any score in the file).
        k: samples per side of each grid row.
        dataset: default: the dataset named in the score file (its fingerprint must match).

    Returns:
        A dict with ``score``, ``k``, ``dataset``, ``classes``, ``grid`` (per class: the easy
        and hard dataset indices, positions and values), ``images`` (uint8 ``N x C x H x W`` of
        the shown samples, by position), ``datamap`` (None without ``prob_per_epoch``, else
        the per-sample arrays and thresholds) and ``reading``.
    """
    bundle, table = load_scored_dataset(scores, dataset=dataset)
    values = table.get(score).astype(np.float64)  # an unknown score fails before any work
    extremes(values, table.labels, table.index, k)  # validates k
    split = bundle.train.subset(table.index)
    if not np.array_equal(split.y.numpy(), table.labels):
        raise SamplewiseError("the score file's labels differ from the dataset's")
    classes = tuple(bundle.card.classes)
    picks = extremes(values, table.labels, table.index, k)
    shown = np.unique(np.concatenate([np.concatenate(v) for v in picks.values()]))
    grid = {c: {side: {"position": pos.tolist(), "index": table.index[pos].tolist(),
                       "value": values[pos].tolist()}
                for side, pos in zip(("easy", "hard"), lo_hi)}
            for c, lo_hi in picks.items()}
    return {"score": score, "k": int(k), "dataset": bundle.card.name,
            "fingerprint": bundle.fingerprint, "score_file": table.source, "n": len(table),
            "classes": classes, "grid": grid,
            "images": {int(p): split.x[p].numpy() for p in shown},
            "datamap": _datamap_part(table),
            "reading": _reading(table, values, score, classes)}


def _datamap_part(table: ScoreTable) -> Optional[dict]:
    if table.prob_per_epoch is None:
        return None
    conf, var, region = data_map(table.prob_per_epoch)
    colour = "aign" if "aign" in table.scores else table.names()[0]
    return {"confidence": conf, "variability": var, "region": region,
            "colour": colour, "colour_values": table.get(colour).astype(np.float64),
            "epochs": table.tracked_epochs() or list(range(table.prob_per_epoch.shape[1])),
            "ambiguous_from": float(np.quantile(var, AMBIGUOUS_QUANTILE)) if len(var) else 0.0,
            "confidence_split": CONFIDENCE_SPLIT}


def _reading(table: ScoreTable, values: np.ndarray, score: str, classes: tuple) -> dict:
    bins = decile_bins(values, table.index)
    out = {"class_mix": {"all": _class_mix(table.labels, classes, np.ones(len(table), bool)),
                         "easiest_10": _class_mix(table.labels, classes, bins == 1),
                         "hardest_10": _class_mix(table.labels, classes, bins == 10)},
           "class_mix_score": score}
    if table.prob_per_epoch is None or "aign" not in table.scores:
        return out
    conf, var, region = data_map(table.prob_per_epoch)
    aign = table.get("aign").astype(np.float64)
    abins = decile_bins(aign, table.index)
    out["spearman"] = {"aign_confidence": spearman(aign, conf),
                       "aign_variability": spearman(aign, var)}
    out["regions"] = {"all": _shares(region), "aign_lowest_10": _shares(region[abins == 1]),
                      "aign_highest_10": _shares(region[abins == 10])}
    return out


# ----------------------------------------------------------------------------- pictures
def _figure(width: float, height: float, dpi: int):
    """A figure on an Agg canvas (no pyplot global state: works headless and in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi: int) -> Path:
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def tile_scale(h: int, w: int) -> int:
    """The integer enlargement of an ``h x w`` image in the grid (each pixel an s x s block)."""
    return max(1, math.ceil(_TILE / max(h, w)))


def plot_grid(res: dict, path) -> Path:
    """One row per class: easiest k at the left, hardest k at the right, pixel-exact blocks
    (the canvas is drawn at one image pixel per screen pixel, each data pixel an s x s block)."""
    first = next(iter(res["images"].values()))
    ch, h, w = first.shape
    s = tile_scale(h, w)
    th, tw = h * s, w * s
    label_h, gap, margin, pad, top = (GRID_LAYOUT[k] for k in ("label_h", "gap", "margin",
                                                                "pad", "top"))
    k = res["k"]
    rows = sorted(res["grid"])
    width = margin + 2 * k * (tw + pad) + gap
    height = top + len(rows) * (th + label_h)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    texts = []
    for r, c in enumerate(rows):
        y0 = top + r * (th + label_h)
        texts.append((margin - 8, y0 + th / 2, _class_name(res, c), "right", 9))
        cells = [(i, side) for side in ("easy", "hard")
                 for i in range(len(res["grid"][c][side]["position"]))]
        for i, side in cells:
            pos = res["grid"][c][side]["position"][i]
            slot = i if side == "easy" else 2 * k - len(res["grid"][c]["hard"]["position"]) + i
            x0 = margin + slot * (tw + pad) + (gap if slot >= k else 0)
            img = res["images"][pos]
            tile = np.repeat(np.repeat(img.transpose(1, 2, 0), s, 0), s, 1)
            canvas[y0:y0 + th, x0:x0 + tw] = tile if ch == 3 else tile[:, :, :1]
            val = res["grid"][c][side]["value"][i]
            idx = res["grid"][c][side]["index"][i]
            texts.append((x0 + tw / 2, y0 + th + 2, f"{val:.3g}\n#{idx}", "center", 7))
    name = res["score"].upper() if res["score"] == "aign" else res["score"]
    texts.append((margin + k * (tw + pad) / 2, 6, f"easiest (lowest {name})", "center", 10))
    texts.append((margin + gap + 1.5 * k * (tw + pad), 6, f"hardest (highest {name}) ->",
                  "center", 10))
    dpi = 100
    fig = _figure(width / dpi, height / dpi, dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    ax.set_xlim(-0.5, width - 0.5), ax.set_ylim(height - 0.5, -0.5), ax.axis("off")
    for x, y, text, ha, size in texts:
        ax.text(x, y, text, ha=ha, va="top" if ha == "center" else "center", fontsize=size,
                linespacing=0.95)
    return _save(fig, path, dpi)


def _class_name(res: dict, c: int) -> str:
    classes = res["classes"]
    return f"{c}: {classes[c]}" if c < len(classes) else str(c)


def plot_datamap(res: dict, path) -> Path:
    """Confidence against variability, one point per sample coloured by AIGN, regions marked."""
    dm = res["datamap"]
    conf, var, colour = dm["confidence"], dm["variability"], dm["colour_values"]
    order = np.argsort(colour, kind="stable")  # the hardest drawn last, on top
    lo, hi = np.percentile(colour, [1, 99]) if len(colour) else (0.0, 1.0)
    fig = _figure(6.4, 5.2, 110)
    ax = fig.add_subplot(1, 1, 1)
    sc = ax.scatter(var[order], conf[order], c=colour[order], s=3, cmap="viridis",
                    vmin=lo, vmax=max(hi, lo + 1e-12), alpha=0.7, linewidths=0, rasterized=True)
    name = dm["colour"].upper() if dm["colour"] == "aign" else dm["colour"]
    fig.colorbar(sc, ax=ax, label=f"{name} (1st-99th percentile range)")
    thr, split = dm["ambiguous_from"], dm["confidence_split"]
    ax.axvline(thr, color="0.3", lw=0.8, ls="--")
    ax.plot([0, thr], [split, split], color="0.3", lw=0.8, ls="--")
    top = max(float(var.max(initial=0.0)), thr) * 1.05 + 1e-3
    ax.set_xlim(0, top), ax.set_ylim(-0.02, 1.02)
    box = dict(boxstyle="round", fc="white", ec="0.5", alpha=0.85)
    ax.text(thr * 0.5, 0.97, "easy-to-learn", ha="center", va="top", bbox=box, fontsize=9)
    ax.text(thr * 0.5, 0.03, "hard-to-learn", ha="center", va="bottom", bbox=box, fontsize=9)
    ax.text((thr + top) / 2, 0.5, "ambiguous", ha="center", va="center", bbox=box, fontsize=9)
    ax.set_xlabel("variability (std over epochs of the true-class probability)")
    ax.set_ylabel("confidence (mean true-class probability)")
    ax.set_title(f"data map: {res['dataset']}, {res['n']} samples, "
                 f"{len(dm['epochs'])} epochs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, 110)


# ----------------------------------------------------------------------------- files
def write_atlas(res: dict, out_dir) -> list[Path]:
    """Write the grid, the data map (if the file tracks probabilities), ``atlas.json`` and
    ``atlas.md`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = plot_grid(res, out / f"grid_{res['score']}.png")
    paths = [grid]
    if res["datamap"] is not None:
        paths.append(plot_datamap(res, out / "datamap.png"))
    summary = {k: v for k, v in res.items() if k not in ("images", "datamap")}
    summary["classes"] = list(res["classes"])
    summary["grid"] = {str(c): v for c, v in res["grid"].items()}
    if res["datamap"] is not None:
        dm = res["datamap"]
        summary["datamap"] = {k: dm[k] for k in ("colour", "epochs", "ambiguous_from",
                                                 "confidence_split")}
    io.write_json(out / "atlas.json", summary)
    io.write_text(out / "atlas.md", atlas_markdown(res, grid.name))
    return [*paths, out / "atlas.json", out / "atlas.md"]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rho(sp: dict) -> str:
    if sp["rho"] is None:
        return sp.get("note", "undefined")
    p = "" if sp["p"] is None else f"p = {sp['p']:.2g}, " if sp["p"] > 0 else "p < 1e-300, "
    return f"{sp['rho']:+.3f} ({p}n = {sp['n']})"


def atlas_markdown(res: dict, grid_name: str) -> str:
    """The text of ``atlas.md``: the pictures and the reading."""
    score, k = res["score"], res["k"]
    name = score.upper() if score == "aign" else score
    lines = [f"# Hardness atlas: {res['dataset']}", "",
             f"Score file `{res['score_file']}`: {res['n']} scored training samples.", "",
             f"## The {k} easiest and {k} hardest samples of each class by {name}", "",
             f"![{name} extremes per class]({grid_name})", "",
             f"One row per class: the {k} lowest {name} at the left (easiest first), the {k} "
             f"highest at the right (hardest last). Under each image: its {name} and `#` its "
             "dataset index. Pixels are enlarged without smoothing.", ""]
    rd = res["reading"]
    lines += ["## Data map", ""]
    if res["datamap"] is None:
        lines += ["No data map: the score file has no per-epoch true-class probabilities "
                  "(`prob_per_epoch`; written by checkpoint-mode scoring runs since they are "
                  "tracked). Score again to get one.", ""]
    else:
        dm = res["datamap"]
        lines += ["![data map](datamap.png)", "",
                  f"Confidence: the mean over the {len(dm['epochs'])} tracked epochs of the "
                  "eval-mode model's probability of the true class (end of each epoch, clean "
                  "input); variability: its standard deviation (Swayamdipta et al. 2020). "
                  f"Regions: ambiguous = variability >= {dm['ambiguous_from']:.3g} (the top "
                  f"third); otherwise easy-to-learn at confidence >= {dm['confidence_split']:g}, "
                  f"hard-to-learn below. Colour: {dm['colour'].upper()}.", ""]
    if "spearman" in rd:
        sp = rd["spearman"]
        lines += ["## Reading", "",
                  f"- Spearman AIGN vs confidence: {_rho(sp['aign_confidence'])}.",
                  f"- Spearman AIGN vs variability: {_rho(sp['aign_variability'])}.", "",
                  "| data-map region | all samples | lowest-AIGN 10% | highest-AIGN 10% |",
                  "|---|---:|---:|---:|"]
        reg = rd["regions"]
        for r in REGIONS:
            lines.append(f"| {r} | {_pct(reg['all'][r])} | {_pct(reg['aign_lowest_10'][r])} | "
                         f"{_pct(reg['aign_highest_10'][r])} |")
        lines.append("")
    elif "## Reading" not in lines:
        lines += ["## Reading", ""]
    mix = rd["class_mix"]
    lines += [f"Class mix of the easiest and the hardest 10% by {name}:", "",
              "| class | all samples | easiest 10% | hardest 10% |", "|---|---:|---:|---:|"]
    for c in mix["all"]:
        lines.append(f"| {c} | {_pct(mix['all'][c])} | {_pct(mix['easiest_10'][c])} | "
                     f"{_pct(mix['hardest_10'][c])} |")
    return "\n".join(lines) + "\n"


__all__ = ["AMBIGUOUS_QUANTILE", "CONFIDENCE_SPLIT", "GRID_LAYOUT", "REGIONS", "atlas",
           "atlas_markdown", "data_map", "extremes", "plot_datamap", "plot_grid", "tile_scale",
           "write_atlas"]
