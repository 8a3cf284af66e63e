"""One detection fold: the masked (or boxed) frames of the fold as torchvision targets, training, test predictions.

With a boxes CSV (``cfg.boxes``, :func:`detect_boxes_fold`) the detector is a Faster R-CNN trained on the
CSV's boxes (:mod:`uscl.finetune.detect.boxes`), scored by box mAP only: no masks, no label maps, no Dice.

Instances come from the stored label masks (one per connected component and
class, :func:`uscl.finetune.detect.targets.targets_from_mask`). Training is
SGD with momentum (torchvision's detection reference), a cosine schedule over
the epochs, gradient clipping at ``MAX_GRAD_NORM`` and a horizontal flip as
the augmentation. The test frames' detections are scored with pycocotools
(box and mask mAP) and turned into label maps (each kept instance's mask,
higher scores drawn last) so that Dice, IoU and HD95 are computed exactly as
for segmentation, and the report can draw the same overlays.

The detector's RoI budget is cut for CPU (:data:`CPU_DETECTOR`): torchvision's
defaults (2000 proposals, 512 sampled RoIs, 100 detections) are sized for
COCO photos; ultrasound frames hold a handful of objects. Measured on this
2-core CPU (resnet18, 128 px, 2 images): 3.2-4.5 s per step with the defaults,
1.0-1.2 s with these.
"""

from __future__ import annotations

import numpy as np
import torch

from uscl.finetune.config import FinetuneConfig
from uscl.finetune.detect.engine import collate, predict, random_hflip, train_one_epoch
from uscl.finetune.detect.evaluate import coco_metrics
from uscl.finetune.detect.targets import targets_from_mask
from uscl.finetune.segment.engine import DenseFit
from uscl.models.detector import build_detector
from uscl.utils.progress import progress
from uscl.utils.seed import derive_seed, make_generator

MAX_GRAD_NORM = 10.0
SCORE_THRESHOLD = 0.5  # detections drawn into the label maps (Dice, overlays); mAP uses all of them
CPU_DETECTOR = dict(rpn_pre_nms_top_n_train=500, rpn_post_nms_top_n_train=200, rpn_pre_nms_top_n_test=300,
                    rpn_post_nms_top_n_test=100, box_batch_size_per_image=64, box_detections_per_img=20)


def make_detector(arch: str, num_classes: int, init_sd, source: str, cfg: FinetuneConfig):
    """Mask R-CNN (Faster R-CNN with ``cfg.boxes``: no masks to learn) on the ``arch`` ResNet-FPN, sized to the
    run's frames, with ``cfg.mode``'s trainable layers."""
    return build_detector(arch, num_classes, init_sd, source, with_masks=not cfg.boxes, trainable_layers=cfg.mode,
                          min_size=cfg.image_size, max_size=cfg.image_size, **CPU_DETECTOR)


def _images(batch) -> list[torch.Tensor]:
    x = batch["image"].float().div_(255.0)
    return list(x.unbind(0))


def _targets(batch, num_classes: int) -> list[dict]:
    return [targets_from_mask(m, num_classes) for m in batch["mask"]]


def label_map(det: dict, shape: tuple[int, int], threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """The detections of one image as a label map: each instance scoring >= ``threshold`` painted with its
    class where its mask is set, in increasing score order (the most confident instance wins overlaps)."""
    out = np.zeros(shape, np.uint8)
    scores = det["scores"].numpy()
    for i in np.argsort(scores, kind="stable"):
        if scores[i] >= threshold:
            out[det["masks"][i].numpy() > 0] = int(det["labels"][i])
    return out


def _train(cfg: FinetuneConfig, device: torch.device, model, train_loader, fold_seed: int, targets_of,
           desc: str) -> list[dict]:
    """SGD with momentum over ``cfg.epochs`` (cosine schedule, clipping, random flips); the history rows."""
    model.to(device)
    trunk = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.body.")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.body.")]
    groups = [g for g in ({"params": rest, "lr": cfg.learning_rate},
                          {"params": trunk, "lr": cfg.learning_rate * cfg.encoder_lr}) if g["params"]]
    opt = torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = make_generator(derive_seed(fold_seed, "augment"))
    history = []
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"{desc} epochs", leave=False):
        def batches():
            for batch in train_loader:
                pairs = [random_hflip(im, t, generator=gen) for im, t in zip(_images(batch), targets_of(batch))]
                yield collate(pairs)

        lr = opt.param_groups[0]["lr"]
        losses = train_one_epoch(model, opt, batches(), device, max_grad_norm=MAX_GRAD_NORM,
                                 freeze_bn_stats=cfg.freeze_bn_stats)
        sched.step()
        history.append({"epoch": epoch, "lr": lr, "train_loss": losses.get("loss", float("nan")),
                        **{k_: v for k_, v in losses.items() if k_.startswith("loss_")}})
    return history


