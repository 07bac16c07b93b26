"""Per-sample hardness trackers: training hooks indexed by dataset index (methods.md §3).

Three hooks (:class:`samplewise.hooks.Hook`) record what the scores need while a standard
training run goes on; each keeps its state in ``state_dict()`` so a killed run resumes exactly:

- :class:`EvalPassTracker` (AIGN mode ``"checkpoint"``, the default): at the end of every
  tracked epoch, ONE pass over the clean, unaugmented training inputs with the model in eval
  mode gives, per sample, the input-gradient norm ``‖∇ₓ CE(f(xᵢ), yᵢ)‖_p`` (the AIGN column),
  the softmax error ``‖softmax(z) − onehot(y)‖₂`` (EL2N) and the closed-form last-layer
  gradient norm (GraNd).
- :class:`OnlineAIGNTracker` (mode ``"online"``): reads the input gradients of the training
  step's own backward (the inputs require grad, which adds the stem's input gradient: about 5%
  of a small CNN's epoch, docs/performance.md), i.e. on augmented inputs in train mode.
- :class:`TrainingDynamicsTracker`: forgetting events, area under the margin and cumulative
  loss, from the training minibatches' logits and per-sample losses.

Every final score is oriented **higher = harder**. Epoch labels are 0-based epoch indices: the
column taken at the end of epoch ``e`` is labelled ``e`` (``metrics.jsonl`` counts from 1).

Example:
    >>> trackers = [EvalPassTracker(p=2), TrainingDynamicsTracker()]
    >>> fit(model, bundle, build_objective("standard", eps=0.1, alpha=0.025, steps=0), cfg,
    ...     hooks=trackers)                                            # doctest: +SKIP
    >>> trackers[0].scores()["aign"][:3]                               # doctest: +SKIP

The package's modules: :mod:`~samplewise.hardness.trackers.sample_pass` (norms and
:func:`per_sample_pass`), :mod:`~samplewise.hardness.trackers.base` (the shared tracker
plumbing), :mod:`~samplewise.hardness.trackers.aign` (the two AIGN trackers) and
:mod:`~samplewise.hardness.trackers.dynamics` (:class:`TrainingDynamicsTracker`).
"""

from .aign import EvalPassTracker, OnlineAIGNTracker
from .dynamics import TrainingDynamicsTracker
from .sample_pass import PNorm, grad_norm, input_grad_norms, norm_kind, per_sample_pass

__all__ = ["EvalPassTracker", "OnlineAIGNTracker", "PNorm", "TrainingDynamicsTracker", "grad_norm",
           "input_grad_norms", "norm_kind", "per_sample_pass"]
