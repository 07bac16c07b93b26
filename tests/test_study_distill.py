"""The distillation study (issue #4) end to end on digits: a teacher trained by the study plus
a given one, two methods; results, plots, reruns, --cells shares, frozen teachers, config
errors, and every shipped study config parses."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from samplewise.errors import SamplewiseError
from samplewise.studies import distill, grid
from samplewise.studies.distill.cells import distill_cells
from samplewise.studies.distill.teachers import ensure_teacher
from samplewise.studies.coreset_study import load_coreset_config

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "study-distill-digits.yaml"
LOADERS = {"coreset": load_coreset_config, "distill": distill.load_distill_config}


def raw(teacher: Path, **changes) -> dict:
    cfg = yaml.safe_load(DIGITS.read_text())
    cfg["teachers"][1]["path"] = str(teacher)
    cfg.update(changes)
    return cfg


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mtimes(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted((out / "cells").rglob("*")) if p.is_file()}


def test_study_end_to_end(tmp_path, given_teacher):
    before = digest(given_teacher)
    out = tmp_path / "study"
    res = distill.run_distill_study(raw(given_teacher), out)
    assert res["cells_total"] == 4 and res["cells_finished"] == 4 and not res["failed"]
    for name in ("results.csv", "results.md", "results.json", "student_vs_teacher_robustness.png",
                 "student_robustness_vs_tas.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    record = json.loads((out / "results.json").read_text())
    assert {r["cell"] for r in record["rows"]} == {"given-ard-s0", "given-rslad-s0",
                                                   "mlp-trades-ard-s0", "mlp-trades-rslad-s0"}
    for row in record["rows"]:
        assert 0 <= row["tas_train"] <= 1 and 0 <= row["tas_test"] <= 1
        assert row["teacher_pgd"] is not None and row["clean_acc"] is not None
    assert (out / "teachers" / "mlp-trades" / "model.pt").is_file()
    assert (out / "teachers" / "given" / "eval.json").is_file()
    assert "TAS test" in (out / "results.md").read_text()
    assert "s/epoch" in (out / "results.md").read_text()
    for row in record["rows"]:
        assert row["epoch_seconds"] == row["seconds"] / row["epochs"] > 0
    # the given teacher's file is untouched; the trained one is frozen after its training
    assert digest(given_teacher) == before
    trained = out / "teachers" / "mlp-trades" / "model.pt"
    trained_digest = digest(trained)
    # a rerun skips every finished cell and every teacher
    seen = mtimes(out)
    res2 = distill.run_distill_study(raw(given_teacher), out)
    assert set(res2["ran"].values()) == {"already finished"}
    assert mtimes(out) == seen and digest(trained) == trained_digest


def test_report_only_runs_nothing(tmp_path, given_teacher, monkeypatch):
    out = tmp_path / "study"
    cfg = raw(given_teacher)
    cfg["grid"]["methods"] = ["ard"]
    distill.run_distill_study(cfg, out, cells="1/2")  # half of the cells, both teachers
    seen = mtimes(out)
    monkeypatch.setattr("samplewise.runs.run_training", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(sys.modules["samplewise.evaluate"], "evaluate",
                        lambda *a, **k: pytest.fail("evaluated"))
    res = distill.run_distill_study(cfg, out, report_only=True)
    assert res["ran"] == {} and res["cells_finished"] == 1 and len(res["missing"]) == 1
    # the share's teacher has its cached evaluation; the other share's was never trained
    assert res["teachers"]["given"] is not None and res["teachers"]["mlp-trades"] is None
    assert mtimes(out) == seen and (out / "results.md").is_file()
    with pytest.raises(SamplewiseError, match="does not exist"):
        distill.run_distill_study(cfg, tmp_path / "nothing", report_only=True)


def test_cells_shares_partition(tmp_path, given_teacher):
    out = tmp_path / "study"
    cfg = raw(given_teacher, seeds=[0, 1])
    cfg["grid"]["methods"] = ["ard", "pgd-at"]
    r1 = distill.run_distill_study(cfg, out, cells="1/2")
    r2 = distill.run_distill_study(cfg, out, cells="2/2")
    ids1 = {k for k, v in r1["ran"].items() if v != "already finished"}
    ids2 = {k for k, v in r2["ran"].items() if v != "already finished"}
    assert ids1 and ids2 and not ids1 & ids2
    assert len(ids1 | ids2) == r2["cells_total"] == 2 * 2 + 2   # teachers x ard x seeds + alone
    assert r2["cells_finished"] == r2["cells_total"]
    assert "none-pgd-at-s1" in ids1 | ids2
    rows = json.loads((out / "results.json").read_text())["rows"]
    alone = [r for r in rows if r["teacher"] == "none"]
    assert alone and all(r["tas_train"] is None and r["tas_test"] is None for r in alone)


def test_config_errors(given_teacher):
    bad = raw(given_teacher)
    bad["teachers"][0]["wat"] = 1
    with pytest.raises(SamplewiseError, match="wat"):
        distill.load_distill_config(bad)
    bad = raw(given_teacher)
    bad["teachers"][0] = {"name": "x", "path": "a", "train": {}}
    with pytest.raises(SamplewiseError, match="exactly one"):
        distill.load_distill_config(bad)
    bad = raw(given_teacher)
    bad["teachers"][0]["train"] = {"no_such_key": 1}
    with pytest.raises(SamplewiseError):
        distill.load_distill_config(bad)
    bad = raw(given_teacher)
    bad["grid"]["teachers"] = ["missing"]
    with pytest.raises(SamplewiseError, match="missing"):
        distill.load_distill_config(bad)
    bad = raw(given_teacher)
    bad["base"]["teacher"] = "x"
    with pytest.raises(SamplewiseError, match="teacher"):
        distill.load_distill_config(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("study-*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_study_configs_parse(path):
    study = yaml.safe_load(path.read_text())["study"]
    cfg = LOADERS[study](path)
    assert cfg.study == study and cfg.seeds
    if study == "distill":
        cells = distill_cells(cfg, "/tmp/nowhere")
        assert len({c.id for c in cells}) == len(cells) > 0


def test_cli_distill(tmp_path, given_teacher, capsys):
    import argparse

    from samplewise.commands import study as study_cmd

    assert "distill" in study_cmd.SUBCOMMANDS
    cfg = raw(given_teacher)
    cfg["teachers"] = [cfg["teachers"][1]]
    cfg["grid"] = {"methods": ["ard"]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    parser = argparse.ArgumentParser()
    study_cmd.add_arguments(parser)
    args = parser.parse_args(["distill", "--config", str(path), "--out", str(tmp_path / "out"),
                              "--cells", "1/1"])
    assert study_cmd.run(args) == 0
    assert "1/1 cells finished" in capsys.readouterr().out
    with pytest.raises(SamplewiseError, match="i/n"):
        study_cmd.run(parser.parse_args(["distill", "--config", str(path), "--out",
                                         str(tmp_path / "out"), "--cells", "3"]))


def test_a_worker_skips_a_teacher_another_worker_is_training(tmp_path, given_teacher):
    """ensure_teacher(wait=False) leaves a teacher whose lock is held to its holder, so that two
    workers train two different teachers at once instead of queueing on the first."""
    cfg = distill.load_distill_config(raw(given_teacher))
    name = next(t.name for t in cfg.sections["teachers"] if t.train is not None)
    out = tmp_path / "study"
    with grid.file_lock(out / "locks" / f"teacher-{name}.lock", wait=True) as mine:
        assert mine
        assert ensure_teacher(cfg, out, name, wait=False) is None
        assert not (out / "teachers" / name).exists()  # nothing trained, nothing written
    path = ensure_teacher(cfg, out, name, wait=False)  # free now: trained here
    assert path is not None and grid.is_finished(out / "teachers" / name)


def test_a_worker_skips_a_teacher_another_worker_is_evaluating(tmp_path, given_teacher):
    """A trained teacher whose evaluation lock is held is left to its holder too: the worker
    runs another teacher's cells rather than wait (an AutoAttack on 1,000 takes ~20 min)."""
    cfg = distill.load_distill_config(raw(given_teacher))
    name = next(t.name for t in cfg.sections["teachers"] if t.train is not None)
    out = tmp_path / "study"
    with grid.file_lock(out / "locks" / f"teacher-eval-{name}.lock", wait=True) as mine:
        assert mine
        assert ensure_teacher(cfg, out, name, wait=False) is None  # trains, then leaves the eval
        assert grid.is_finished(out / "teachers" / name)
        assert not (out / "teachers" / name / "eval.json").exists()
    path = ensure_teacher(cfg, out, name, wait=False)  # free now: evaluated here
    assert path is not None and (out / "teachers" / name / "eval.json").is_file()


