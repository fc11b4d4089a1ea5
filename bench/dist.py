"""The processes of one job and what they do together: torchrun's world (rank, size), a rank's device, barriers,
reductions and broadcasts across ranks, and `claim`, the file lock that makes a job's processes one claimant.

Every helper is a no-op in one process (size 1), so single-process code calls them unconditionally. Used by the
training loop (bench/loop.py, bench/train.py), the encoding of shards (bench/storage.py) and the runner.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from bench.devices import pick_device


def world() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), size) if size > 1 else (0, 1)


def is_main_process() -> bool:
    return world()[0] == 0


def process_device(device: str | None, size: int) -> str | None:
    """Under torchrun on GPUs each process trains and evaluates on its own GPU (LOCAL_RANK)."""
    if size > 1 and pick_device(device).type == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def barrier(size: int) -> None:
    if size > 1:
        torch.distributed.barrier()


def mean_across(value: float, size: int) -> float:
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item()) / size


def any_across(flag: bool, size: int) -> bool:
    if size == 1:
        return flag
    t = torch.tensor([float(flag)])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _collective_device(device: torch.device) -> torch.device:
    """nccl moves GPU tensors only; gloo CPU tensors."""
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def from_rank0(value, size: int, device: torch.device):
    """Rank 0's value on every rank: the ranks decide together, even when they would see a shared folder
    differently (another job writing into it)."""
    if size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0, device=_collective_device(device))
    return box[0]


def sum_across(values: np.ndarray, size: int, device: torch.device) -> np.ndarray:
    if size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(tensor)
    return tensor.cpu().numpy()


@contextlib.contextmanager
def claim(lock_path: Path):
    """Hold an exclusive file lock while the block runs: another process (a second job, a second terminal) that
    claims the same path waits until this one is done, then runs the block itself, where it should find the work
    finished. Under DDP the job's processes are one claimant: rank 0 holds the lock and the others start the block
    once it does, so every rank sees the same state (a second DDP job waiting here longer than the process group's
    timeout fails instead of waiting)."""
    rank, size = world()
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)) if rank == 0 else contextlib.nullcontext():
        barrier(size)
        yield
