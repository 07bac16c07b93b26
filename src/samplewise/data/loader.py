"""A seeded in-memory loader with batched augmentation on the device (airbench-style).

The whole split lives on the device as one uint8 tensor. Each epoch draws its permutation and
all augmentation parameters from a ``torch.Generator`` seeded by a hash of ``(seed, epoch)``, so
resuming at epoch ``e`` reproduces that epoch bit for bit with no saved state, and the batches do
not depend on how many epochs ran before.

Sharding (``world_size > 1``): the epoch's permutation is padded by wrapping around to a multiple
of ``world_size`` (like ``torch.utils.data.DistributedSampler``), so every rank gets
``ceil(N / world_size)`` samples and the same number of batches; up to ``world_size - 1``
samples are therefore seen twice per epoch, and every sample at least once. Rank ``r`` takes
positions ``r::world_size``. Augmentation is drawn per position of the padded sequence, so the
union of the ranks' batches equals a single-process epoch of the same padded sequence.
``drop_last`` drops each rank's final incomplete batch.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import SamplewiseError
from .cards import DatasetCard, Split

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed from ``(seed, epoch)``, stable across processes and platforms.

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    digest = hashlib.sha256(f"samplewise-loader:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_crop_flip(x: torch.Tensor, pad: int, dy: torch.Tensor | None, dx: torch.Tensor | None,
                     flip: torch.Tensor | None) -> torch.Tensor:
    """Batched random crop (zero padding ``pad``) and horizontal flip, no per-image loop.

    Args:
        x: ``B x C x H x W`` images (any dtype).
        pad: padding on each side; ``dy``/``dx`` (int64, ``B``, in ``0..2*pad``) are the crop
            offsets into the padded image, so a pixel moves by ``dy - pad`` rows.
        flip: bool ``B``, which images to mirror left-right.

    Example:
        >>> x = torch.arange(4.).view(1, 1, 2, 2)
        >>> random_crop_flip(x, 0, None, None, torch.tensor([True]))[0, 0].tolist()
        [[1.0, 0.0], [3.0, 2.0]]
    """
    b, _, h, w = x.shape
    if pad > 0 and dy is not None and dx is not None:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        # gather the H x W window of every padded image: first rows, then columns
        x = padded.gather(2, rows.expand(b, x.shape[1], h, w + 2 * pad))
        x = x.gather(3, cols.expand(b, x.shape[1], h, w))
    if flip is not None:
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    return x


class InMemoryLoader:
    """Seeded shuffling, sharding, batching and batched crop/flip over an in-memory split.

    Args:
        split: the samples (uint8 images).
        batch_size: samples per batch (per rank).
        shuffle: draw a new permutation every epoch (else dataset order).
        augment: apply ``card.crop_pad`` random crops and ``card.flip`` flips.
        card: the dataset card (required when ``augment``).
        seed: base seed; each epoch uses ``epoch_seed(seed, epoch)``.
        device: where the data live and batches are produced.
        drop_last: drop the final incomplete batch.
        rank, world_size: this process's shard (see the module docstring for the padding).

    Yields:
        ``(x, y, idx)``: float32 images in [0, 1] on ``device``, int64 labels, int64 dataset
        indices.

    Example:
        >>> loader = InMemoryLoader(bundle.train, batch_size=128, augment=True,
        ...                         card=bundle.card, seed=0)      # doctest: +SKIP
        >>> loader.set_epoch(3)                                    # doctest: +SKIP
        >>> for x, y, idx in loader: ...                           # doctest: +SKIP
    """

    def __init__(self, split: Split, *, batch_size: int, shuffle: bool = True,
                 augment: bool = False, card: DatasetCard | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False, rank: int = 0,
                 world_size: int = 1):
        if int(batch_size) < 1:
            raise SamplewiseError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(world_size):
            raise SamplewiseError(f"need 0 <= rank < world_size, got rank {rank}, "
                                  f"world_size {world_size}")
        if augment and card is None:
            raise SamplewiseError("augment=True needs the dataset card (crop_pad, flip)")
        if len(split) == 0:
            raise SamplewiseError("cannot load an empty split")
        self.split, self.batch_size, self.shuffle = split, int(batch_size), bool(shuffle)
        self.crop_pad = int(card.crop_pad) if augment and card is not None else 0
        self.flip = bool(card.flip) if augment and card is not None else False
        self.seed, self.epoch, self.drop_last = int(seed), 0, bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = torch.device(device)
        # one copy on the device for the whole run; batches are gathered from it
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.index = split.index.to(self.device)

    @property
    def samples_per_rank(self) -> int:
        """Samples this rank sees per epoch (``ceil(N / world_size)``, padded by wrap-around)."""
        return -(-len(self.split) // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; its order and augmentation depend only on ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        m = self.samples_per_rank
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def _epoch_plan(self) -> tuple[torch.Tensor, ...]:
        """Positions and augmentation parameters of this rank's samples, on the CPU."""
        n, w = len(self.split), self.world_size
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        total = self.samples_per_rank * w
        order = order.repeat(-(-total // n))[:total]         # wrap-around padding
        p = self.crop_pad
        # drawn for the whole padded sequence so results do not depend on world_size
        dy = torch.randint(0, 2 * p + 1, (total,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (total,), generator=gen)
        flip = torch.rand(total, generator=gen) < 0.5
        mine = slice(self.rank, None, w)
        return order[mine], dy[mine], dx[mine], flip[mine]

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """This epoch's batches from batch ``start`` on: the same batches as a full iteration
        from that point (the plan is drawn for the whole epoch), for a run resumed mid-epoch."""
        order, dy, dx, flip = (t.to(self.device) for t in self._epoch_plan())
        for b in range(int(start), len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            pos = order[sl]
            x = self.x[pos]
            if self.crop_pad > 0 or self.flip:
                x = random_crop_flip(x, self.crop_pad, dy[sl] if self.crop_pad else None,
                                     dx[sl] if self.crop_pad else None,
                                     flip[sl] if self.flip else None)
            yield x.float().div_(255.0), self.y[pos], self.index[pos]


def iter_batches(split: Split, batch_size: int, device: str | torch.device = "cpu"
                 ) -> Iterator[Batch]:
    """Batches in dataset order, unaugmented, for evaluation and scoring passes.

    Example:
        >>> for x, y, idx in iter_batches(bundle.test, 512): ...   # doctest: +SKIP
    """
    if int(batch_size) < 1:
        raise SamplewiseError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    for start in range(0, len(split), int(batch_size)):
        sl = slice(start, start + int(batch_size))
        yield (split.x[sl].to(device).float().div_(255.0), split.y[sl].to(device),
               split.index[sl].to(device))
