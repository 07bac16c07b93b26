"""Multi-process training through ``torchrun``, in a few calls over ``torch.distributed``.

``torchrun --nproc_per_node N -m samplewise train ...`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`setup` joins the process group (NCCL on CUDA, gloo on the CPU), every
rank trains on its shard of the in-memory loader through DistributedDataParallel, per-sample
scores are gathered by dataset index, and only rank 0 writes files.

Example:
    >>> env = setup("cpu")          # a single process when WORLD_SIZE is unset
    >>> env.world_size
    1
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "cpu") -> DistEnv:
    """Join the process group started by ``torchrun`` (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


def launched_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 for a single process), before :func:`setup`."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def current() -> DistEnv:
    """The environment of an already-joined process group (single process otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return DistEnv()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks (returns ``t`` itself for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_by_index(values: torch.Tensor, index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter per-sample ``values`` (rows) of every rank into a ``size``-row tensor by index.

    Returns ``(table, seen)``: ``table[i]`` is the value of dataset index ``i`` (any rank's, when
    padding let two ranks see it) and ``seen[i]`` tells whether any rank had it.
    """
    table = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
    seen = torch.zeros(size, dtype=torch.bool, device=values.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sizes = [torch.zeros((), dtype=torch.long, device=values.device)
                 for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, torch.tensor(len(index), device=values.device))
        top = int(max(s.item() for s in sizes))
        pad_v = torch.zeros((top, *values.shape[1:]), dtype=values.dtype, device=values.device)
        pad_i = torch.full((top,), -1, dtype=torch.long, device=values.device)
        pad_v[: len(index)], pad_i[: len(index)] = values, index
        all_v = [torch.empty_like(pad_v) for _ in sizes]
        all_i = [torch.empty_like(pad_i) for _ in sizes]
        dist.all_gather(all_v, pad_v)
        dist.all_gather(all_i, pad_i)
        values = torch.cat([v[: int(n)] for v, n in zip(all_v, sizes)])
        index = torch.cat([i[: int(n)] for i, n in zip(all_i, sizes)])
    table[index] = values
    seen[index] = True
    return table, seen


def shard(n: int, env: DistEnv | None = None) -> slice:
    """This rank's contiguous share of ``range(n)`` (for evaluation passes over a fixed set)."""
    env = env or current()
    per = -(-n // env.world_size)
    return slice(env.rank * per, min(n, (env.rank + 1) * per))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
