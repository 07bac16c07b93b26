"""Every shipped run config (configs/*.yaml that is not a study) loads and validates, and names
registered components; study configs are checked by their studies' tests."""

from pathlib import Path

import pytest
import torch

from samplewise.config import load_config
from samplewise.data import DATASETS
from samplewise.models import MODELS
from samplewise.objectives import OBJECTIVES, build_objective

CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                 if not p.name.startswith("study-"))


def test_there_are_run_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_run_config_is_valid(path):
    cfg = load_config(path=path)
    assert cfg.dataset in DATASETS and cfg.model in MODELS and cfg.objective in OBJECTIVES
    if getattr(OBJECTIVES.get(cfg.objective), "needs_teacher", False):
        assert cfg.teacher or "teacher" in path.read_text(), "a distillation recipe names its teacher"
    assert cfg.epochs >= 100, "paper-scale recipes train for 100+ epochs"
    # the objective's options are real options of that objective
    teacher = torch.nn.Linear(2, 2) if getattr(OBJECTIVES.get(cfg.objective), "needs_teacher", False) else None
    build_objective(cfg.objective, eps=8 / 255, alpha=2 / 255, steps=10, teacher=teacher,
                    **cfg.objective_args)
