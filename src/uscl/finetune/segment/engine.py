"""Training and evaluating a segmenter over a fold's masked frames: one epoch, prediction, one fold.

:class:`SegmentRunner` holds what training and evaluation share (device,
precision, the joint image/mask augmentation, the evaluation transform);
:func:`train_one_epoch` and :func:`predict_masks` are the two loops, as in the
classification engine; :func:`segment_fold` trains a fold in any mode
(frozen, paper, full) and returns its test predictions.

Predictions are scored at the store's resolution, not the network's: the
logits are resized (bilinear) to the stored frame size before the argmax, so a
run at ``image_size`` 96 on a 128 px store is judged against the stored masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from uscl.augment import BatchAugment, eval_transform, finetune_augment_config
from uscl.augment.masks import MaskedAugment
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.engine import cfg_mean_std, train_mode
from uscl.finetune.modes import summarise_trainable
from uscl.finetune.segment.metrics import image_metrics
from uscl.losses.segmentation import dice_ce_loss
from uscl.models.segmenter import Segmenter, set_segmenter_trainable
from uscl.utils.device import autocast_for
from uscl.utils.progress import progress
from uscl.utils.seed import derive_seed, make_generator


class SegmentRunner:
    """Device placement, precision and the image/mask preprocessing shared by training and evaluation."""

    def __init__(self, cfg: FinetuneConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and cfg.amp
        aug = finetune_augment_config(cfg.image_size)
        aug.mean, aug.std = cfg_mean_std(cfg)
        self.augment = MaskedAugment(BatchAugment(aug))

    def train_batch(self, images: torch.Tensor, masks: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
        return self.augment(x, y, generator, out_channels=1 if x.shape[1] == 1 else 3)

    def eval_images(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = cfg_mean_std(self.cfg)
        x = images.to(self.device, non_blocking=True)
        return eval_transform(x, self.cfg.image_size, mean, std, 1 if x.shape[1] == 1 else 3)

    def autocast(self):
        return autocast_for("bf16" if self.amp else "fp32", self.device)


def train_one_epoch(model: Segmenter, loader, optimizer: torch.optim.Optimizer, runner: SegmentRunner, generator,
                    *, freeze_bn_stats: bool = True, desc: str = "train") -> dict:
    """One pass of Dice + cross-entropy training over ``loader``; returns the epoch's lr and mean loss."""
    train_mode(model, freeze_bn_stats)
    tot, n = 0.0, 0
    lr = optimizer.param_groups[0]["lr"]
    for batch in progress(loader, desc=desc):
        x, y = runner.train_batch(batch["image"], batch["mask"], generator)
        with runner.autocast():
            logits = model(x)
        loss = dice_ce_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tot += float(loss.detach()) * len(y)
        n += len(y)
    return {"lr": lr, "train_loss": tot / max(1, n)}


@torch.no_grad()
def predict_masks(model: Segmenter, loader, runner: SegmentRunner, desc: str = "predict") -> dict[str, np.ndarray]:
    """``videos``, ``frames``, ``pred`` (uint8 (N, H, W) label maps at the stored size) and ``truth`` of a loader."""
    model.eval()
    out: dict[str, list] = {"videos": [], "frames": [], "pred": [], "truth": []}
    for batch in progress(loader, desc=desc):
        with runner.autocast():
            logits = model(runner.eval_images(batch["image"]))
        logits = F.interpolate(logits.float(), size=tuple(batch["mask"].shape[-2:]), mode="bilinear",
                               align_corners=False)
        out["pred"].append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        out["truth"].append(batch["mask"].numpy())
        out["videos"].append(batch["video"].numpy())
        out["frames"].append(batch["frame"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def score_images(pred: dict[str, np.ndarray], num_classes: int, video_ids: list[str]) -> list[dict]:
    """Per image and foreground class: the rows of ``per_image.csv`` (see :mod:`uscl.finetune.segment.metrics`)."""
    rows = []
    for v, t, p, y in zip(pred["videos"], pred["frames"], pred["pred"], pred["truth"]):
        vid = video_ids[int(v)]
        for m in image_metrics(p, y, num_classes):
            rows.append({"image_id": f"{vid}:{int(t)}", "video_id": vid, "frame": int(t), **m})
    return rows


def mean_dice(rows: list[dict]) -> float:
    """Mean Dice over the (image, class) pairs whose truth is not empty: the validation score."""
    vals = [r["dice"] for r in rows if not r["empty_truth"]]
    return float(np.mean(vals)) if vals else 0.0


@dataclass
class DenseFit:
    """What a segmentation or detection fold hands back: the model to save and its test predictions."""

    tensors: dict[str, torch.Tensor]
    meta: dict
    pred: dict[str, np.ndarray]  # the test frames: videos, frames, predicted label maps, truth (predict_masks)
    history: list[dict] = field(default_factory=list)
    selected_epoch: int | None = None
    extra: dict = field(default_factory=dict)  # task-specific fold metrics (detection: COCO mAP)


def param_groups(model: Segmenter, lr: float, encoder_lr: float) -> list[dict]:
    """The decoder and head at ``lr`` (new layers), the trained encoder layers at ``encoder_lr`` times it."""
    new = [p for m in (model.decoder, model.head) for p in m.parameters() if p.requires_grad]
    enc = [p for p in model.backbone.parameters() if p.requires_grad]
    return [g for g in ({"params": new, "lr": lr}, {"params": enc, "lr": lr * encoder_lr}) if g["params"]]


def segment_fold(cfg: FinetuneConfig, device: torch.device, model: Segmenter, loaders: dict, fold_seed: int,
                 video_ids: list[str], class_names: list[str], *, desc: str = "") -> DenseFit:
    """Adam + cosine schedule for ``cfg.epochs`` in ``cfg.mode``, then the selected model on the test fold.

    ``select='val'`` keeps the epoch with the best mean validation Dice; otherwise the last epoch.
    """
    runner = SegmentRunner(cfg, device)
    trainable = set_segmenter_trainable(model, cfg.mode)
    model.to(runner.device)
    opt = torch.optim.Adam(param_groups(model, cfg.learning_rate, cfg.encoder_lr), lr=cfg.learning_rate,
                           weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = make_generator(derive_seed(fold_seed, "augment"), runner.device if runner.cuda else None)
    history, best, best_epoch, best_score = [], None, None, -1.0
    watch = "val" in loaders
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"{desc} epochs", leave=False):
        row = {"epoch": epoch, **train_one_epoch(model, loaders["train"], opt, runner, gen,
                                                 freeze_bn_stats=cfg.freeze_bn_stats, desc=f"epoch {epoch}")}
        sched.step()
        if watch:
            row["val_dice"] = mean_dice(score_images(predict_masks(model, loaders["val"], runner, "val"),
                                                     model.num_classes, video_ids))
            if row["val_dice"] > best_score:
                best_score, best_epoch = row["val_dice"], epoch
                best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        history.append(row)
    if watch:
        model.load_state_dict(best)
    selected = best_epoch if watch else cfg.epochs
    pred = predict_masks(model, loaders["test"], runner, desc=f"{desc} test")
    meta = {"head": "unet", "trainable": summarise_trainable(trainable), "epochs": cfg.epochs,
            "lr": cfg.learning_rate, "encoder_lr": cfg.encoder_lr, "selected_epoch": selected}
    return DenseFit(model.state_dict(), meta, pred, history, selected)
