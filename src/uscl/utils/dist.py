"""Distributed helpers: set up from torchrun's environment, gather with gradients.

Everything degrades to a single process when torch.distributed is not
initialised, so the same training code runs with and without torchrun.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_type: str = "cpu", timeout_s: float = 1800) -> DistInfo:
    """Initialise the process group from torchrun's env vars (gloo on CPU, nccl on CUDA).

    Without torchrun (or with WORLD_SIZE 1) nothing is initialised.
    """
    if is_initialized():
        return info()
    if not launched_by_torchrun():
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    # torchrun's store outlives a restart (--max-restarts): keys of the dead attempt's ranks
    # (their gloo addresses) would still be read by the new ones, which then fail to connect
    # ("connectFullMesh ... connection refused"). Each attempt gets keys of its own.
    store, rank, world = next(td.rendezvous("env://", timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    td.init_process_group(backend=backend, store=td.PrefixStore(f"/uscl/attempt_{attempt}", store), rank=rank,
                          world_size=world, timeout=timeout)
    return info()


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def info() -> DistInfo:
    if not is_initialized():
        return DistInfo()
    return DistInfo(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), td.get_backend())


def get_rank() -> int:
    return td.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def all_gather_with_grad(tensor: torch.Tensor) -> list[torch.Tensor]:
    """All ranks' copies of ``tensor``; gradients flow back to every rank's input."""
    if get_world_size() == 1:
        return [tensor]

    import torch.distributed.nn.functional as dnf

    with warnings.catch_warnings():  # newer torch flags it deprecated; it is the autograd-aware one
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        return list(dnf.all_gather(tensor))


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (no gradient): the
    global batch's rows, the same on every rank."""
    if get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    td.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, 0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (no gradient), in place, returned for convenience."""
    if get_world_size() > 1:
        td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    if get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return float(t.item()) / get_world_size()


def broadcast_object(obj, src: int = 0):
    """Send a small picklable object (a flag, a path) from ``src`` to all ranks."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if get_world_size() > 1:
        td.barrier()


def cleanup() -> None:
    if is_initialized():
        td.destroy_process_group()