def test_method_settings_give_a_method_its_own_recipe(tmp_path, given_teacher):
    cfg = raw(given_teacher)
    cfg["method_settings"] = {"rslad": {"swa_start": 0.5, "objective_args": {"adv_weight": 0.5}}}
    parsed = distill.load_distill_config(cfg)
    cells = {c.id: c.cfg for c in distill_cells(parsed, tmp_path)}
    assert cells["given-rslad-s0"].swa_start == 0.5
    assert cells["given-rslad-s0"].objective_args == {"adv_weight": 0.5}
    assert cells["given-ard-s0"].swa_start is None and cells["given-ard-s0"].objective_args == {}
    assert cells["given-rslad-s0"].epochs == cells["given-ard-s0"].epochs  # the rest is base
    for bad, message in (({"saad": {"swa_start": 0.5}}, "not in grid.methods"),
                         ({"rslad": {"seed": 3}}, "set per cell"),
                         ({"rslad": {"swa_start": 2.0}}, "swa_start"),
                         ({"rslad": {"colour": 1}}, "colour"),
                         ({"rslad": {}}, "non-empty"),
                         ([1], "mapping")):
        with pytest.raises(SamplewiseError, match=message):
            distill.load_distill_config({**cfg, "method_settings": bad})


def test_a_worker_runs_the_cells_of_a_free_teacher_while_another_is_busy(tmp_path,
                                                                        given_teacher):
    """Cells run one teacher at a time: with the study's own teacher held by another worker, a
    worker runs the given teacher's cells first, and the busy teacher's cells once it is free."""
    import threading
    import time

    from samplewise.studies.distill.run import run_by_teacher

    cfg = distill.load_distill_config(raw(given_teacher))
    trained = next(t.name for t in cfg.sections["teachers"] if t.train is not None)
    out = tmp_path / "study"
    cells = distill_cells(cfg, out)
    given = [c for c in cells if c.params["teacher"] == "given"]
    ran: dict = {}
    with grid.file_lock(out / "locks" / f"teacher-{trained}.lock", wait=True):
        worker = threading.Thread(target=lambda: ran.update(run_by_teacher(
            cfg, out, cells, {name: None for name in cfg.grid["teacher"]}, whole=True)))
        worker.start()
        deadline = time.monotonic() + 300
        while not all(grid.is_finished(grid.cell_dir(out, c)) for c in given):
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.2)
        assert not (out / "teachers" / trained).exists()   # still not this worker's to train
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert set(ran) == {c.id for c in cells} and set(ran.values()) == {"trained"}
    assert grid.is_finished(out / "teachers" / trained)
