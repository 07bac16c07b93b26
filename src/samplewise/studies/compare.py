"""EasyCore against every other selector of a coreset study: differences with their noise.

A study's table gives each selector's mean ± std over seeds; the question a reader brings is
"is EasyCore ahead of X, and is that outside the seed noise?". :func:`compare` answers it for
every selector at the same fraction and objective (and the full data of the same objective):
the difference of the means, its standard error ``sqrt(s_a²/n_a + s_b²/n_b)``, and a verdict
from Welch's t-test at the two-sided 5% level (Welch–Satterthwaite degrees of freedom).
With 3 seeds a side the critical t is about 2.8, so a difference must be close to three
standard errors to leave the noise. Fewer than 2 seeds on either side: no verdict.

Example:
    >>> rows = compare(record["summary"], metrics=["clean_acc", "pgd_acc@0.02"])
    >>> write_comparison(rows, "runs/study", labels={"pgd_acc@0.02": "PGD-20 ε=0.02"})
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from .. import io

REFERENCE = "easycore"
FULL = "full"
COMPARISON_FILE = "comparison.md"
ALPHA = 0.05


def welch(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
          ) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
    """``(a − b, standard error, degrees of freedom, two-sided p)`` of Welch's t-test; the last
    three are None with fewer than 2 values a side. Two zero stds: the means either tie
    (p = 1) or differ with no noise at all (p = 0)."""
    diff = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return diff, None, None, None
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, 0.0, float(n_a + n_b - 2), 1.0 if diff == 0 else 0.0
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    from scipy.stats import t as student_t
    p = 2 * student_t.sf(abs(diff) / se, df)
    return diff, se, df, float(p)


def compare(summary: Sequence[dict], metrics: Sequence[str], *, reference: str = REFERENCE
            ) -> list[dict]:
    """``reference`` against every other selector of the same fraction and objective, and
    against the full data of the same objective, for each metric with values on both sides.

    Returns one dict per (objective, fraction, other, metric): ``diff`` (reference − other, as
    a fraction, like the accuracies), ``se``, ``df``, ``p``, ``n_ref``, ``n_other`` and
    ``verdict``: ``"ahead"`` / ``"behind"`` when p < 0.05, ``"inside the noise"``, or
    ``"one seed"`` when a side has fewer than 2 seeds.
    """
    out = []
    for ref in (s for s in summary if s["selector"] == reference):
        others = [s for s in summary if s["objective"] == ref["objective"] and s is not ref
                  and (s["fraction"] == ref["fraction"] or s["selector"] == FULL)]
        for other in others:
            for m in metrics:
                a, b = ref.get(f"{m}_mean"), other.get(f"{m}_mean")
                if a is None or b is None:
                    continue
                na, nb = ref[f"{m}_n"], other[f"{m}_n"]
                diff, se, df, p = welch(a, ref[f"{m}_std"], na, b, other[f"{m}_std"], nb)
                verdict = ("one seed" if p is None else "inside the noise" if p >= ALPHA
                           else "ahead" if diff > 0 else "behind")
                out.append({"objective": ref["objective"], "fraction": ref["fraction"],
                            "other": other["selector"], "metric": m, "diff": diff, "se": se,
                            "df": df, "p": p, "n_ref": na, "n_other": nb, "verdict": verdict})
    return out


def comparison_markdown(rows: Sequence[dict], labels: dict[str, str], *,
                        reference: str = REFERENCE) -> str:
    """One table per metric: rows (objective, fraction), columns the other selectors, cells
    ``reference − other`` in points ± its standard error; bold when Welch's test puts the
    difference outside the seed noise (p < 0.05)."""
    lines = [f"# {reference} against the other selectors", "",
             f"Each cell is {reference}'s mean minus the other selector's, in accuracy points, "
             "± the standard error of that difference (over seeds, at the same fraction and "
             "objective; `full` is the full data). **Bold**: outside the seed noise (Welch's "
             f"t-test, two-sided p < {ALPHA:g}); plain: inside it; `(1 seed)`: no test. "
             "Positive: ahead.", ""]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for m in metrics:
        mine = [r for r in rows if r["metric"] == m]
        others = list(dict.fromkeys(r["other"] for r in mine))
        others = [o for o in others if o != FULL] + ([FULL] if FULL in others else [])
        keys = list(dict.fromkeys((r["objective"], r["fraction"]) for r in mine))
        lines += [f"## {labels.get(m, m)}", "",
                  "| objective | fraction | " + " | ".join(others) + " |",
                  "|" + " --- |" * (2 + len(others))]
        for objective, fraction in keys:
            cells = []
            for o in others:
                r = next((r for r in mine if (r["objective"], r["fraction"], r["other"])
                          == (objective, fraction, o)), None)
                cells.append("–" if r is None else _cell(r))
            lines.append(f"| {objective} | {fraction:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(r: dict) -> str:
    text = f"{100 * r['diff']:+.1f}"
    if r["se"] is None:
        return text + " (1 seed)"
    text += f" ± {100 * r['se']:.1f}"
    return f"**{text}**" if r["verdict"] in ("ahead", "behind") else text


def write_comparison(rows: Sequence[dict], out_dir, labels: dict[str, str], *,
                     reference: str = REFERENCE) -> Path:
    """Write ``comparison.md`` (atomically) into the study directory."""
    path = Path(out_dir) / COMPARISON_FILE
    io.write_text(path, comparison_markdown(rows, labels, reference=reference))
    return path
