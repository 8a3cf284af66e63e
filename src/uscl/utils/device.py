"""One meaning of ``device`` (``--device``) for every command."""

from __future__ import annotations

import contextlib

import torch

from uscl.errors import UsclError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` → a device; asking for CUDA where there is none is an error.

    Under torchrun, ``local_rank`` picks this process's GPU for ``auto`` and ``cuda``.
    """
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise UsclError(f"device must be auto, cpu or cuda[:N], not {name!r}", param="device")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsclError(f"device {name!r} was asked for, but no CUDA device is available on this machine",
                        param="device")
    if name in ("auto", "cuda"):
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
    return torch.device(name)


def autocast_for(precision: str, device: torch.device):
    """Mixed precision on CUDA (``bf16`` or ``fp16``); anything else, or a CPU, runs in fp32."""
    if precision in ("bf16", "fp16") and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run trains in: fp32 on a CPU; on CUDA ``auto`` means bf16."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if precision == "auto" else precision
