"""comparison.md of a coreset study: EasyCore minus each other selector, with Welch's test,
checked against scipy's own Welch test on the raw seed values."""

from __future__ import annotations

import statistics

import pytest
from scipy.stats import ttest_ind

from samplewise.studies.compare import CORESET, compare, comparison_markdown, welch

EASY = [0.60, 0.62, 0.61]
RANDOM = [0.55, 0.56, 0.54]
CCS = [0.58, 0.63, 0.60]


def entry(selector, values, fraction=0.5, objective="standard", metric="pgd_acc"):
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"selector": selector, "fraction": fraction, "objective": objective,
            f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": len(values)}


@pytest.mark.parametrize("a, b", [(EASY, RANDOM), (EASY, CCS), ([0.5, 0.9], [0.1, 0.2, 0.3, 0.4])])
def test_welch_equals_scipy_on_the_raw_values(a, b):
    diff, se, df, p = welch(statistics.mean(a), statistics.stdev(a), len(a),
                            statistics.mean(b), statistics.stdev(b), len(b))
    ref = ttest_ind(a, b, equal_var=False)
    assert diff == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert diff / se == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    assert df == pytest.approx(ref.df)


def test_welch_edge_cases():
    assert welch(0.5, 0.0, 1, 0.4, 0.1, 3)[1:] == (None, None, None)      # one seed: no test
    assert welch(0.5, 0.0, 3, 0.5, 0.0, 3)[3] == 1.0                      # identical, no noise
    assert welch(0.5, 0.0, 3, 0.4, 0.0, 3)[3] == 0.0                      # different, no noise


def test_compare_pairs_same_fraction_and_objective_plus_full():
    summary = [entry("easycore", EASY), entry("random", RANDOM), entry("ccs", CCS),
               entry("random", [0.9, 0.9, 0.9], fraction=0.3),          # other fraction: out
               entry("random", [0.1, 0.1, 0.1], objective="trades"),     # other objective: out
               entry("full", [0.50, 0.52, 0.51], fraction=1),
               entry("grand", [0.58])]
    rows = {r["other"]: r for r in compare(summary, ["pgd_acc"], CORESET)}
    assert set(rows) == {"random", "ccs", "full", "grand"}
    assert rows["random"]["verdict"] == "ahead"                 # p = 0.0046 by scipy
    assert rows["ccs"]["verdict"] == "inside the noise"         # p = 0.82
    assert rows["full"]["verdict"] == "ahead"
    assert rows["grand"]["verdict"] == "one seed" and rows["grand"]["se"] is None
    assert rows["random"]["diff"] == pytest.approx(0.06)
    behind = compare([entry("easycore", RANDOM), entry("random", EASY)], ["pgd_acc"], CORESET)
    assert [r["verdict"] for r in behind] == ["behind"]
    assert compare([entry("random", RANDOM)], ["pgd_acc"], CORESET) == []   # no reference: nothing


def test_markdown_bolds_only_differences_outside_the_noise():
    summary = [entry("easycore", EASY), entry("random", RANDOM), entry("ccs", CCS),
               entry("grand", [0.58])]
    md = comparison_markdown(compare(summary, ["pgd_acc"], CORESET), {"pgd_acc": "PGD-20"}, CORESET)
    row = next(line for line in md.splitlines() if line.startswith("| standard | 0.5 |"))
    assert md.splitlines()[6] == "| objective | fraction | random | ccs | grand |"
    cells = dict(zip(["random", "ccs", "grand"], row.strip(" |").split(" | ")[2:]))
    assert cells["random"].startswith("**+6.0 ± ") and cells["random"].endswith("**")
    assert cells["ccs"].startswith("+0.7 ± ") and "**" not in cells["ccs"]
    assert cells["grand"] == "+3.0 (1 seed)"
    assert "## PGD-20" in md


def test_distillation_pairs_methods_under_one_teacher_plus_the_student_alone():
    from samplewise.studies.distill.run import SAAD

    def d(teacher, method, values):
        return {**entry(method, values), "teacher": teacher, "method": method}

    summary = [d("w2", "saad", EASY), d("w2", "ard", RANDOM), d("w3", "ard", [0.9, 0.9, 0.8]),
               d("w3", "saad", CCS), d("none", "pgd-at", RANDOM)]
    rows = compare(summary, ["pgd_acc"], SAAD)
    assert [(r["teacher"], r["other"], r["baseline"]) for r in rows] == [
        ("w2", "ard", False), ("w2", "pgd-at", True), ("w3", "ard", False), ("w3", "pgd-at", True)]
    assert rows[0]["verdict"] == "ahead" and rows[2]["verdict"] == "behind"
    md = comparison_markdown(rows, {}, SAAD)
    assert "| teacher | ard | pgd-at |" in md and "| w3 | **" in md


def test_saad_cost_ratios_per_teacher():
    from samplewise.studies.distill.results import cost_ratios

    def t(teacher, method, sec):
        return {"teacher": teacher, "method": method, "epoch_seconds_mean": sec}

    summary = [t("w2", "saad", 30.0), t("w2", "igdm", 60.0), t("w2", "rslad", 25.0),
               t("w3", "saad", 40.0), t("w3", "rslad", None), t("none", "pgd-at", 10.0)]
    assert cost_ratios(summary) == [("w2", "igdm", 0.5), ("w2", "rslad", 1.2)]
