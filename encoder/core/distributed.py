"""The process runtime of the encoder stage: the device, and under `torchrun` (WORLD_SIZE > 1) the
process group (NCCL on CUDA, Gloo on CPU) with the few collectives training and extraction use.
Without torchrun every collective is the identity, so the same code runs in one process."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from encoder.core import util


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | int | torch.device) -> torch.device:
    """The one reading of every `--device` value: 'auto' (CUDA device 0 when CUDA is available, else
    the CPU with a one-line note), 'cpu', 'cuda', a CUDA index (int, digits or 'cuda:N') or a
    torch.device. A CUDA device asked for where CUDA is absent → CPU with a warning; anything else is
    a util.DataError."""
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        print("note: --device auto: CUDA is not available, running on the CPU")
        return torch.device("cpu")
    index = text.removeprefix("cuda").removeprefix(":") or "0"
    if not index.isdigit():
        raise util.DataError(f"device must be 'auto', 'cpu', 'cuda', a CUDA index or 'cuda:N', not {device!r}")
    if not torch.cuda.is_available():
        warnings.warn(f"CUDA device {index} requested but CUDA is not available; running on CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device("cuda", int(index))


def start_runtime(device: str | int | torch.device) -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (one GPU per local rank, else CPU/Gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(resolve_device(device))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(wanted)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
    return Runtime(wanted, dist.get_rank(), dist.get_world_size(), owns)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gather(runtime: Runtime, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (just [value] without a process group)."""
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(values, value)
    return values


def broadcast(runtime: Runtime, value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(runtime: Runtime, module: torch.nn.Module) -> None:
    """Overwrite every rank's buffers of `module` (BatchNorm running statistics) with rank 0's, in place.
    DistributedDataParallel copies them from rank 0 only before each forward, so after the last training
    step every other rank still holds the statistics of its own last half-batch."""
    if runtime.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
