"""A study's method against every other one: differences of the seed means, with their noise.

A study's table gives each arm's mean ± std over seeds; the question a reader brings is "is
EasyCore (SAAD) ahead of X, and is that outside the seed noise?". :func:`compare` answers it
for every other arm in the same setting (:class:`Pairing`: a coreset study compares selectors
at the same fraction and objective, and the full data of the same objective; a distillation
study compares methods under the same teacher, and the student trained alone): the difference
of the means, its standard error ``sqrt(s_a²/n_a + s_b²/n_b)``, and a verdict from Welch's
t-test at the two-sided 5% level (Welch–Satterthwaite degrees of freedom). With 3 seeds a side
the critical t is about 2.8, so a difference must be close to three standard errors to leave
the noise. Fewer than 2 seeds on either side: no verdict.

Example:
    >>> rows = compare(record["summary"], ["clean_acc", "pgd_acc@0.02"], CORESET)
    >>> write_comparison(record["summary"], "runs/study", cfg.eval, CORESET, pgd_label="PGD-20")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .. import io
from . import tables

COMPARISON_FILE = "comparison.md"
ALPHA = 0.05


@dataclass(frozen=True)
class Pairing:
    """Which summary rows a study compares.

    ``key`` names the arm (``selector``, ``method``); ``reference`` is the arm compared against
    every other one whose ``within`` columns equal its own; ``baseline`` is ``(column, value,
    match)``: rows with ``row[column] == value`` (the full data, the student alone) are compared
    too when their ``match`` columns equal the reference's.
    """

    key: str
    reference: str
    within: tuple[str, ...]
    baseline: Optional[tuple[str, str, tuple[str, ...]]] = None

    def others(self, ref: dict, summary: Sequence[dict]) -> list[dict]:
        """The rows compared with the reference row ``ref``, in summary order."""
        def same(row, cols):
            return all(row[c] == ref[c] for c in cols)

        out = []
        for row in summary:
            if row is ref or row[self.key] == self.reference:
                continue
            if self.baseline is not None and row[self.baseline[0]] == self.baseline[1]:
                if same(row, self.baseline[2]):
                    out.append(row)
            elif same(row, self.within):
                out.append(row)
        return out

    def baseline_label(self, row: dict) -> Optional[str]:
        """The column heading of a baseline row (its arm), None for an ordinary row."""
        if self.baseline is not None and row[self.baseline[0]] == self.baseline[1]:
            return row[self.key]
        return None


#: the coreset study: EasyCore against every selector at the same fraction and objective, and
#: against the full data (selector ``full``) of the same objective
CORESET = Pairing("selector", "easycore", ("objective", "fraction"),
                  baseline=("selector", "full", ("objective",)))


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


def compare(summary: Sequence[dict], metrics: Sequence[str], pairing: Pairing) -> list[dict]:
    """``pairing.reference`` against every row :meth:`Pairing.others` pairs it with, for each
    metric with values on both sides.

    Returns one dict per (reference row, other, metric): the reference row's ``within`` values,
    ``other`` (the other arm), ``diff`` (reference − other, as a fraction, like the
    accuracies), ``se``, ``df``, ``p``, ``n_ref``, ``n_other`` and ``verdict``: ``"ahead"`` /
    ``"behind"`` when p < 0.05, ``"inside the noise"``, or ``"one seed"`` when a side has
    fewer than 2 seeds.
    """
    out = []
    for ref in (s for s in summary if s[pairing.key] == pairing.reference):
        for other in pairing.others(ref, summary):
            for m in metrics:
                a, b = ref.get(f"{m}_mean"), other.get(f"{m}_mean")
                if a is None or b is None:
                    continue
                na, nb = ref[f"{m}_n"], other[f"{m}_n"]
                diff, se, df, p = welch(a, ref[f"{m}_std"], na, b, other[f"{m}_std"], nb)
                verdict = ("one seed" if p is None else "inside the noise" if p >= ALPHA
                           else "ahead" if diff > 0 else "behind")
                out.append({**{c: ref[c] for c in pairing.within}, "other": other[pairing.key],
                            "baseline": pairing.baseline_label(other) is not None,
                            "metric": m, "diff": diff, "se": se, "df": df, "p": p,
                            "n_ref": na, "n_other": nb, "verdict": verdict})
    return out


def comparison_markdown(rows: Sequence[dict], labels: dict[str, str], pairing: Pairing) -> str:
    """One table per metric: rows the reference's settings (``pairing.within``), columns the
    other arms (baselines last), cells ``reference − other`` in points ± its standard error;
    bold when Welch's test puts the difference outside the seed noise (p < 0.05)."""
    ref = pairing.reference
    lines = [f"# {ref} against the other {pairing.key}s", "",
             f"Each cell is {ref}'s mean minus the other {pairing.key}'s, in accuracy points, "
             "± the standard error of that difference (over seeds, in the same "
             f"{' and '.join(pairing.within)}"
             + (f"; `{pairing.baseline[1]}` rows are compared on {' and '.join(pairing.baseline[2]) or 'every setting'}"
                if pairing.baseline is not None else "") +
             "). **Bold**: outside the seed noise (Welch's t-test, two-sided p < "
             f"{ALPHA:g}); plain: inside it; `(1 seed)`: no test. Positive: {ref} ahead.", ""]
    for m in dict.fromkeys(r["metric"] for r in rows):
        mine = [r for r in rows if r["metric"] == m]
        others = list(dict.fromkeys(r["other"] for r in mine if not r["baseline"]))
        others += list(dict.fromkeys(r["other"] for r in mine if r["baseline"]))
        keys = list(dict.fromkeys(tuple(r[c] for c in pairing.within) for r in mine))
        lines += [f"## {labels.get(m, m)}", "",
                  "| " + " | ".join(pairing.within) + " | " + " | ".join(others) + " |",
                  "|" + " --- |" * (len(pairing.within) + len(others))]
        for key in keys:
            cells = []
            for o in others:
                r = next((r for r in mine if tuple(r[c] for c in pairing.within) == key
                          and r["other"] == o), None)
                cells.append("–" if r is None else _cell(r))
            lines.append("| " + " | ".join(tables.format_value(v) for v in key) + " | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(r: dict) -> str:
    text = f"{100 * r['diff']:+.1f}"
    if r["se"] is None:
        return text + " (1 seed)"
    text += f" ± {100 * r['se']:.1f}"
    return f"**{text}**" if r["verdict"] in ("ahead", "behind") else text


def comparison_metrics(ev, pgd_label: str) -> tuple[list[str], dict[str, str]]:
    """The metrics a study's ``comparison.md`` compares and their headings: clean accuracy, PGD
    at the cell's ε (headed ``pgd_label``), every ladder radius and registered attack of
    ``ev``, and AutoAttack only when more than one seed runs it."""
    labels = {"clean_acc": "clean accuracy", "pgd_acc": pgd_label}
    for label, _ in ev.ladder():
        labels[tables.ladder_metric(label)] = f"PGD-{ev.pgd_steps} at ε = {label}"
    for name in ev.attacks or ():
        labels[tables.attack_metric(name)] = name
    if ev.autoattack and (ev.autoattack_seeds is None or len(ev.autoattack_seeds) > 1):
        labels["autoattack_acc"] = ev.autoattack_label()
    return list(labels), labels


def write_comparison(summary: Sequence[dict], out_dir, ev, pairing: Pairing, *,
                     pgd_label: str) -> Optional[Path]:
    """Compare (:func:`compare`) and write ``comparison.md`` (atomically) into the study
    directory; None, and nothing written, when the summary holds no reference row."""
    if not any(s[pairing.key] == pairing.reference for s in summary):
        return None
    metrics, labels = comparison_metrics(ev, pgd_label)
    path = Path(out_dir) / COMPARISON_FILE
    io.write_text(path, comparison_markdown(compare(summary, metrics, pairing), labels, pairing))
    return path
