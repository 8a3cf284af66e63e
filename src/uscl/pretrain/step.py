"""One optimiser step of pretraining: the function the loop and the benchmarks both time."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from uscl.pretrain.methods import PretrainMethod, StepInputs, StepLosses
from uscl.utils.device import autocast_for


def model_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Views as the model takes them (channels-last memory on CUDA when asked)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_step(model: nn.Module, method: PretrainMethod, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, inputs: StepInputs, *,
               precision: str = "fp32", channels_last: bool = False, distributed: bool = False) -> StepLosses:
    """Forward the views under autocast, the method's loss, backward, step; then the
    method's ``after_step`` (a momentum update). Returns the step's losses (not detached)."""
    inputs = dataclasses.replace(inputs, views=tuple(model_input(v, channels_last) for v in inputs.views))
    with autocast_for(precision, inputs.view1.device):
        losses = method.loss(model, inputs, distributed=distributed)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses.total).backward()
    scaler.step(optimizer)
    scaler.update()
    method.after_step(model)
    return losses
