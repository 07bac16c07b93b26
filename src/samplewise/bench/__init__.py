"""Speed figures measured side by side in one process (``samplewise bench``).

Every figure is a ratio of two timings taken in the same process on the same model, data and
batch. The two (or more) sides are interleaved, the order reversed on every other repeat, and the
figure is the MEDIAN of the per-repeat ratios, so that load from other jobs on a shared machine
moves both sides of a pair alike. Only the selection item reports absolute seconds (its target is
"under one second").

Items (each one or more rows of ``name, ours, reference, ratio, target, status, notes``):

1. ``pgd``: PGD-10 throughput against ``torchattacks.PGD`` (same ε, α, steps, random start).
2. ``epoch``: a ``pgd-at`` epoch of :func:`samplewise.train.fit` against the obvious reference:
   ``torch.utils.data.DataLoader`` over per-sample torchvision transforms, a PGD inner loop
   (``torchattacks.PGD``, else a hand-written copy of it) and a plain SGD step.
3. ``efficiency``: ideal epoch time (bare passes, see :data:`IDEAL_PASSES`) / measured epoch.
4. ``aign``: AIGN tracking overhead (online and checkpoint mode) on standard training.
5. ``saad``: SAAD epoch time against the distillation methods it builds on, and every
   distillation method's epoch time relative to ``rslad``.
6. ``selection``: coreset selection on 1.28 million synthetic scores, and the memory of a
   1.28M x 100-epoch score matrix.

:func:`measure_growth` (``samplewise bench --growth --plot FILE.png``) measures how a ``pgd-at``
epoch grows with the dataset size and the number of PGD steps, and :func:`plot_growth` draws it.

Example:
    >>> result = run_bench(quick=True, items=["pgd", "selection"])     # doctest: +SKIP
    >>> print(format_table(result["rows"]))                            # doctest: +SKIP
"""

from __future__ import annotations

from .core import ITEMS, make_plan
from .runner import format_growth, format_table, measure_growth, plot_growth, run_bench

# The item functions, the timing helpers (``interleaved``, ``paired_ratio``) and ``Row`` are
# imported from their modules (``samplewise.bench.core``, ``.epochs``, ``.training``, ...).
__all__ = ["ITEMS", "format_growth", "format_table", "make_plan", "measure_growth", "plot_growth",
           "run_bench"]
