"""A study's ledger carries its finished cells to another machine: a study rerun in an empty
directory with the ledger runs nothing it holds and writes the same tables; a ledger that does
not match the config (recipe, evaluation, subsets, study) or is damaged is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from samplewise.cli import main
from samplewise.errors import SamplewiseError
from samplewise.studies import distill, grid
from samplewise.studies.coreset_study import run_coreset_study
from samplewise.formats.subset import read_subset
from samplewise.studies.ledger import FORMAT, decode_indices, encode_indices, read_ledger

ROOT = Path(__file__).resolve().parents[1]
DISTILL_DIGITS = ROOT / "configs" / "study-distill-digits.yaml"


def coreset_raw(**changes) -> dict:
    raw = {"study": "coreset",
           "base": {"dataset": "digits", "model": "mlp", "epochs": 1, "batch_size": 64,
                    "lr": 0.05, "schedule": "constant", "attack_steps": 1, "monitor_steps": 0,
                    "progress": False, "threads": 1},
           "scoring": {"epochs": 2, "mode": "checkpoint", "p": 2},
           "selection": {"full_data": True},
           "grid": {"selectors": ["easycore", "random"], "fractions": [0.3],
                    "objectives": ["pgd-at"]},
           "seeds": [0, 1], "eval": {"n": 60, "pgd_steps": 2}}
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A coreset study run once with a ledger: ``(study dir, ledger, result)``."""
    root = tmp_path_factory.mktemp("ledger")
    ledger = root / "ledgers" / "ledger.json"       # its folder is made when first written
    res = run_coreset_study(coreset_raw(), root / "a", ledger=ledger)
    return root / "a", ledger, res


def trained_cells(out: Path) -> list[str]:
    return sorted(p.parent.name for p in (out / "cells").glob("*/model.pt"))


def test_ledger_records_every_finished_cell(first):
    out, ledger, res = first
    assert res["cells_finished"] == res["cells_total"] == 6 and not res["failed"]
    raw = json.loads(ledger.read_text())
    assert raw["format"] == FORMAT and raw["study"] == "coreset"
    assert sorted(raw["cells"]) == trained_cells(out)
    saved = json.loads((out / "results.json").read_text())["rows"]
    assert {r["cell"]: r for r in saved} == {k: v["row"] for k, v in raw["cells"].items()}
    entry = raw["cells"]["easycore-f0.3-pgd-at-s1"]["recipe"]
    assert entry["seed"] == 1 and entry["objective"] == "pgd-at" and entry["eps"] > 0
    assert len(entry["subset_checksum"]) == 16 and "subset" not in entry
    assert "device" not in entry and "threads" not in entry   # runtime keys are not the recipe
    assert not list(ledger.parent.glob("*.lock"))             # no lock beside a committed ledger


