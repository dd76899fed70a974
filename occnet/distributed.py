"""torch.distributed helpers: which rank this process is, and a barrier that is a no-op alone.

Processes are started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment,
one or several nodes); `init_from_env` joins the process group (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_to_main(obj) -> list | None:
    """Every other rank's picklable `obj` on rank 0 (a list in rank order, this rank's own left out);
    None on the other ranks; [] in a single process."""
    if not is_distributed():
        return []
    got = [None] * world_size() if is_main() else None
    dist.gather_object(obj, got, dst=0)
    return [o for r, o in enumerate(got) if r != 0] if is_main() else None


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        return torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    return torch.device("cpu")
