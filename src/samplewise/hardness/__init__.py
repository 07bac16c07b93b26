"""Per-sample hardness: score trackers and the AIGN meter.

Every score is indexed by dataset index and oriented so that higher = harder. The scoring run
itself (a pipeline over :func:`samplewise.runs.run_training`) lives in
:mod:`samplewise.hardness.scoring`, imported on its own to keep the layers acyclic. The score
file (:class:`ScoreTable`) lives in :mod:`samplewise.formats.scores` and is re-exported here.
"""

from ..formats.scores import FORMAT, SCORE_NAMES, ScoreTable
from .trackers import (EvalPassTracker, OnlineAIGNTracker, TrainingDynamicsTracker,
                       input_grad_norms, per_sample_pass)
from .meter import AIGNMeter

__all__ = ["FORMAT", "SCORE_NAMES", "ScoreTable", "AIGNMeter", "EvalPassTracker",
           "OnlineAIGNTracker", "TrainingDynamicsTracker", "input_grad_norms", "per_sample_pass"]