def _meta(cfg: FinetuneConfig, model, head: str) -> dict:
    return {"head": head, "epochs": cfg.epochs, "lr": cfg.learning_rate, "encoder_lr": cfg.encoder_lr,
            "frozen_bn": bool(getattr(model, "uscl_frozen_bn", False)), "detector": dict(CPU_DETECTOR),
            "min_size": cfg.image_size, "max_size": cfg.image_size, "selected_epoch": cfg.epochs,
            "trainable": sorted({n.split(".")[2] if n.startswith("backbone.body.") else n.split(".")[0]
                                 for n, p in model.named_parameters() if p.requires_grad})}


def detect_fold(cfg: FinetuneConfig, device: torch.device, model, loaders: dict, fold_seed: int,
                video_ids: list[str], class_names: list[str], *, desc: str = "") -> DenseFit:
    """Train ``model`` on the fold's training frames for ``cfg.epochs``; detections and scores of the test frames."""
    k = len(class_names)
    history = _train(cfg, device, model, loaders["train"], fold_seed, lambda b: _targets(b, k), desc)
    videos, frames, truth, preds, targets, dets = [], [], [], [], [], []
    for batch in progress(loaders["test"], desc=f"{desc} test"):
        out = predict(model, _images(batch), device, batch_size=cfg.batch_size)
        shape = tuple(batch["mask"].shape[-2:])
        dets += out
        targets += _targets(batch, k)
        preds += [label_map(d, shape) for d in out]
        truth.append(batch["mask"].numpy())
        videos.append(batch["video"].numpy())
        frames.append(batch["frame"].numpy())
    pred = {"videos": np.concatenate(videos), "frames": np.concatenate(frames), "pred": np.stack(preds),
            "truth": np.concatenate(truth)}
    coco = coco_metrics(targets, dets, class_names)
    return DenseFit(model.state_dict(), _meta(cfg, model, "mask-rcnn"), pred, history, cfg.epochs, {"coco": coco})


def detect_boxes_fold(cfg: FinetuneConfig, device: torch.device, model, loaders: dict, fold_seed: int,
                      video_ids: list[str], class_names: list[str], *, desc: str = "") -> DenseFit:
    """:func:`detect_fold` for a Faster R-CNN on the boxes of a CSV (batches of
    :class:`uscl.data.box_frames.BoxFrameDataset`): box mAP only; ``pred`` holds the test frames'
    ``videos``, ``frames``, ``targets`` and ``detections`` (no label maps: there are no masks)."""
    history = _train(cfg, device, model, loaders["train"], fold_seed, lambda b: b["targets"], desc)
    videos, frames, targets, dets = [], [], [], []
    for batch in progress(loaders["test"], desc=f"{desc} test"):
        dets += predict(model, _images(batch), device, batch_size=cfg.batch_size)
        targets += batch["targets"]
        videos.append(batch["video"].numpy())
        frames.append(batch["frame"].numpy())
    pred = {"videos": np.concatenate(videos), "frames": np.concatenate(frames), "targets": targets,
            "detections": dets}
    coco = coco_metrics(targets, dets, class_names)
    return DenseFit(model.state_dict(), _meta(cfg, model, "faster-rcnn"), pred, history, cfg.epochs, {"coco": coco})
