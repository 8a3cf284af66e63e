"""Frozen features of a store's frames: what the linear and kNN probes, the online probe
during pretraining and embedding maps all start from.

A frozen backbone gives the same features however often it is asked, so callers extract
once per (backbone, preprocessing) and reuse the result (:class:`FrameFeatures`) across
folds instead of running the network again for every fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from uscl.augment import eval_transform
from uscl.data import FrameDataset
from uscl.utils.device import autocast_for


@dataclass
class FrameFeatures:
    """One row per frame: its store video index, frame index, label (-1: none) and feature."""

    videos: np.ndarray  # (N,) int64
    frames: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    features: np.ndarray  # (N, D) float32

    def rows_of(self, video_indices: Sequence[int]) -> np.ndarray:
        """Row numbers of the frames of ``video_indices`` (in row order)."""
        return np.flatnonzero(np.isin(self.videos, np.asarray(list(video_indices), dtype=np.int64)))


@torch.no_grad()
def extract_features(backbone: nn.Module, store, video_indices: Sequence[int], *,
                     class_to_index: dict[str, int] | None, image_size: int, mean: float = 0.5, std: float = 0.25,
                     device: torch.device | str = "cpu", batch_size: int = 64,
                     max_frames_per_video: int | None = None, precision: str = "fp32") -> FrameFeatures:
    """Features (fp32, flattened) of the frames of ``video_indices`` under the evaluation
    transform (resize to ``image_size``, normalise), ``max_frames_per_video`` evenly spread
    frames of each (all by default). ``backbone`` is put in eval mode and left there."""
    device = torch.device(device)
    ds = FrameDataset(store, video_indices, class_to_index, max_frames_per_video=max_frames_per_video)
    backbone.eval()
    out_c = 1 if ds.channels == 1 else 3  # grey stays grey: conv1 takes it as RGB-repeated
    parts = []
    for start in range(0, len(ds), batch_size):
        batch = ds.get_batch(list(range(start, min(start + batch_size, len(ds)))))
        x = eval_transform(batch["image"].to(device), image_size, mean, std, out_c)
        with autocast_for(precision, device):
            parts.append(torch.flatten(backbone(x).float(), 1).cpu().numpy())
    items = np.asarray(ds.items, dtype=np.int64).reshape(-1, 2)
    dim = parts[0].shape[1] if parts else 0
    return FrameFeatures(items[:, 0], items[:, 1], np.asarray(ds.labels, dtype=np.int64),
                         np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))


# -- classifiers on frozen features ------------------------------------------------------------
def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def full_probs(partial: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """sklearn gives columns only for classes seen in training; pad to all ``k`` classes."""
    out = np.zeros((len(partial), k))
    out[:, seen] = partial
    return out


def knn_probs(bank: np.ndarray, bank_labels: np.ndarray, feats: np.ndarray, k_neigh: int, k: int) -> np.ndarray:
    """Class votes of the ``k_neigh`` nearest bank rows by cosine similarity (L2-normalised)."""
    knn = KNeighborsClassifier(n_neighbors=min(k_neigh, len(bank)))
    knn.fit(l2_normalise(bank), bank_labels)
    return full_probs(knn.predict_proba(l2_normalise(feats)), knn.classes_, k)


def fit_logistic(train: np.ndarray, train_labels: np.ndarray, *, c: float = 1.0,
                 seed: int = 0) -> tuple[LogisticRegression, StandardScaler]:
    """The linear probe: logistic regression on standardised features (the scaler is returned with it)."""
    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(train), train_labels)
    return clf, scaler


def linear_probs(train: np.ndarray, train_labels: np.ndarray, feats: np.ndarray, k: int, *, c: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """The linear probe's class probabilities of ``feats`` (k columns, absent classes 0)."""
    clf, scaler = fit_logistic(train, train_labels, c=c, seed=seed)
    return full_probs(clf.predict_proba(scaler.transform(feats)), clf.classes_, k)


def video_votes(videos: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(video ids, mean frame probabilities)``: one row per video, ids sorted."""
    ids, inverse = np.unique(videos, return_inverse=True)
    sums = np.zeros((len(ids), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    return ids, sums / np.bincount(inverse)[:, None]
