"""Where a run's settings come from, for ``train``, ``distill`` and ``score``:
code defaults < the objective's recipe defaults < a command's own defaults < ``--config`` YAML
< ``--set`` < explicit flags. Read back from the ``config.yaml`` of tiny digits runs, and the
Python API resolves the same recipe defaults as the command line."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from samplewise import io
from samplewise.cli import main
from samplewise.config import RECIPE_KEYS, TrainConfig, load_config, with_recipe
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.models import create_model, save_model
from samplewise.objectives import OBJECTIVES, resolve_recipe
from samplewise.runs import run_training

CODE_WD = 5e-4      # TrainConfig's code default (RECIPE_KEYS)
DISTILL_WD = 2e-4   # the distillation recipe's (docs/methods.md)
TINY = ["eval_n=10", "eval_steps=0", "monitor_steps=0", "progress=false"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained mlp model file: enough for a distillation run's plumbing."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_model(path, create_model("mlp", load_dataset("digits").card))
    return str(path)


def _tiny(command: str, teacher: str) -> list[str]:
    args = [command, "--epochs", "1", "--train-size", "60"]
    if command == "distill":
        args += ["--teacher", teacher, "--student", "mlp", "--steps", "1"]
    else:
        args += ["--model", "mlp"]
    return args


def _saved(out) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())


def _run(args, capsys) -> None:
    code = main(["-q", *args])
    assert code == 0, capsys.readouterr().err


# ------------------------------------------------------------------ the command line, end to end
@pytest.mark.parametrize("command, wd", [("train", CODE_WD), ("score", CODE_WD),
                                         ("distill", DISTILL_WD)])
def test_unset_keys_take_the_recipe_default(tmp_path, teacher, capsys, command, wd):
    out = tmp_path / "run"
    _run([*_tiny(command, teacher), "--out", str(out), "--set", *TINY], capsys)
    saved = _saved(out)
    assert saved["weight_decay"] == pytest.approx(wd)
    assert saved["lr"] == TrainConfig().lr and saved["momentum"] == TrainConfig().momentum
    assert saved["objective"] == {"train": "standard", "score": "standard", "distill": "saad"}[command]


@pytest.mark.parametrize("command", ["train", "score", "distill"])
def test_yaml_then_set_then_flags(tmp_path, teacher, capsys, command):
    """Each level beats the one below it, on a different key each: weight_decay (YAML over the
    recipe; the distill bug), lr (YAML over the code default), momentum (--set over YAML) and
    seed (a flag over --set and YAML)."""
    config = tmp_path / "c.yaml"
    config.write_text("weight_decay: 1.0e-3\nlr: 0.07\nmomentum: 0.5\nseed: 3\n")
    out = tmp_path / "run"
    _run([*_tiny(command, teacher), "--config", str(config), "--seed", "5", "--out", str(out),
          "--set", "momentum=0.8", "seed=4", *TINY], capsys)
    saved = _saved(out)
    assert saved["weight_decay"] == pytest.approx(1e-3)
    assert saved["lr"] == pytest.approx(0.07)
    assert saved["momentum"] == pytest.approx(0.8)
    assert saved["seed"] == 5
    if command == "score":  # the score file records the same resolved settings
        meta = io.np_load(out / "scores.npz")["meta"]
        assert '"weight_decay": 0.001' in str(meta) and '"momentum": 0.8' in str(meta)


def test_set_beats_the_yaml_weight_decay_and_a_flag_beats_set(tmp_path, teacher, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("weight_decay: 1.0e-3\nlr: 0.07\n")
    out = tmp_path / "run"
    _run([*_tiny("distill", teacher), "--config", str(config), "--lr", "0.01", "--out", str(out),
          "--set", "weight_decay=3e-3", "lr=0.03", *TINY], capsys)
    saved = _saved(out)
    assert saved["weight_decay"] == pytest.approx(3e-3) and saved["lr"] == pytest.approx(0.01)


def test_distill_default_method_is_below_the_yaml(tmp_path, teacher, capsys):
    """``distill``'s own default (saad) is a default, not a flag: a YAML method wins over it, and
    ``--method`` wins over the YAML."""
    config = tmp_path / "c.yaml"
    config.write_text("objective: rslad\n")
    out = tmp_path / "yaml"
    _run([*_tiny("distill", teacher), "--config", str(config), "--out", str(out), "--set", *TINY],
         capsys)
    assert _saved(out)["objective"] == "rslad"
    assert _saved(out)["weight_decay"] == pytest.approx(DISTILL_WD)  # rslad's recipe too
    out = tmp_path / "flag"
    _run([*_tiny("distill", teacher), "--config", str(config), "--method", "ard", "--out", str(out),
          "--set", *TINY], capsys)
    assert _saved(out)["objective"] == "ard"


def test_cli_and_python_api_resolve_the_same_distill_recipe(tmp_path, teacher, capsys):
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    _run([*_tiny("distill", teacher), "--out", str(cli_out), "--set", *TINY], capsys)
    run_training(TrainConfig(dataset="digits", model="mlp", objective="saad", teacher=teacher,
                             epochs=1, train_size=60, attack_steps=1, eval_n=10, eval_steps=0,
                             monitor_steps=0, progress=False), api_out)
    cli, api = _saved(cli_out), _saved(api_out)
    assert cli["weight_decay"] == api["weight_decay"] == pytest.approx(DISTILL_WD)
    assert cli == api  # the whole resolved recipe, not only the weight decay


def test_the_recipe_follows_the_objective_not_the_command(tmp_path, teacher, capsys):
    """``train --objective ard`` (teacher through --set) trains ard's recipe, as distill does."""
    out = tmp_path / "run"
    _run(["train", "--model", "mlp", "--objective", "ard", "--epochs", "1", "--train-size", "60",
          "--steps", "1", "--out", str(out), "--set", f"teacher={teacher}", *TINY], capsys)
    assert _saved(out)["weight_decay"] == pytest.approx(DISTILL_WD)


