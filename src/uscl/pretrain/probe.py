"""The online probe: how good the backbone's frozen features are for a labelled task, measured
every few epochs during pretraining, so a checkpoint can be chosen by what it is for
(``select: probe``) rather than by a contrastive loss on a few validation videos.

Every ``probe.every`` epochs (and after the last) the backbone's features of ``frames_per_video``
evenly spread frames of each probe video are extracted once at the training size; then, over
``folds`` video-level folds (stratified by class, whole patients together), a kNN (k=20, cosine)
and a logistic-regression probe are fitted on the training folds' frames and scored on the
held-out videos (mean frame probabilities per video). The pooled video accuracies are logged
as ``probe_knn_acc`` and ``probe_linear_acc``, with the seconds the probe took.

When the probe chooses the checkpoint, its labelled videos are listed in the run's
``labelled_videos.json`` like the supervised term's, so a later fine-tuning refuses to test on
them (a checkpoint chosen with their labels would be an optimistic init for them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from uscl.errors import UsclError
from uscl.models.features import extract_features, knn_probs, linear_probs, video_votes
from uscl.store import FrameStore
from uscl.utils.seed import derive_seed


@dataclass
class ProbeFolds:
    videos: list[int]  # labelled probe videos (store indices)
    classes: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train videos, test videos) per fold


def probe_folds(store: FrameStore, n_folds: int, seed: int) -> ProbeFolds:
    """Video-level folds of the store's labelled videos, stratified, patients kept together."""
    videos = [i for i, r in enumerate(store.videos) if r.label is not None]
    classes = sorted({store.videos[i].label for i in videos})
    if len(classes) < 2:
        raise UsclError(f"the probe store {store.root} needs labelled videos of at least 2 classes "
                        f"(it has {len(videos)} labelled, classes {classes})", param="probe.store")
    y = np.array([classes.index(store.videos[i].label) for i in videos])
    groups = np.array([store.videos[i].patient or f"video:{store.videos[i].video_id}" for i in videos])
    k = min(n_folds, int(np.bincount(y).min()))
    if k < 2:
        raise UsclError(f"the probe store {store.root} has a class with a single labelled video; "
                        "the probe needs at least 2 per class", param="probe.store")
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=derive_seed(seed, "probe-folds") % 2**32)
    vids = np.array(videos)
    folds = [(vids[tr], vids[te]) for tr, te in split.split(vids, y, groups)]
    return ProbeFolds(videos, classes, folds)


class OnlineProbe:
    """Calls ``probe(backbone)`` → ``{"probe_knn_acc", "probe_linear_acc", "probe_s"}``."""

    def __init__(self, store: FrameStore, *, folds: int, knn_k: int, frames_per_video: int, image_size: int,
                 mean: float, std: float, device: torch.device, seed: int):
        self.store = store
        self.plan = probe_folds(store, folds, seed)
        self.c2i = {c: i for i, c in enumerate(self.plan.classes)}
        self.knn_k, self.frames_per_video, self.seed = knn_k, frames_per_video, seed
        self.image_size, self.mean, self.std, self.device = image_size, mean, std, device

    def labelled_records(self) -> list[dict]:
        return [{"video_id": self.store.videos[v].video_id, "source": self.store.videos[v].source,
                 "content_hash": self.store.videos[v].content_hash, "used_for": "probe"} for v in self.plan.videos]

    @torch.no_grad()
    def __call__(self, backbone: nn.Module) -> dict:
        t0 = time.perf_counter()
        was_training = backbone.training
        feats = extract_features(backbone, self.store, self.plan.videos, class_to_index=self.c2i,
                                 image_size=self.image_size, mean=self.mean, std=self.std, device=self.device,
                                 max_frames_per_video=self.frames_per_video)
        backbone.train(was_training)
        k = len(self.plan.classes)
        right = {"knn": 0, "linear": 0}
        tested = 0
        for train_videos, test_videos in self.plan.folds:
            tr, te = feats.rows_of(train_videos), feats.rows_of(test_videos)
            for name, probs in (("knn", knn_probs(feats.features[tr], feats.labels[tr], feats.features[te], self.knn_k, k)),
                                ("linear", linear_probs(feats.features[tr], feats.labels[tr], feats.features[te], k,
                                                        seed=self.seed))):
                ids, votes = video_votes(feats.videos[te], probs)
                truth = np.array([self.c2i[self.store.videos[v].label] for v in ids])
                right[name] += int((votes.argmax(1) == truth).sum())
            tested += len(test_videos)
        return {"probe_knn_acc": right["knn"] / tested, "probe_linear_acc": right["linear"] / tested,
                "probe_s": time.perf_counter() - t0}
