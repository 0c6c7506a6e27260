"""Data-parallel training under ``torchrun``: who this process is, and the few collectives the trainer needs.

Launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous), a run starts one process
per device: NCCL between GPUs (each process on ``cuda:LOCAL_RANK``), gloo between CPU processes. Without torchrun
it is one process and every function here is the identity, so the single-process path runs no collective at all.

What is split and what is shared (see the trainer):
- each rank takes whole prompt groups, so advantages need no collective except ``scale_rewards: batch``, whose
  std is over the global batch: the rewards are gathered and the advantages computed on the whole batch;
- every loss normaliser that spans the batch (rows, active tokens, micro-batches) is global, so each rank's loss
  is its share of the one-process loss, and gradients are summed across ranks (`sum_gradients`): the update is
  that of one process on the whole batch, to floating-point rounding;
- metrics are combined across ranks (`combine_metrics`), completions gathered to rank 0, which alone writes logs,
  checkpoints and the final weights.

Every collective has the process group's timeout (``train.dist_timeout``), so a rank that died makes the others
fail with an error instead of waiting for ever (torchrun then stops the job and names the failed rank).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rftune.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank r of `size` processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """The world torchrun describes in the environment (one process when it is not set)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(rank=int(os.environ.get("RANK", "0")), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_world(device: torch.device, timeout_s: float) -> World:
    """Join the torchrun job (once per process) with the backend of `device`'s type; returns this process's World."""
    world = launched_world()
    if not world.distributed:
        return world
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    return world


def process_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when a multi-process job trains on CUDA, else `device`."""
    if world.distributed and device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {world.rank} has LOCAL_RANK {world.local_rank} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); start at most that many processes per node")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def sum_(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of `value` over all ranks (a new tensor; the identity in one process)."""
    if not world.distributed:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def max_int(value: int, world: World) -> int:
    """The largest of each rank's `value`."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def gather_rows(values: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's [n, ...] rows, concatenated in rank order (every rank has the same n)."""
    if not world.distributed:
        return values
    parts = [torch.empty_like(values) for _ in range(world.size)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every rank's picklable `value`, in rank order."""
    if not world.distributed:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def sum_gradients(parameters, world: World) -> None:
    """Sum the gradients of `parameters` over all ranks, in place (one flat all-reduce)."""
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def combine_metrics(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's metrics from every rank's: minima and maxima of ``*/min`` and ``*/max``, sums of counters
    (``judge/*``, ``sandbox/*``, ``constraint/*``, ``*/errors``) and of ``loss`` (each rank's is its share of the
    batch loss), the slowest rank's times (``time/*``), and the mean of the rest (every rank holds the same number
    of rows, so the mean of rank means is the batch mean)."""
    if len(per_rank) == 1:
        return per_rank[0]
    combined: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for metrics in per_rank for key in metrics))  # some only on some ranks (errors)
    for key in keys:
        values = [m[key] for m in per_rank if key in m]
        if key == "step":
            combined[key] = values[0]
        elif key.endswith("/min"):
            combined[key] = min(values)
        elif key.endswith("/max") or key.startswith("time/"):
            combined[key] = max(values)
        elif key == "loss" or key.startswith(("judge/", "sandbox/", "constraint/")) or key.endswith("/errors"):
            # counters; a rank's loss is its share of the batch loss
            combined[key] = sum(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            combined[key] = sum(values) / len(values)
        else:
            combined[key] = values[0]
    return combined


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