# ------------------------------------------------------------------ the resolution functions
def test_every_distillation_objective_has_the_distillation_recipe():
    for name in OBJECTIVES.names():
        cls = OBJECTIVES.get(name)
        want = DISTILL_WD if cls.needs_teacher else CODE_WD
        assert resolve_recipe(TrainConfig(objective=name)).weight_decay == pytest.approx(want), name


def test_a_set_value_always_beats_the_recipe():
    for wd in (0.0, 5e-4, 1e-2):
        assert resolve_recipe(TrainConfig(objective="saad", weight_decay=wd)).weight_decay == wd
    cfg = load_config(overrides=["objective=saad", "weight_decay=5e-4"])
    assert resolve_recipe(cfg).weight_decay == 5e-4
    assert load_config(overrides=["objective=saad"]).weight_decay is None  # left to the recipe


def test_load_config_order(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("objective: rslad\nlr: 0.07\nepochs: 4\n")
    cfg = load_config(path=config, overrides=["lr=0.03"], defaults={"objective": "saad", "seed": 9},
                      epochs=None, batch_size=32)
    assert (cfg.objective, cfg.seed, cfg.lr, cfg.epochs, cfg.batch_size) == ("rslad", 9, 0.03, 4, 32)


def test_with_recipe_refuses_keys_that_are_not_recipe_keys():
    assert set(RECIPE_KEYS) == {"weight_decay"}
    with pytest.raises(SamplewiseError, match="may set only weight_decay"):
        with_recipe(TrainConfig(), {"lr": 0.5})


def test_studies_keep_the_code_defaults_for_every_cell():
    """A study trains every cell under its base recipe: unset recipe keys take the code defaults
    (as before recipe defaults existed), so distillers and the student alone share them."""
    from samplewise.studies.distill.config import load_distill_config, method_base
    raw = yaml.safe_load((Path(__file__).parent.parent / "configs" / "study-distill-digits.yaml").read_text())
    cfg = load_distill_config(raw)
    assert cfg.base.weight_decay == CODE_WD
    assert method_base(cfg, "rslad").weight_decay == CODE_WD
    raw["base"]["weight_decay"] = 1e-3
    raw["method_settings"] = {"ard": {"lr": 0.02}}
    cfg = load_distill_config(raw)
    assert method_base(cfg, "ard").weight_decay == 1e-3 and method_base(cfg, "rslad").lr == 0.05
    assert dataclasses.replace(cfg.base, objective="saad").weight_decay == 1e-3
