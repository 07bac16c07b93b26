"""Every shipped run config (configs/*.yaml that is not a study) loads and validates, and names
registered components; study configs are checked by their studies' tests."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from samplewise.config import load_config
from samplewise.data import DATASETS
from samplewise.models import MODELS
from samplewise.models.teachers import ROBUSTBENCH_PREFIX, parse_robustbench
from samplewise.objectives import OBJECTIVES, build_objective

CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                 if not p.name.startswith("study-"))


def test_there_are_run_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_run_config_is_valid(path):
    cfg = load_config(path=path)
    assert cfg.dataset in DATASETS and cfg.model in MODELS and cfg.objective in OBJECTIVES
    check_teacher(cfg)
    assert cfg.epochs >= 100, "paper-scale recipes train for 100+ epochs"
    # the objective's options are real options of that objective
    teacher = torch.nn.Linear(2, 2) if getattr(OBJECTIVES.get(cfg.objective), "needs_teacher", False) else None
    build_objective(cfg.objective, eps=8 / 255, alpha=2 / 255, steps=10, teacher=teacher,
                    **cfg.objective_args)


def check_teacher(cfg) -> None:
    """A distillation recipe names its teacher in the ``teacher`` key: a RobustBench model of the
    run's own dataset, or a model file / run directory; any other recipe names none."""
    if not getattr(OBJECTIVES.get(cfg.objective), "needs_teacher", False):
        assert cfg.teacher is None, f"{cfg.objective} takes no teacher, got {cfg.teacher!r}"
        return
    assert isinstance(cfg.teacher, str) and cfg.teacher.strip(), "a distillation recipe names its teacher"
    if cfg.teacher.startswith(ROBUSTBENCH_PREFIX):
        _, dataset, _ = parse_robustbench(cfg.teacher[len(ROBUSTBENCH_PREFIX):],
                                          SimpleNamespace(name=cfg.dataset))
        assert dataset == cfg.dataset, f"teacher {cfg.teacher} is a {dataset} model"
    else:
        assert Path(cfg.teacher).suffix in ("", ".pt"), "a model file (.pt) or a run directory"


@pytest.mark.parametrize("text, problem", [
    ("objective: saad\n# the teacher comes from --teacher\n", "names its teacher"),
    ("objective: saad\nteacher: robustbench:Chen2021LTD_WRN34_10:cifar10\n", "cifar10 model"),
    ("objective: trades\nteacher: runs/t\n", "takes no teacher"),
    ("objective: rslad\nteacher: runs/t/weights.npz\n", "model file"),
])
def test_the_teacher_check_refuses_a_missing_or_wrong_teacher(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: cifar100\n" + text)
    with pytest.raises(AssertionError, match=problem):
        check_teacher(load_config(path=path))
