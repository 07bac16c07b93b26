"""Shared test settings: quiet progress bars and a fixed thread count for repeatable speed;
the given teacher of the distillation-study tests."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
# Tiny models run fastest single-threaded, and a noisy two-core machine makes more threads slower.
torch.set_num_threads(int(os.environ.get("SAMPLEWISE_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def given_teacher(tmp_path_factory) -> Path:
    """A 1-epoch PGD-AT mlp on digits saved as a model file: the distillation studies' given
    teacher (the study configs' ``teachers[*].path``)."""
    from samplewise.config import TrainConfig
    from samplewise.runs import run_training

    path = tmp_path_factory.mktemp("teacher") / "run"
    run_training(TrainConfig(dataset="digits", model="mlp", epochs=1, batch_size=64, lr=0.05,
                             schedule="constant", objective="pgd-at", attack_steps=1,
                             eval_n=30, eval_steps=1, monitor_steps=0, progress=False,
                             threads=1), path)
    return path / "model.pt"
