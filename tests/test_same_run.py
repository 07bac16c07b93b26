"""'Is this the same run?' — one verdict from the recipe alone (config.check_same_run), used by a
resume (runs.run_training), a study's cached cell (studies.grid) and a score file's reuse
(hardness.scoring); runtime keys may change, recipe keys may not (issue 13)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from samplewise.config import (RUNTIME_KEYS, TrainConfig, build, check_same_run, recipe_of,
                               run_differences, same_run, to_dict)
from samplewise.errors import SamplewiseError
from samplewise.hardness.scoring import score
from samplewise.runs import run_training
from samplewise.studies import grid

#: the keys of TrainConfig in its first release (commit ac94374): a config.yaml of that version
OLD_KEYS = ("dataset model model_args objective objective_args teacher epochs batch_size lr "
            "momentum weight_decay nesterov schedule milestones gamma warmup_epochs eps alpha "
            "attack_steps augment train_size subset budget seed eval_n eval_steps monitor_steps "
            "grad_clip swa_start device threads data_root download progress").split()

#: a different value for every key (each differs from TrainConfig()'s default)
OTHER = {"dataset": "cifar10", "model": "mlp", "model_args": {"hidden": 8}, "objective": "trades",
         "objective_args": {"beta": 3.0}, "teacher": "t.pt", "epochs": 3, "batch_size": 64,
         "lr": 0.05, "momentum": 0.5, "weight_decay": 1e-4, "nesterov": True, "schedule": "cosine",
         "milestones": (0.3,), "gamma": 0.5, "warmup_epochs": 1.0, "eps": 0.1, "alpha": 0.01,
         "attack_steps": 3, "augment": True, "train_size": 100, "subset": "s.npy",
         "budget": "iterations", "seed": 1, "eval_n": 10, "eval_steps": 2, "monitor_steps": 2,
         "grad_clip": 1.0, "swa_start": 0.5, "device": "cuda", "channels_last": True,
         "amp": "bf16", "compile": True, "threads": 2, "data_root": "/elsewhere",
         "download": True, "progress": False, "tensorboard": True}

#: the split as decided (docs/architecture.md, "Recipe and runtime"), written out independently
RUNTIME = {"device", "threads", "channels_last", "compile", "data_root", "download", "progress",
           "tensorboard"}


def test_every_key_has_a_planted_other_value():
    assert set(OTHER) == {f.name for f in dataclasses.fields(TrainConfig)}
    base = TrainConfig(weight_decay=5e-4)
    assert all(getattr(base, k) != v for k, v in OTHER.items())


@pytest.mark.parametrize("key", sorted(OTHER))
def test_verdict_of_each_key(key):
    """A change of one key: the same run exactly when the key is runtime (subset: a path, the
    run compares its indices by checksum instead)."""
    saved = TrainConfig(weight_decay=5e-4)
    wanted = dataclasses.replace(saved, **{key: OTHER[key]})
    same = key in RUNTIME or key == "subset"
    assert same_run(saved, wanted) is same
    assert same_run(to_dict(saved), wanted) is same           # a config.yaml mapping alike
    assert run_differences(saved, wanted) == ([] if same else [key])
    if not same:
        with pytest.raises(SamplewiseError, match=rf"runs/a was run with {key}=.*asks for {key}="):
            check_same_run(saved, wanted, where="runs/a")
    assert RUNTIME_KEYS == RUNTIME


def test_all_differing_keys_are_named_and_defaults_match_resolved_values():
    saved = {**to_dict(TrainConfig(weight_decay=5e-4, eps=0.3, alpha=0.01)), "fingerprint": "ab"}
    with pytest.raises(SamplewiseError, match=r"with lr=0.1, seed=0, but .* lr=0.05, seed=3; fix"):
        check_same_run(saved, TrainConfig(lr=0.05, seed=3), where="d", remedy="fix")
    # eps/alpha/weight_decay unset: the card's and recipe's values the run resolved
    assert same_run(saved, TrainConfig())
    assert run_differences(saved, TrainConfig(eps=0.2)) == ["eps"]
    # recorded content: the data trained on and the subset's indices
    assert run_differences(saved, {**saved, "fingerprint": "cd"}) == ["fingerprint"]
    assert run_differences({**saved, "subset_checksum": "1"},
                           {**saved, "subset_checksum": "2", "subset": "x.npy"}) == ["subset_checksum"]


def test_old_flat_config_yaml_still_loads():
    new = {**to_dict(TrainConfig(epochs=2)), "epochs_run": 2, "n_train": 10, "fingerprint": "f",
           "world_size": 1, "version": "0.1"}
    old = yaml.safe_load(yaml.safe_dump({k: v for k, v in new.items()
                                         if k in OLD_KEYS or k in ("epochs_run", "fingerprint")}))
    assert "amp" not in old and "tensorboard" not in old
    assert set(recipe_of(old)) == set(recipe_of(new)) - {"amp"}
    assert same_run(old, TrainConfig(epochs=2, amp="bf16", threads=3))   # a key it lacks: unknown
    assert not same_run(old, TrainConfig(epochs=3))
    assert build(TrainConfig, {k: old[k] for k in OLD_KEYS}) == TrainConfig(epochs=2)


# ----------------------------------------------------------------------------- real runs
TINY = TrainConfig(dataset="digits", model="mlp", model_args={"hidden": 16, "depth": 1},
                   epochs=2, batch_size=256, train_size=300, attack_steps=1, eval_n=20,
                   eval_steps=1, monitor_steps=0, progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("same-run") / "run"
    run_training(TINY, out)
    return out


def _killed(finished: Path, to: Path) -> Path:
    """The run as killed after its last checkpoint: no model.pt, no result.json."""
    shutil.copytree(finished, to)
    (to / "model.pt").unlink()
    (to / "result.json").unlink()
    return to


def test_resume_accepts_a_runtime_change_and_refuses_a_recipe_change(finished, tmp_path):
    import json
    want = json.loads((finished / "result.json").read_text())
    run = _killed(finished, tmp_path / "killed")
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(SamplewiseError, match=r"was run with lr=0.1, .* asks for lr=0.05"):
        run_training(dataclasses.replace(TINY, lr=0.05), run, resume=True)
    assert (run / "checkpoint.pt").read_bytes() == before and not (run / "model.pt").exists()
    with pytest.raises(SamplewiseError, match="eval_steps=1"):
        run_training(dataclasses.replace(TINY, eval_steps=3), finished, resume=True)  # finished
    got = run_training(dataclasses.replace(TINY, threads=1, progress=True, device="cpu",
                                           channels_last=False), run, resume=True)
    assert (got["clean_acc"], got["robust_acc"]) == (want["clean_acc"], want["robust_acc"])
    assert yaml.safe_load((run / "config.yaml").read_text())["threads"] == 1


def test_old_config_yaml_resumes(finished, tmp_path):
    run = _killed(finished, tmp_path / "old")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    old = {k: v for k, v in saved.items() if k in OLD_KEYS or k in ("epochs_run", "n_train",
                                                                      "fingerprint")}
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(SamplewiseError, match="epochs=2"):
        run_training(dataclasses.replace(TINY, epochs=3), run, resume=True)
    assert run_training(TINY, run, resume=True)["epochs"] == 2


def test_study_cell_reused_across_runtime_changes_and_stale_on_recipe_change(finished, tmp_path):
    path = tmp_path / "cell"
    shutil.copytree(finished, path)
    ev = grid.EvalSpec(n=20, pgd_steps=1)
    for runtime in ({"threads": 1}, {"device": "cpu", "progress": True}, {"tensorboard": True},
                    {"compile": True, "channels_last": True, "data_root": "/nowhere"}):
        cell = grid.Cell("c", {"seed": 0}, dataclasses.replace(TINY, **{"weight_decay": 5e-4, **runtime}))
        assert grid.run_cell(cell, path, ev) == "already finished"
    for recipe in ({"lr": 0.05}, {"amp": "bf16"}, {"eval_n": 30}, {"weight_decay": 0.0}):
        cell = grid.Cell("c", {"seed": 0}, dataclasses.replace(TINY, **{"weight_decay": 5e-4, **recipe}))
        with pytest.raises(SamplewiseError, match=f"{next(iter(recipe))}=.*use another --out"):
            grid.run_cell(cell, path, ev)


def test_score_file_reused_on_runtime_change_refused_on_recipe_change(tmp_path):
    cfg = dataclasses.replace(TINY, epochs=1)
    table = score(cfg, tmp_path / "s")
    again = score(dataclasses.replace(cfg, threads=1, progress=True), tmp_path / "s", resume=True)
    assert again.meta == table.meta
    with pytest.raises(SamplewiseError, match="lr=0.1.*lr=0.05.*score again"):
        score(dataclasses.replace(cfg, lr=0.05), tmp_path / "s", resume=True)
    with pytest.raises(SamplewiseError, match="track_every=1.*track_every=2"):
        score(cfg, tmp_path / "s", resume=True, track_every=2)
