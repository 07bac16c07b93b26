"""Study machinery: config parsing, cell ids, --cells shares, resume/skip, result tables, and a
tiny coreset study end to end on digits."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml

from samplewise import io
from samplewise.commands import study as study_cmd
from samplewise.config import to_dict
from samplewise.errors import SamplewiseError
from samplewise.studies import grid, tables
from samplewise.studies.coreset_study import coreset_cells, load_coreset_config, run_coreset_study

ROOT = Path(__file__).resolve().parents[1]
DIGITS_CONFIG = ROOT / "configs" / "study-coreset-digits.yaml"
FMNIST_CONFIG = ROOT / "configs" / "study-coreset-fmnist.yaml"


def raw_config(**changes) -> dict:
    raw = {"study": "coreset",
           "base": {"dataset": "digits", "model": "mlp", "epochs": 1, "progress": False},
           "grid": {"selectors": ["random", "easycore"], "fractions": [0.3, 0.5],
                    "objectives": ["trades", "pgd-at"]},
           "seeds": [0, 1, 2], "eval": {"n": 50, "pgd_steps": 2}}
    for key, value in changes.items():
        raw[key] = value
    return raw


# ----------------------------------------------------------------------------- config and cells
def test_grid_expands_to_stable_sorted_ids(tmp_path):
    cells = coreset_cells(load_coreset_config(raw_config()), tmp_path)
    assert len(cells) == 2 * 2 * 2 * 3 + 2 * 3          # grid x seeds + full per objective x seed
    ids = [c.id for c in cells]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert "easycore-f0.3-trades-s1" in ids and "full-f1-pgd-at-s2" in ids
    cell = next(c for c in cells if c.id == "easycore-f0.3-trades-s1")
    assert cell.params == {"selector": "easycore", "fraction": 0.3, "objective": "trades",
                           "seed": 1}
    assert (cell.cfg.objective, cell.cfg.seed, cell.cfg.eval_n, cell.cfg.eval_steps) == \
        ("trades", 1, 50, 2)
    assert cell.cfg.subset == str((tmp_path / "subsets" / "easycore-f0.3.npy").resolve())
    full = next(c for c in cells if c.id == "full-f1-pgd-at-s2")
    assert full.cfg.subset is None and full.params["fraction"] == 1.0
    # the same grid written in another order gives the same cells
    shuffled = raw_config(grid={"objectives": ["pgd-at", "trades"], "fractions": [0.5, 0.3],
                                "selectors": ["easycore", "random"]}, seeds=[2, 0, 1])
    again = coreset_cells(load_coreset_config(shuffled), tmp_path)
    assert [c.id for c in again] == ids
    assert [to_dict(c.cfg) for c in again] == [to_dict(c.cfg) for c in cells]


def test_cell_shares_partition_the_grid(tmp_path):
    cells = coreset_cells(load_coreset_config(raw_config()), tmp_path)
    reordered = list(reversed(cells))
    for n in range(1, 8):
        shares = [grid.share_of(reordered, f"{i}/{n}") for i in range(1, n + 1)]
        seen = [c.id for s in shares for c in s]
        assert sorted(seen) == sorted(c.id for c in cells)          # every cell exactly once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1   # round robin: balanced
        assert [c.id for c in shares[0]] == [c.id for c in grid.share_of(cells, (1, n))]
    assert [c.id for c in grid.share_of(reordered, None)] == [c.id for c in cells]


def test_shares_split_the_cells_the_ledger_does_not_hold(tmp_path):
    """With a ledger holding a block of cells (every cell of one selector, as after a finished
    teacher), the shares still partition what is left and stay balanced."""
    cells = coreset_cells(load_coreset_config(raw_config()), tmp_path)
    ids = sorted(c.id for c in cells)
    done = set(ids[: len(ids) // 2])   # a contiguous block of the sorted ids
    for n in (2, 3):
        shares = [grid.share_of(cells, f"{i}/{n}", done) for i in range(1, n + 1)]
        seen = sorted(c.id for s in shares for c in s)
        assert seen == sorted(set(ids) - done)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "-1/2", "1/2/3", ""])
def test_bad_share_is_refused(text):
    with pytest.raises(SamplewiseError, match="i/n"):
        grid.parse_share(text)


@pytest.mark.parametrize("change, message", [
    ({"seedz": [0]}, "unknown study config key"),
    ({"base": {"dataset": "digits", "epochz": 2}}, "unknown config key 'epochz'"),
    ({"eval": {"n": 10, "pgd": 3}}, "section 'eval'"),
    ({"grid": {"selectors": ["random"], "fractions": [0.3], "widths": [1]}}, "unknown grid axis"),
    ({"scoring": {"epochs": 2, "lr_max": 1}}, "section 'scoring'"),
    ({"selection": {"balanced": True}}, "section 'selection'"),
    ({"base": {"objective": "trades"}}, "set per cell"),
    ({"grid": {"selectors": ["nosuch"], "fractions": [0.3]}}, "unknown selector"),
    ({"grid": {"selectors": ["random"], "fractions": [1.5]}}, "fractions"),
    ({"grid": {"selectors": ["random", "random"], "fractions": [0.3]}}, "twice"),
    ({"grid": {"selectors": ["random"]}}, "grid.fractions is required"),
    ({"study": "distill"}, "not 'coreset'"),
    ({"seeds": [0, "x"]}, "seeds"),
    ({"eval": {"autoattack_version": "custom"}}, "autoattack_attacks"),
])
def test_bad_config_is_refused(change, message):
    with pytest.raises(SamplewiseError, match=message):
        load_coreset_config(raw_config(**change))


def test_shipped_configs_parse():
    digits = load_coreset_config(DIGITS_CONFIG)
    assert digits.base.dataset == "digits" and len(digits.seeds) == 2
    fmnist = load_coreset_config(FMNIST_CONFIG)
    assert fmnist.base.train_size == 10000 and fmnist.base.model == "cnn-small"
    assert set(fmnist.grid["selector"]) == {"easycore", "random", "el2n", "forgetting", "ccs",
                                            "moderate", "hardcore"}
    assert fmnist.grid["fraction"] == (0.3, 0.5) and fmnist.seeds == (0, 1, 2)
    assert set(fmnist.grid["objective"]) == {"pgd-at", "trades"}
    assert (fmnist.eval.n, fmnist.eval.pgd_steps, fmnist.eval.autoattack_n) == (1000, 20, 200)


# ----------------------------------------------------------------------------- fake runs
def _fake_acc(cfg) -> tuple[float, float]:
    """Deterministic, seed-dependent accuracies (multiples of 1/64: exact in float)."""
    bump = {"trades": 3, "pgd-at": 0}[cfg.objective] + (5 if cfg.subset is None else 0)
    return (32 + bump + cfg.seed * 2) / 64, (16 + bump - cfg.seed * cfg.seed) / 64


@pytest.fixture()
def fake_training(monkeypatch):
    """Replace run_training by a stand-in that writes a finished run dir and records its calls."""
    calls = []

    def run(cfg, out_dir, *, resume=False, device=None, **kw):
        calls.append((Path(out_dir).name, resume))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        io.write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg)))
        clean, robust = _fake_acc(cfg)
        n_train = 1347 if cfg.subset is None else 405
        result = {"clean_acc": clean, "robust_acc": robust, "n_train": n_train,
                  "epochs": cfg.epochs, "budget": cfg.budget, "epoch_seconds": [0.5, 0.25],
                  "eval": {"attack": "pgd", "eps": 0.2, "steps": cfg.eval_steps, "n": cfg.eval_n}}
        io.write_bytes(out / "model.pt", b"stand-in")
        io.write_json(out / "result.json", result)
        return result

    monkeypatch.setattr("samplewise.runs.run_training", run)
    return calls


def test_shares_run_disjoint_cells_then_a_rerun_merges(tmp_path, fake_training):
    cfg = load_coreset_config(raw_config())
    cells = coreset_cells(cfg, tmp_path)
    first = grid.run_cells(cells, tmp_path, cfg.eval, share="2/3")
    assert set(first) == {c.id for c in grid.share_of(cells, "2/3")}
    record = tables.write_results(cfg, cells, tmp_path, title="t")
    assert record["cells_finished"] == len(first)
    assert len(record["missing"]) == len(cells) - len(first)
    assert "not finished yet" in (tmp_path / "results.md").read_text()
    grid.run_cells(cells, tmp_path, cfg.eval, share="1/3")
    fake_training.clear()
    rest = grid.run_cells(cells, tmp_path, cfg.eval)            # no share: what is left
    third = grid.share_of(cells, "3/3")
    assert sorted(name for name, _ in fake_training) == sorted(c.id for c in third)
    assert sum(s == "already finished" for s in rest.values()) == 2 * len(cells) // 3
    record = tables.write_results(cfg, cells, tmp_path, title="t")
    assert record["cells_finished"] == len(cells) and record["missing"] == []


def test_killed_cell_resumes_and_changed_settings_are_refused(tmp_path, fake_training):
    cfg = load_coreset_config(raw_config())
    cell = coreset_cells(cfg, tmp_path)[0]
    path = grid.cell_dir(tmp_path, cell)
    path.mkdir(parents=True)
    (path / "checkpoint.pt").write_bytes(b"killed after an epoch")
    assert grid.run_cell(cell, path, cfg.eval) == "resumed"
    assert fake_training == [(cell.id, True)]
    assert grid.run_cell(cell, path, cfg.eval) == "already finished"
    assert len(fake_training) == 1
    other = load_coreset_config(raw_config(base={**raw_config()["base"], "epochs": 3}))
    changed = next(c for c in coreset_cells(other, tmp_path) if c.id == cell.id)
    with pytest.raises(SamplewiseError, match="epochs=1"):
        grid.run_cell(changed, path, other.eval)
    with pytest.raises(SamplewiseError, match="use another --out"):   # up front, not per cell
        grid.run_cells([changed], tmp_path, other.eval)
    assert len(fake_training) == 1


def _hand_summary(csv_path: Path, group=("selector", "fraction", "objective")) -> dict:
    groups = defaultdict(lambda: defaultdict(list))
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            key = tuple(row[g] for g in group)
            for m in ("clean_acc", "pgd_acc"):
                groups[key][m].append(float(row[m]))
    out = {}
    for key, metrics in groups.items():
        cells = []
        for m in ("clean_acc", "pgd_acc"):
            v = metrics[m]
            mean = f"{100 * statistics.mean(v):.2f}"
            cells.append(f"{mean} ± {100 * statistics.stdev(v):.2f}" if len(v) > 1 else mean)
        out[key] = (len(metrics["clean_acc"]), cells)
    return out


def _md_rows(md_path: Path) -> dict:
    rows = {}
    for line in md_path.read_text().splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if line.startswith("| ") and parts[0] not in ("selector", "---"):
            rows[(parts[0], f"{float(parts[1])}", parts[2])] = (int(parts[3]), parts[6:8])
    return rows


def test_results_md_is_mean_and_std_of_results_csv(tmp_path, fake_training):
    cfg = load_coreset_config(raw_config())
    cells = coreset_cells(cfg, tmp_path)
    grid.run_cells(cells, tmp_path, cfg.eval)
    tables.write_results(cfg, cells, tmp_path, title="t")
    hand = _hand_summary(tmp_path / "results.csv")
    md = _md_rows(tmp_path / "results.md")
    assert len(hand) == 2 * 2 * 2 + 2 and set(md) == set(hand)
    for key, (seeds, cells_) in hand.items():
        assert md[key] == (seeds, cells_)
    # one value checked against the fake's formula: full data, trades, seeds 0..2
    means = [_fake_acc(c.cfg)[0] for c in cells if c.params["selector"] == "full"
             and c.params["objective"] == "trades"]
    assert md[("full", "1.0", "trades")][1][0] == \
        f"{100 * statistics.mean(means):.2f} ± {100 * statistics.stdev(means):.2f}"
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["rows"]) == len(cells) and data["config"]["seeds"] == [0, 1, 2]


# ----------------------------------------------------------------------------- end to end on digits
@pytest.fixture(scope="module")
def digits_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    summary = run_coreset_study(DIGITS_CONFIG, out)
    return out, summary


def test_digits_study_writes_tables_and_plots(digits_study):
    out, summary = digits_study
    assert summary["cells_total"] == 6 and summary["cells_finished"] == 6 and not summary["missing"]
    assert set(summary["ran"].values()) == {"trained"}
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["cell"] for r in rows] == sorted(summary["ran"])
    assert set(rows[0]) == {"cell", "selector", "fraction", "objective", "seed", "clean_acc",
                            "pgd_acc", "n_train", "epochs", "budget", "seconds"}
    sizes = {r["selector"]: int(r["n_train"]) for r in rows}
    assert sizes == {"easycore": 405, "random": 405, "full": 1347}     # ceil(0.3 * 1347) = 405
    assert all(r["budget"] == "epochs" and r["epochs"] == "2" for r in rows)
    for r in rows:
        result = json.loads((out / "cells" / r["cell"] / "result.json").read_text())
        assert float(r["pgd_acc"]) == result["robust_acc"] and result["eval"]["steps"] == 3
        assert result["eval"]["n"] == 100
    hand, md = _hand_summary(out / "results.csv"), _md_rows(out / "results.md")
    assert md == hand and len(md) == 3
    meta = json.loads((out / "subsets" / "easycore-f0.3.json").read_text())
    scores = json.loads((out / "scoring" / "result.json").read_text())
    study = json.loads((out / "results.json").read_text())
    assert meta["fingerprint"] == study["scoring"]["fingerprint"]
    assert meta["size"] == 405 and scores["objective"] == "standard"
    for name in ("robust_vs_fraction.png", "clean_vs_fraction.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(Path(p).name for p in summary["plots"]) == [
        "clean_vs_fraction.png", "robust_vs_clean.png", "robust_vs_fraction.png"]


def test_digits_study_rerun_skips_finished_cells_and_adds_autoattack(digits_study, monkeypatch,
                                                                     tmp_path):
    out, _ = digits_study
    results = sorted((out / "cells").glob("*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    scores_before = (out / "scoring" / "scores.npz").stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("samplewise.runs.run_training", no_training)
    again = run_coreset_study(DIGITS_CONFIG, out)
    assert set(again["ran"].values()) == {"already finished"}
    assert {p: p.stat().st_mtime_ns for p in results} == before
    assert (out / "scoring" / "scores.npz").stat().st_mtime_ns == scores_before
    # turning AutoAttack on later only adds the (cached) AutoAttack evaluations
    raw = yaml.safe_load(DIGITS_CONFIG.read_text())
    raw["eval"].update(autoattack=True, autoattack_n=16, autoattack_version="custom",
                       autoattack_attacks=["apgd-ce"], autoattack_seeds=[0])
    config = tmp_path / "aa.yaml"
    config.write_text(yaml.safe_dump(raw))
    # share 1/3 of the sorted ids is easycore-...-s0 and full-...-s1; only seed 0 gets AutoAttack
    with_aa = run_coreset_study(config, out, cells="1/3")
    assert with_aa["ran"] == {"easycore-f0.3-standard-s0": "autoattack",
                              "full-f1-standard-s1": "already finished"}
    cached = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/autoattack.json")}
    assert [p.parent.name for p in cached] == ["easycore-f0.3-standard-s0"]
    aa = json.loads(next(iter(cached)).read_text())
    assert aa["attack"] == "autoattack" and aa["n"] == 16 and 0 <= aa["robust_acc"] <= 1
    with open(out / "results.csv") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(rows["easycore-f0.3-standard-s0"]["autoattack_acc"]) == aa["robust_acc"]
    assert sum(r["autoattack_acc"] != "" for r in rows.values()) == 1
    md = (out / "results.md").read_text()
    assert "AutoAttack (apgd-ce) on 16 (seed 0 only)" in md
    assert [Path(p).name for p in with_aa["plots"]][-2:] == ["autoattack_vs_fraction.png",
                                                              "robust_vs_clean.png"]
    easy = next(line for line in md.splitlines() if line.startswith("| easycore"))
    assert easy.rstrip(" |").endswith(f"| {100 * aa['robust_acc']:.2f}")   # one seed: no ±
    run_coreset_study(config, out, cells="1/3")
    assert {p: p.stat().st_mtime_ns for p in cached} == cached
    # AutoAttack on more images later: the result on 16 is stale, is never reported under the
    # new label, and is computed again
    raw["eval"]["autoattack_n"] = 24
    config.write_text(yaml.safe_dump(raw))
    run_coreset_study(config, out, report_only=True)
    with open(out / "results.csv") as fh:
        assert all(r["autoattack_acc"] == "" for r in csv.DictReader(fh))
    assert run_coreset_study(config, out, cells="1/3")["ran"]["easycore-f0.3-standard-s0"] == \
        "autoattack"
    aa = json.loads(next(iter(cached)).read_text())
    assert aa["n"] == 24 and aa["settings"] == {"n": 24, "version": "custom",
                                                "attacks": ["apgd-ce"]}
    with open(out / "results.csv") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(rows["easycore-f0.3-standard-s0"]["autoattack_acc"]) == aa["robust_acc"]


def test_report_writes_the_progress_without_running_anything(digits_study, tmp_path, capsys,
                                                              monkeypatch):
    """--report: tables and plots from the cells finished so far, nothing trained or evaluated
    (here one cell of the finished study is taken away, as if its share were still running)."""
    src, _ = digits_study
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    gone = sorted(p.name for p in (out / "cells").iterdir())[0]
    shutil.rmtree(out / "cells" / gone)
    monkeypatch.setattr("samplewise.runs.run_training", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr("samplewise.studies.grid.autoattack_cell",
                        lambda *a, **k: pytest.fail("evaluated"))
    parser = argparse.ArgumentParser()
    study_cmd.add_arguments(parser)
    args = parser.parse_args(["coreset", "--config", str(DIGITS_CONFIG), "--out", str(out),
                              "--report"])
    assert study_cmd.run(args) == 0
    assert f"5/6 cells finished; missing: {gone}" in capsys.readouterr().out
    assert not (out / "cells" / gone).exists()
    assert "not finished yet" in (out / "results.md").read_text()
    with open(out / "results.csv") as fh:
        assert gone not in {r["cell"] for r in csv.DictReader(fh)}
    for argv, message in ((["--out", str(tmp_path / "none"), "--report"], "does not exist"),
                          (["--out", str(tmp_path), "--report"], "no finished scoring run"),
                          (["--out", str(out), "--report", "--cells", "1/2"], "drop --cells")):
        args = parser.parse_args(["coreset", "--config", str(DIGITS_CONFIG), *argv])
        with pytest.raises(SamplewiseError, match=message):
            study_cmd.run(args)
    assert not (tmp_path / "none").exists()


def test_study_command(digits_study, capsys, monkeypatch):
    out, _ = digits_study
    monkeypatch.setattr("samplewise.runs.run_training", lambda *a, **k: pytest.fail("retrained"))
    parser = argparse.ArgumentParser()
    study_cmd.add_arguments(parser)
    args = parser.parse_args(["coreset", "--config", str(DIGITS_CONFIG), "--out", str(out),
                              "--cells", "2/2"])
    assert study_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "6/6 cells finished" in text and "results.md" in text
    args = parser.parse_args(["coreset", "--config", str(DIGITS_CONFIG), "--out", str(out),
                              "--cells", "3/2"])
    with pytest.raises(SamplewiseError, match="1 <= i <= n"):
        study_cmd.run(args)
    assert "coreset" in study_cmd.SUBCOMMANDS


@pytest.mark.parametrize("then, now, total, seconds, expected", [
    (10, 30, 90, 1200.0, "30 of 90 cells finished; ~60 min left at the pace so far (1.0 cells/min)"),
    (0, 2, 122, 600.0, "2 of 122 cells finished; ~10.0 h left at the pace so far (5.0 min a cell)"),
    (0, 1, 42, 1202.0, "1 of 42 cells finished; ~13.7 h left at the pace so far (20.0 min a cell)"),
    (5, 5, 90, 600.0, "5 of 90 cells finished"),            # nothing finished yet: no pace
    (0, 90, 90, 600.0, "90 of 90 cells finished"),
])
def test_pace_of_a_study(then, now, total, seconds, expected):
    assert grid.pace(then, now, total, seconds) == expected
