"""Datasets as in-memory uint8 tensors with stable dataset indices, cards and a seeded loader.

Example:
    >>> from samplewise.data import load_dataset, InMemoryLoader
    >>> bundle = load_dataset("digits")
    >>> loader = InMemoryLoader(bundle.train, batch_size=64, seed=0)
    >>> x, y, idx = next(iter(loader))
    >>> x.shape, x.dtype
    (torch.Size([64, 1, 8, 8]), torch.float32)
"""

from .cards import DataBundle, DatasetCard, Split, fingerprint, stratified_choice
from .datasets import DATASETS, data_root, list_datasets, load_dataset
from .indexed import IndexedDataset
from .loader import InMemoryLoader, epoch_seed, iter_batches, random_crop_flip

__all__ = [
    "DATASETS", "DataBundle", "DatasetCard", "InMemoryLoader", "IndexedDataset", "Split", "data_root",
    "epoch_seed", "fingerprint", "iter_batches", "list_datasets", "load_dataset",
    "random_crop_flip", "stratified_choice",
]