def test_a_new_machine_runs_only_what_the_ledger_lacks(first, tmp_path):
    out, ledger, _ = first
    moved = tmp_path / "ledger.json"
    raw = json.loads(ledger.read_text())
    dropped = raw["cells"].pop("random-f0.3-pgd-at-s0")
    moved.write_text(json.dumps(raw))
    res = run_coreset_study(coreset_raw(), tmp_path / "b", ledger=moved)
    assert res["ran"]["random-f0.3-pgd-at-s0"] == "trained"
    assert {v for k, v in res["ran"].items() if k != "random-f0.3-pgd-at-s0"} == \
        {grid.LEDGER_STATUS}
    assert trained_cells(tmp_path / "b") == ["random-f0.3-pgd-at-s0"]
    # the subsets came from the ledger: no scoring run on this machine, the same samples
    assert not (tmp_path / "b" / "scoring").exists()
    for npy in sorted((out / "subsets").glob("*.npy")):
        assert read_subset(tmp_path / "b" / "subsets" / npy.name).indices.tolist() == \
            read_subset(npy).indices.tolist()
    # the cell trained again on this "machine" is the one the ledger lost, and it is back
    again = json.loads(moved.read_text())["cells"]["random-f0.3-pgd-at-s0"]
    assert again["recipe"] == dropped["recipe"]
    assert again["row"]["clean_acc"] == pytest.approx(dropped["row"]["clean_acc"], abs=0.05)
    # the tables list the same cells; the imported rows are the ledger's
    rows = {r["cell"]: r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"]}
    assert rows["easycore-f0.3-pgd-at-s1"] == raw["cells"]["easycore-f0.3-pgd-at-s1"]["row"]
    assert "not finished" not in (tmp_path / "b" / "results.md").read_text()


def test_report_only_from_the_ledger_alone(first, tmp_path):
    """``--report`` into a directory that does not exist yet: the tables from the ledger."""
    out, ledger, _ = first
    before = (out / "results.csv").read_text()
    res = run_coreset_study(coreset_raw(), tmp_path / "c", ledger=ledger, report_only=True)
    assert res["cells_finished"] == 6 and (tmp_path / "c" / "results.csv").read_text() == before
    assert trained_cells(tmp_path / "c") == [] and not (tmp_path / "c" / "scoring").exists()
    run_coreset_study(coreset_raw(), tmp_path / "c", ledger=ledger)   # a full run: nothing to do
    assert trained_cells(tmp_path / "c") == []
    assert (tmp_path / "c" / "results.csv").read_text() == before


@pytest.mark.parametrize("changes, message", [
    ({"base": {**coreset_raw()["base"], "epochs": 2}}, "was run with epochs=1, but the study "
                                                         "now asks for epochs=2"),
    ({"base": {**coreset_raw()["base"], "lr": 0.01}},     # the scoring run's lr too
     r"its subsets were made with other scoring or selection settings \(scoring_run\)"),
    ({"selection": {"full_data": True, "class_balanced": True}},
     r"other scoring or selection settings \(selection\)"),
    ({"eval": {"n": 50, "pgd_steps": 2}}, "eval.n=60"),
])
def test_a_ledger_of_another_config_is_refused(first, tmp_path, changes, message):
    _, ledger, _ = first
    with pytest.raises(SamplewiseError, match=message):
        run_coreset_study(coreset_raw(**changes), tmp_path / "d", ledger=ledger)
    assert not (tmp_path / "d" / "cells").exists()


def test_other_subsets_are_refused(first, tmp_path):
    _, ledger, _ = first
    raw = json.loads(ledger.read_text())
    raw["cells"]["easycore-f0.3-pgd-at-s0"]["recipe"]["subset_checksum"] = "0" * 16
    tampered = tmp_path / "ledger.json"
    tampered.write_text(json.dumps(raw))
    with pytest.raises(SamplewiseError, match="did not select the same samples"):
        run_coreset_study(coreset_raw(), tmp_path / "e", ledger=tampered)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is damaged"),
    (json.dumps({"format": "other"}), "is damaged (not a samplewise.ledger/1 file)"),
    (json.dumps({"format": FORMAT, "study": "coreset", "eval": {}, "teachers": {},
                 "cells": {"x": {"row": {}}}}), "must each hold recipe and row"),
    (json.dumps({"format": FORMAT, "study": "distill", "eval": {}, "teachers": {},
                 "cells": {}}), "holds a 'distill' study"),
])
def test_damaged_or_foreign_ledger_is_one_error_line(tmp_path, capsys, monkeypatch, text,
                                                     message):
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(yaml.safe_dump(coreset_raw()))
    Path("ledger.json").write_text(text)
    code = main(["-q", "study", "coreset", "--config", "config.yaml", "--out", "out",
                 "--ledger", "ledger.json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert Path("ledger.json").read_text() == text            # never overwritten


def test_a_damaged_subset_in_the_ledger_is_refused(first, tmp_path):
    _, ledger, _ = first
    raw = json.loads(ledger.read_text())
    name = sorted(raw["subsets"])[0]
    raw["subsets"][name]["indices"] = encode_indices([1, 2, 3])
    bad = tmp_path / "ledger.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(SamplewiseError, match=f"damaged \\(subset {name} does not match its "
                                              "checksum\\)"):
        run_coreset_study(coreset_raw(), tmp_path / "f", ledger=bad)


class Killed(BaseException):
    """Stands for the worker's death (not an error a study catches)."""


def killed_after(monkeypatch, cells: int) -> None:
    """Let ``cells`` cells run, then kill the worker as it starts the next one."""
    real, ran = grid.run_cell, []

    def run_cell(*args, **kwargs):
        if len(ran) == cells:
            raise Killed()
        ran.append(args[0].id)
        return real(*args, **kwargs)
    monkeypatch.setattr(grid, "run_cell", run_cell)


def test_a_killed_worker_leaves_its_finished_cells_in_the_ledger(first, tmp_path, monkeypatch):
    """The ledger is written after every cell, not only when the worker ends: a worker killed
    mid-study (the end of a session, a cluster's time limit) loses none of its finished cells,
    and the next machine runs only the rest."""
    _, full_ledger, _ = first
    ledger = tmp_path / "ledger.json"
    killed_after(monkeypatch, 2)
    with pytest.raises(Killed):
        run_coreset_study(coreset_raw(), tmp_path / "a", ledger=ledger)
    raw = json.loads(ledger.read_text())
    assert sorted(raw["cells"]) == trained_cells(tmp_path / "a") and len(raw["cells"]) == 2
    assert raw["subsets"] == json.loads(full_ledger.read_text())["subsets"]  # with the subsets
    monkeypatch.undo()
    res = run_coreset_study(coreset_raw(), tmp_path / "b", ledger=ledger)
    assert sorted(k for k, v in res["ran"].items() if v != grid.LEDGER_STATUS) == \
        sorted(set(json.loads(full_ledger.read_text())["cells"]) - set(raw["cells"]))


@pytest.mark.parametrize("indices", [[], [0], [7, 3, 59999], list(range(0, 60000, 7))])
def test_subset_indices_round_trip(indices):
    assert decode_indices(encode_indices(indices)).tolist() == sorted(indices)


def test_read_ledger_of_a_missing_file_is_empty(tmp_path):
    led = read_ledger(tmp_path / "none.json", "coreset",
                      grid.EvalSpec(n=10, pgd_steps=1))
    assert led.cells == {} and led.teachers == {} and led.eps() is None


# ----------------------------------------------------------------------------- distillation
def distill_raw(teacher: Path) -> dict:
    cfg = yaml.safe_load(DISTILL_DIGITS.read_text())
    cfg["teachers"][1]["path"] = str(teacher)
    return cfg


def test_distill_study_moves_with_its_ledger(tmp_path, given_teacher):
    ledger = tmp_path / "ledger.json"
    first = distill.run_distill_study(distill_raw(given_teacher), tmp_path / "a", ledger=ledger)
    assert first["cells_finished"] == first["cells_total"] and not first["failed"]
    raw = json.loads(ledger.read_text())
    trained = [t["name"] for t in distill_raw(given_teacher)["teachers"] if "train" in t]
    assert sorted(raw["teachers"]) == sorted(t["name"] for t in distill_raw(given_teacher)
                                            ["teachers"])
    assert all("teacher" not in e["eval"]["settings"] for e in raw["teachers"].values())
    # a new machine: nothing trained, not even the study's own teacher, and the same tables
    again = distill.run_distill_study(distill_raw(given_teacher), tmp_path / "b", ledger=ledger)
    assert set(again["ran"].values()) == {grid.LEDGER_STATUS}
    assert not any((tmp_path / "b" / "teachers" / name / "model.pt").exists() for name in trained)
    assert trained_cells(tmp_path / "b") == []
    assert (tmp_path / "b" / "results.csv").read_text() == \
        (tmp_path / "a" / "results.csv").read_text()
    assert again["teachers"][trained[0]]["pgd_acc"] == first["teachers"][trained[0]]["pgd_acc"]


def test_a_teacher_whose_cells_are_all_in_the_ledger_is_not_trained(tmp_path, given_teacher):
    ledger = tmp_path / "ledger.json"
    distill.run_distill_study(distill_raw(given_teacher), tmp_path / "a", ledger=ledger)
    raw = json.loads(ledger.read_text())
    given_cells = [k for k, v in raw["cells"].items() if v["row"]["teacher"] == "given"]
    assert given_cells
    for k in given_cells:
        del raw["cells"][k]
    ledger.write_text(json.dumps(raw))
    res = distill.run_distill_study(distill_raw(given_teacher), tmp_path / "b", ledger=ledger)
    assert sorted(k for k, v in res["ran"].items() if v == "trained") == sorted(given_cells)
    trained = next(t["name"] for t in distill_raw(given_teacher)["teachers"] if "train" in t)
    assert not (tmp_path / "b" / "teachers" / trained).exists()
    assert res["teachers"][trained] is not None                 # the ledger's evaluation
    assert res["cells_finished"] == res["cells_total"]


def test_a_trained_teacher_is_restored_from_the_ledger(tmp_path, given_teacher, caplog):
    """The ledger carries a trained teacher's run beside it: a new machine whose cells need that
    teacher restores it, byte for byte, instead of training it again."""
    from samplewise.studies.ledger import teacher_files_dir
    ledger = tmp_path / "ledger.json"
    distill.run_distill_study(distill_raw(given_teacher), tmp_path / "a", ledger=ledger)
    raw = json.loads(ledger.read_text())
    name = next(t["name"] for t in distill_raw(given_teacher)["teachers"] if "train" in t)
    carried = teacher_files_dir(ledger, name)
    assert sorted(raw["teachers"][name]["files"]) == ["config.yaml", "model.pt", "result.json"]
    assert (carried / "model.pt").read_bytes() == \
        (tmp_path / "a" / "teachers" / name / "model.pt").read_bytes()
    assert "files" not in raw["teachers"]["given"]            # a given teacher stays where it is
    mine = [k for k, v in raw["cells"].items() if v["row"]["teacher"] == name]
    for k in mine:
        del raw["cells"][k]
    ledger.write_text(json.dumps(raw))
    caplog.set_level("INFO")
    res = distill.run_distill_study(distill_raw(given_teacher), tmp_path / "b", ledger=ledger)
    assert sorted(k for k, v in res["ran"].items() if v == "trained") == sorted(mine)
    teacher = tmp_path / "b" / "teachers" / name
    assert (teacher / "model.pt").read_bytes() == (carried / "model.pt").read_bytes()
    assert (tmp_path / "a" / "teachers" / name / "metrics.jsonl").is_file()
    assert not (teacher / "metrics.jsonl").exists()            # restored, not trained
    assert f"teacher {name}: restored from the ledger" in caplog.text
    assert res["teachers"][name]["pgd_acc"] == raw["teachers"][name]["eval"]["pgd_acc"]
    assert res["cells_finished"] == res["cells_total"]


def test_a_changed_teacher_file_in_the_ledger_is_refused(tmp_path, given_teacher):
    from samplewise.studies.ledger import teacher_files_dir
    ledger = tmp_path / "ledger.json"
    distill.run_distill_study(distill_raw(given_teacher), tmp_path / "a", ledger=ledger)
    raw = json.loads(ledger.read_text())
    name = next(iter(k for k, v in raw["teachers"].items() if "files" in v))
    raw["cells"] = {k: v for k, v in raw["cells"].items() if v["row"]["teacher"] != name}
    ledger.write_text(json.dumps(raw))
    model = teacher_files_dir(ledger, name) / "model.pt"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(SamplewiseError, match="does not match its SHA-256"):
        distill.run_distill_study(distill_raw(given_teacher), tmp_path / "b", ledger=ledger)
    model.unlink()
    with pytest.raises(SamplewiseError, match="is missing; commit the ledger's .teachers folder"):
        distill.run_distill_study(distill_raw(given_teacher), tmp_path / "c", ledger=ledger)


def test_teachers_only_trains_the_teachers_and_no_student(tmp_path, given_teacher, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(distill_raw(given_teacher)))
    ledger = tmp_path / "ledger.json"
    assert main(["-q", "study", "distill", "--config", str(cfg), "--out", str(tmp_path / "a"),
                 "--ledger", str(ledger), "--teachers"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["mlp-trades", "given"]
    assert all("clean" in line and "PGD" in line for line in printed)
    raw = json.loads(ledger.read_text())
    assert sorted(raw["teachers"]) == ["given", "mlp-trades"] and raw["cells"] == {}
    for line in printed:  # each line shows its teacher's recorded accuracies, in % to 0.1
        ev = raw["teachers"][line.split()[0]]["eval"]
        assert line.split()[2] == f"{100 * ev['clean_acc']:.1f}"
        assert line.split()[4] == f"{100 * ev['pgd_acc']:.1f}"
    assert trained_cells(tmp_path / "a") == []
    assert (tmp_path / "a" / "teachers" / "mlp-trades" / "model.pt").is_file()
    assert main(["-q", "study", "distill", "--config", str(cfg), "--out", str(tmp_path / "a"),
                 "--teachers", "--cells", "1/2"]) == 2
    assert "--teachers trains the study's teachers: drop --cells" in capsys.readouterr().err


def test_a_killed_distillation_worker_leaves_its_finished_cells_in_the_ledger(
        tmp_path, given_teacher, monkeypatch):
    """A distilled cell is recorded as soon as it and its held-out TAS are done, with its
    teacher (and the teacher's run) beside it."""
    ledger = tmp_path / "ledger.json"
    killed_after(monkeypatch, 2)
    with pytest.raises(Killed):
        distill.run_distill_study(distill_raw(given_teacher), tmp_path / "a", ledger=ledger)
    raw = json.loads(ledger.read_text())
    assert sorted(raw["cells"]) == trained_cells(tmp_path / "a") and len(raw["cells"]) == 2
    distilled = [v["row"] for v in raw["cells"].values() if v["row"]["teacher"] != "none"]
    assert distilled and all(r["tas_test"] is not None and r["teacher_pgd"] is not None
                             for r in distilled)
    assert set(raw["teachers"]) >= {r["teacher"] for r in distilled}



def test_the_teachers_phase_trains_before_it_evaluates(tmp_path, given_teacher, monkeypatch):
    """``--teachers`` with a ready teacher listed first still trains the other one first: the
    evaluation of a ready teacher must not hold up hours of training."""
    raw = distill_raw(given_teacher)
    raw["grid"]["teachers"] = ["given", "mlp-trades"]
    order = []
    real = distill.run.ensure_teacher

    def ensure(cfg, out, name, **kw):
        order.append(name)
        return real(cfg, out, name, **kw)
    monkeypatch.setattr(distill.run, "ensure_teacher", ensure)
    distill.run_distill_study(raw, tmp_path / "a", teachers_only=True)
    assert order == ["mlp-trades", "given"]
