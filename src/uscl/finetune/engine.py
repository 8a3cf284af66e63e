"""Running a classifier over a fold's frames: preprocessing on the device, one training epoch, evaluation.

:class:`Runner` holds what training and evaluation share (device, precision,
the training augmentation and the evaluation transform);
:func:`train_one_epoch` and :func:`evaluate` are the two loops every
gradient mode is built from (as in torchvision's classification reference).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uscl.augment import BatchAugment, eval_transform, finetune_augment_config
from uscl.finetune.config import FinetuneConfig
from uscl.utils.device import autocast_for
from uscl.utils.progress import progress


def cfg_mean_std(cfg: FinetuneConfig) -> tuple[float, float]:
    return 0.5, 0.25  # the original's normalisation for every init (pretrained and ImageNet alike)


class Runner:
    """Device placement, precision and preprocessing shared by training and evaluation."""

    def __init__(self, cfg: FinetuneConfig, device: torch.device, *, cache_features: bool = True):
        self.cfg = cfg
        # frozen modes: weights digest -> (video, frame) -> feature. A pretrained init's frozen trunk
        # is the same in every fold, so each frame goes through the network once per run, not once
        # per fold; a random init drawn anew per fold has other weights, so nothing is reused for it
        self.cache_features = cache_features
        self.feature_cache: dict[str, dict[tuple[int, int], np.ndarray]] = {}
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and cfg.amp
        aug = finetune_augment_config(cfg.image_size)
        aug.mean, aug.std = cfg_mean_std(cfg)
        self.augment = BatchAugment(aug)

    def prepare(self, images: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        mean, std = cfg_mean_std(self.cfg)
        # grey frames stay 1-channel: the backbone's first convolution takes them as RGB-repeated
        out_c = 1 if x.shape[1] == 1 else 3
        x = self.augment.augment(x, generator, out_channels=out_c) if train else \
            eval_transform(x, self.cfg.image_size, mean, std, out_c)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        return autocast_for("bf16" if self.amp else "fp32", self.device)

    def predict(self, model: nn.Module, loader, desc: str = "eval") -> tuple[np.ndarray, ...]:
        """(videos, frames, labels, probs) over a loader, fp32 softmax."""
        return self._over_frames(model, loader, desc, lambda out: torch.softmax(out.float(), 1))

    def features(self, backbone: nn.Module, loader, desc: str = "features") -> tuple[np.ndarray, ...]:
        """(videos, frames, labels, backbone features) over a loader (its frames in loader order).

        With ``cache_features`` the frozen trunk's features are remembered per (video, frame):
        a loader whose frames are all known is answered without running the network.
        """
        ds = getattr(loader.dataset, "dataset", loader.dataset)  # BatchReader -> FrameDataset
        items = [tuple(it) for it in getattr(ds, "items", [])]
        cache = self.feature_cache.setdefault(weights_digest(backbone), {}) if self.cache_features else {}
        if items and all(it in cache for it in items):
            arr = np.asarray(items, dtype=np.int64)
            return arr[:, 0], arr[:, 1], np.asarray(ds.labels, dtype=np.int64), np.stack([cache[it] for it in items])
        out = self._over_frames(backbone, loader, desc, lambda o: torch.flatten(o.float(), 1))
        cache.update({(int(v), int(f)): x for v, f, x in zip(out[0], out[1], out[3])})
        return out

    @torch.no_grad()
    def _over_frames(self, net: nn.Module, loader, desc: str, head) -> tuple[np.ndarray, ...]:
        net.eval()
        vids, frames, labels, values = [], [], [], []
        for batch in progress(loader, desc=desc):
            with self.autocast():
                out = net(self.prepare(batch["image"], train=False))
            values.append(head(out).cpu().numpy())
            vids.append(batch["video"].numpy())
            frames.append(batch["frame"].numpy())
            labels.append(batch["label"].numpy())
        return np.concatenate(vids), np.concatenate(frames), np.concatenate(labels), np.concatenate(values)


def weights_digest(module: nn.Module) -> str:
    """A hash of every parameter and buffer (about 0.1 s for a ResNet-18): equal weights, equal features."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train_mode(model: nn.Module, freeze_bn_stats: bool) -> None:
    """model.train(), but fully frozen BatchNorm layers keep their statistics when asked."""
    model.train()
    if freeze_bn_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, runner: Runner, generator, *,
                    freeze_bn_stats: bool = False, desc: str = "train") -> dict:
    """One pass of cross-entropy training over ``loader``; returns the epoch's lr, mean loss and accuracy."""
    train_mode(model, freeze_bn_stats)
    tot_loss, tot_correct, tot_n = 0.0, 0, 0
    lr = optimizer.param_groups[0]["lr"]
    for batch in progress(loader, desc=desc):
        x = runner.prepare(batch["image"], train=True, generator=generator)
        y = batch["label"].to(runner.device, non_blocking=True)
        with runner.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(y)
        tot_loss += float(loss.detach()) * n
        tot_correct += int((logits.argmax(1) == y).sum())
        tot_n += n
    return {"lr": lr, "train_loss": tot_loss / max(1, tot_n), "train_acc": tot_correct / max(1, tot_n)}


def evaluate(model: nn.Module, loader, runner: Runner, side: str) -> dict:
    """``{side}_loss`` (mean negative log-likelihood) and ``{side}_acc`` of the model's frame predictions."""
    _, _, labels, probs = runner.predict(model, loader, desc=side)
    nll = F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(labels))
    return {f"{side}_loss": float(nll), f"{side}_acc": float((probs.argmax(1) == labels).mean())}
