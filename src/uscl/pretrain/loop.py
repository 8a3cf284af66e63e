"""The pretraining loop's two plain functions: :func:`train_one_epoch` and :func:`validate`.

Everything they need travels in one :class:`Training` (model, method, optimiser...), built
by :mod:`uscl.pretrain.setup`; what a method does happens behind its hooks
(:mod:`uscl.pretrain.methods`), so neither function changes when a method is added.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from uscl.augment import BatchAugment, eval_transform, sample_lambda, views_of
from uscl.checkpoint import unwrap_model
from uscl.pretrain.methods import PretrainMethod, StepInputs
from uscl.pretrain.step import model_input, train_step
from uscl.utils import dist
from uscl.utils.device import autocast_for
from uscl.utils.progress import progress
from uscl.utils.seed import derive_seed, make_generator


@dataclass
class Training:
    """What a pretraining step works with."""

    model: nn.Module  # what the step calls: possibly DDP- and compile-wrapped
    raw_model: nn.Module  # the module whose state is saved
    method: PretrainMethod
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment: BatchAugment
    device: torch.device
    precision: str
    channels_last: bool
    alpha: float  # Beta(alpha, alpha) of the mixing weight
    view_channels: int  # 1: grey views go into conv1 as they are; 3: RGB
    seed: int
    world_size: int = 1
    rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def set_epoch(loader, epoch: int) -> None:
    """Tell a loader, its samplers and its (wrapped) dataset the epoch: draws are seeded per epoch."""
    dataset = getattr(loader, "dataset", None)
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None), dataset,
                getattr(dataset, "dataset", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def train_one_epoch(t: Training, loader, epoch: int, *, lr: float, epochs: int, max_steps: int | None = None,
                    log_every: int = 10) -> dict:
    """One epoch over ``loader``; returns the epoch's row of metrics (means over the global batch)."""
    for g in t.optimizer.param_groups:
        g["lr"] = lr
    set_epoch(loader, epoch)
    # a CPU generator: random parameters are drawn on the host and copied without a sync
    gen = make_generator(derive_seed(t.seed, "augment", epoch, t.rank))
    steps = min(len(loader), max_steps) if max_steps else len(loader)
    t.model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=t.device)
    labelled = torch.zeros((), dtype=torch.int64, device=t.device)
    wait, images, done = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = progress(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="step")
    batches = iter(loader)
    for _ in range(steps):
        tw = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        wait += time.perf_counter() - tw
        inputs = t.method.make_inputs(batch, t.augment, t.alpha, t.device, generator=gen)
        parts = train_step(t.model, t.method, t.optimizer, t.scaler, inputs, precision=t.precision,
                           channels_last=t.channels_last, distributed=t.distributed)
        sums += torch.stack([parts.total.detach(), parts.contrastive.detach(), parts.supervised.detach()]).double()
        labelled += parts.labelled
        images += len(inputs.views) * inputs.view1.shape[0] * t.world_size
        done += 1
        if done % log_every == 0 or done == steps:
            bar.set_postfix(loss=f"{float(sums[0]) / done:.4f}", img_s=f"{images / max(time.perf_counter() - t0, 1e-9):.0f}")
        bar.update(1)
    bar.close()
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    elapsed = time.perf_counter() - t0
    means = [dist.all_reduce_mean(float(v) / max(1, done), t.device) for v in sums.tolist()]
    return {"epoch": epoch + 1, "total_loss": means[0], "contrastive_loss": means[1], "supervised_loss": means[2],
            "lr": lr, "images_per_s": images / max(elapsed, 1e-9),
            "data_wait_share": dist.all_reduce_mean(wait / max(elapsed, 1e-9), t.device),
            "epoch_time_s": elapsed, "labelled_items": int(labelled.item()) if t.method.supervised else 0}


@torch.no_grad()
def validate(t: Training, loader, *, image_size: int, mean: float, std: float) -> float | None:
    """The method's validation loss on unaugmented frames (the same frame draws and mixing
    weights every time), averaged over the views; lower is better. None without a loader."""
    if loader is None:
        return None
    model = unwrap_model(t.raw_model)
    model.eval()
    gen = make_generator(derive_seed(t.seed, "validation-mix"))
    total, rows = 0.0, 0
    for batch in loader:
        frames = batch["frames"].to(t.device)  # (B, 3, C, H, W) uint8
        b = frames.shape[0]
        lam = sample_lambda(b, t.alpha, generator=gen)
        if b < 2:
            continue
        x = eval_transform(frames.flatten(0, 1), image_size, mean, std, t.view_channels).unflatten(0, (b, 3))
        if t.method.views_per_item == 3:
            views = tuple(x[:, j].expand(-1, t.view_channels, -1, -1).contiguous() for j in range(3))
        elif t.method.mixup:
            mixable = batch["mixable"].to(t.device).bool()
            lam = torch.where(mixable, lam.to(t.device), torch.ones_like(lam, device=t.device))
            views = views_of(x, lam, t.view_channels)
        else:
            views = views_of(x[:, 0::2], None, t.view_channels)
        inputs = StepInputs(tuple(model_input(v, t.channels_last) for v in views), batch["label"].to(t.device),
                            t.method.positive_weights(batch))
        with autocast_for(t.precision, t.device):
            loss = t.method.validation_loss(model, inputs)
        total += float(loss.item()) * len(views) * b
        rows += len(views) * b
    return total / rows if rows else None
