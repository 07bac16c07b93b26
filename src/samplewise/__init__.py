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

import importlib

from .version import __version__

#: public name -> the module that defines it; imported on first use (PEP 562), so that
#: ``import samplewise`` (and the command line's ``--help``) does not load torch until a name
#: that needs it is asked for
_EXPORTS = {
    "SamplewiseError": "errors", "TrainConfig": "config", "load_config": "config",
    **dict.fromkeys(("DataBundle", "DatasetCard", "IndexedDataset", "InMemoryLoader", "Split",
                     "list_datasets", "load_dataset"), "data"),
    **dict.fromkeys(("create_model", "load_model", "save_model"), "models"),
    **dict.fromkeys(("autoattack", "cw_inf", "fgsm", "pgd"), "attacks"),
    **dict.fromkeys(("StepContext", "build_objective", "list_objectives"), "objectives"),
    **dict.fromkeys(("FitResult", "fit"), "train"), "Hook": "hooks",
    "evaluate": "evaluate", "run_training": "runs", "ScoreTable": "formats.scores",
    "AIGNMeter": "hardness", "input_grad_norms": "hardness",
    "score": "hardness.scoring", "scores_from_model": "hardness.scoring",
    "select": "coreset", "list_selectors": "coreset",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samplewise' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "__version__", "SamplewiseError", "TrainConfig", "load_config", "DataBundle", "DatasetCard",
    "InMemoryLoader", "Split", "list_datasets", "load_dataset", "create_model", "load_model",
    "save_model", "autoattack", "cw_inf", "fgsm", "pgd", "StepContext", "build_objective",
    "list_objectives", "FitResult", "Hook", "fit", "evaluate", "run_training", "ScoreTable", "score",
    "scores_from_model", "select", "list_selectors", "input_grad_norms", "AIGNMeter",
    "IndexedDataset",
]
