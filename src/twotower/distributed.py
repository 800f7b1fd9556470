"""Data-parallel training across processes (``torchrun``), and what the rest of the code asks of it.

``twotower train`` started by ``torchrun --nproc-per-node N`` runs N processes that each see ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; ``from_env`` joins them into one process group: NCCL when training on
CUDA (each process on GPU ``LOCAL_RANK``), gloo on CPU. ``Distributed`` is that group as the training loop
uses it: its rank, the part of a batch that is this rank's, sums over ranks, rank 0's objects sent to all.
A single process has no ``Distributed`` (``None`` everywhere).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Distributed:
    """This process in a group of ``world_size`` (an initialised ``torch.distributed`` default group)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [start, stop) of n rows (sizes differ by at most one)."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``value`` (a new tensor on this rank's device)."""
        out = value.detach().clone().to(self.device)
        torch_dist.all_reduce(out)
        return out

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank (pickled; for small objects and fitted state)."""
        box = [obj if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        torch_dist.barrier()

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def world_size() -> int:
    """Processes in this job (``WORLD_SIZE`` as torchrun sets it; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def from_env(device: str = "auto", timeout_s: float = 1800) -> Distributed | None:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group and return this process's ``Distributed``;
    otherwise None. ``device``: the training device setting ("auto", "cpu", "cuda"): CUDA gets NCCL and GPU
    ``LOCAL_RANK``, CPU gets gloo."""
    if world_size() <= 1:
        return None
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    where = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=dt.timedelta(seconds=timeout_s),
            device_id=where if use_cuda else None,
        )  # fmt: skip
    return Distributed(torch_dist.get_rank(), torch_dist.get_world_size(), where)


T = TypeVar("T")


def on_main(dist: Distributed | None, fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 while the other ranks wait; its result on rank 0 (None elsewhere). When it fails on
    rank 0 the other ranks fail too, naming rank 0's error, rather than wait for a rank that has stopped."""
    if dist is None:
        return fn()
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except Exception as exc:  # sent to the other ranks, then raised here as it was
            error = exc
    message = dist.share(f"{type(error).__name__}: {error}" if error is not None else None)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


def close(dist: Distributed | None, finished: bool = True) -> None:
    """Leave the process group (at the end of a distributed command).

    ``finished``: every rank got here without an error, so they wait for each other first: a rank that tore
    down its gloo connections while rank 0 was still writing the run's files once aborted (SIGABRT,
    "terminate called without an active exception"). After an error there is no waiting (the other ranks
    may never arrive)."""
    if dist is None or not torch_dist.is_initialized():
        return
    if finished:
        torch_dist.barrier()
    torch_dist.destroy_process_group()
