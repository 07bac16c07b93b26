"""samplewise: data-centric adversarial robustness of image classifiers.

Two methods share one idea: robustness depends on *which samples* a model learns from.

* **EasyCore** scores every training sample by its average input-gradient norm (AIGN) over a
  standard training run and keeps the easiest fraction as a coreset.
* **SAAD** distils robustness from a robust teacher, weighting each sample by whether the
  student's adversarial example transfers to the teacher.

Example:
    >>> import samplewise as sw
    >>> bundle = sw.load_dataset("digits")
    >>> model = sw.create_model("cnn-small", bundle.card)
    >>> cfg = sw.TrainConfig(dataset="digits", objective="pgd-at", epochs=5)
    >>> result = sw.run_training(cfg, "runs/digits-pgd")
"""

from .runinfo import __version__
from .errors import SamplewiseError
from .config import TrainConfig, load_config
from .data import (DataBundle, DatasetCard, IndexedDataset, InMemoryLoader, Split, list_datasets,
                   load_dataset)
from .models import create_model, load_model, save_model
from .attacks import autoattack, cw_inf, fgsm, pgd
from .objectives import StepContext, build_objective, list_objectives
from .train import FitResult, Hook, fit
from .evaluate import evaluate
from .runs import run_training
from .formats.scores import ScoreTable
from .hardness import AIGNMeter, input_grad_norms
from .hardness.scoring import score, scores_from_model
from .coreset import select, list_selectors

__all__ = [
    "__version__", "SamplewiseError", "TrainConfig", "load_config", "DataBundle", "DatasetCard",
    "InMemoryLoader", "Split", "list_datasets", "load_dataset", "create_model", "load_model",
    "save_model", "autoattack", "cw_inf", "fgsm", "pgd", "StepContext", "build_objective",
    "list_objectives", "FitResult", "Hook", "fit", "evaluate", "run_training", "ScoreTable", "score",
    "scores_from_model", "select", "list_selectors", "input_grad_norms", "AIGNMeter",
    "IndexedDataset",
]
