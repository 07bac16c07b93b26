""":class:`IndexedDataset`: any map-style dataset, yielding ``(x, y, index)``.

samplewise keys every per-sample quantity by dataset index, never by batch position. A plain
``torch.utils.data.DataLoader`` over this wrapper gives each batch its indices, so shuffling,
sampling or a ``Subset`` never mix samples up.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..errors import SamplewiseError


class IndexedDataset(Dataset):
    """Wrap a map-style dataset whose items are ``(x, y)`` so that item ``i`` is ``(x, y, i)``.

    Works with any ``Dataset`` with ``__len__`` and ``__getitem__`` (``TensorDataset``,
    torchvision's datasets with their transforms, your own). The index is the position in the
    wrapped dataset: wrap first, then take a ``torch.utils.data.Subset`` of the wrapper, so the
    indices stay those of the full dataset.

    Example:
        >>> ds = IndexedDataset(TensorDataset(torch.rand(10, 1, 8, 8), torch.zeros(10).long()))
        >>> x, y, idx = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
    """

    def __init__(self, dataset: Any):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise SamplewiseError(f"IndexedDataset needs a map-style dataset (with __getitem__ "
                                  f"and __len__), got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise SamplewiseError(f"IndexedDataset expects items (x, y); item {index} of "
                                  f"{type(self.dataset).__name__} is "
                                  f"{type(item).__name__} of length {len(item) if hasattr(item, '__len__') else '?'}")
        return item[0], item[1], int(index)
