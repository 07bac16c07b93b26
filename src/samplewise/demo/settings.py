"""The demo's settings: file names and constants, :class:`DemoSettings`, the per-dataset presets
and the ``quick`` variant (:func:`demo_settings`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

from ..config import TrainConfig
from ..errors import SamplewiseError

FORMAT = "samplewise.demo/1"
DEMO_DATASETS = ("digits", "fashion-mnist")
SETTINGS_FILE = "demo.json"
STAGE_FILE = "demo_stage.json"
RESULTS_FILE = "results.json"
#: a coreset stage's robust accuracy at the ladder's radii (``OUT/<stage>/ladder.json``)
LADDER_FILE = "ladder.json"
REPORT_FILE = "report.md"
#: the hardness atlas of the scoring run (``samplewise analyze atlas``)
ATLAS_DIR = "atlas"
PLOTS = {"aign": "aign_hist.png", "coreset": "coreset_acc.png", "distill": "distill_acc_tas.png"}
#: the coreset selectors the demo compares (EasyCore keeps the easiest, EL2N the hardest)
DEMO_SELECTORS = ("easycore", "random", "el2n")
#: the distillation methods the demo compares
DEMO_METHODS = ("ard", "rslad", "saad")


@dataclass(frozen=True)
class DemoSettings:
    """Everything a demo run depends on; stored in ``OUT/demo.json`` and checked on resume."""

    dataset: str = "digits"
    train_size: Optional[int] = None      # stratified sample of the training set (None: all)
    # the scoring run (standard training)
    scoring_model: str = "mlp"
    scoring_model_args: dict = field(default_factory=dict)
    scoring_epochs: int = 15
    # the coreset comparison: the regime where the studies saw EasyCore's advantage
    # (docs/results.md §5: standard training, 30%, PGD-20 at radii below the card's ε)
    fraction: float = 0.3
    coreset_model: str = "mlp"
    coreset_model_args: dict = field(default_factory=dict)
    coreset_objective: str = "standard"
    coreset_epochs: int = 40
    #: radii below the card's ε (card ε/4 and ε/2) where every coreset model is also read with
    #: PGD-``eval_steps`` (step ε/4) on the test slice; the card's ε comes from ``result.json``
    eps_ladder: tuple = (0.05, 0.1)
    # the distillation comparison
    teacher_model: str = "mlp"
    teacher_model_args: dict = field(default_factory=lambda: {"hidden": 512})
    teacher_objective: str = "trades"
    teacher_epochs: int = 40
    student_model: str = "mlp"
    student_model_args: dict = field(default_factory=lambda: {"hidden": 64})
    student_epochs: int = 60
    student_weight_decay: float = 2e-4    # the distillation recipe's (methods.md §4)
    student_lr: float = 0.05              # SAAD's up-to-5x sample weights diverge at 0.1 on MLPs
    # shared training and evaluation settings
    lr: float = 0.1
    batch_size: int = 128
    attack_steps: int = 10                # PGD steps of the inner maximisation
    eval_n: int = 450                     # fixed test slice of the final evaluation
    eval_steps: int = 20                  # PGD-20 for the final robust accuracy
    monitor_steps: int = 5                # per-epoch monitor (metrics.jsonl)
    seed: int = 0
    threads: Optional[int] = 1            # tiny models run fastest single-threaded
    quick: bool = False

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: the default demo of each dataset (tuned to about five minutes on two CPU cores)
PRESETS: dict[str, DemoSettings] = {
    "digits": DemoSettings(),
    "fashion-mnist": DemoSettings(
        dataset="fashion-mnist", train_size=5000, scoring_epochs=10, coreset_epochs=20,
        eps_ladder=(0.025, 0.05), teacher_epochs=20, student_epochs=20,
        attack_steps=5, eval_n=500),
}

#: what ``quick`` changes: seconds instead of minutes (checks the machinery, not the science)
QUICK = dict(scoring_epochs=2, coreset_epochs=2, teacher_epochs=2, student_epochs=2,
             attack_steps=2, eval_n=50, eval_steps=2, monitor_steps=0,
             teacher_model_args={"hidden": 128}, student_model_args={"hidden": 32}, quick=True)


def model_label(r) -> str:
    """``mlp(hidden=64)``: the ``model`` and ``model_args`` of a mapping (a stage record, or
    ``vars()`` of a TrainConfig) as the demo's logs, tables and plots name the model."""
    args = ",".join(f"{k}={v}" for k, v in (r.get("model_args") or {}).items())
    return f"{r['model']}({args})" if args else r["model"]


def demo_settings(dataset: str = "digits", quick: bool = False, **overrides) -> DemoSettings:
    """The preset of ``dataset`` (made tiny by ``quick``), with ``overrides`` applied."""
    if dataset not in PRESETS:
        raise SamplewiseError(f"the demo runs on {' or '.join(DEMO_DATASETS)}, not '{dataset}'")
    s = PRESETS[dataset]
    if quick:
        s = dataclasses.replace(s, **QUICK, **({"train_size": 600} if s.train_size else {}))
    try:
        s = dataclasses.replace(s, **overrides)
    except TypeError as exc:
        raise SamplewiseError(f"unknown demo setting: {exc}") from None
    if not 0 < s.fraction < 1:
        raise SamplewiseError(f"the demo's coreset fraction must be in (0, 1), got {s.fraction}")
    radii = s.eps_ladder
    if not (isinstance(radii, (list, tuple)) and radii
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                    for r in radii)
            and all(a < b for a, b in zip(radii, radii[1:]))):
        raise SamplewiseError("the demo's eps_ladder must be a non-empty list of increasing "
                              f"positive radii, got {radii!r}")
    return dataclasses.replace(s, eps_ladder=tuple(float(r) for r in radii))


@dataclass
class Stage:
    """One run of the demo: its directory name, its training config and what it is."""

    name: str
    kind: str                 # scoring | coreset | teacher | student
    cfg: TrainConfig
    label: str                # the row label in the tables
    selector: Optional[str] = None
    method: Optional[str] = None
