"""What a backbone's frozen frame features separate: the classes across videos, or the videos themselves.

Two numbers, both on L2-normalised features with cosine similarity (a dot product):

* **kNN class accuracy across videos** (:func:`knn_class_accuracy`): every labelled frame is
  classified by the majority class of its ``k`` most similar labelled frames of *other* groups
  (other videos; other patients when the store has patient ids), ties going to the lower class
  index. A backbone that only recognises its own video scores chance here.
* **Video purity** (:func:`video_purity`): the mean fraction of a frame's ``k`` most similar
  frames (among all other frames, labelled or not) that come from its own video, with the level
  neighbours drawn at random would reach, ``(frames in own video - 1) / (N - 1)`` averaged over
  the frames. High purity with low class accuracy is the memorisation USCL's pair generation
  exists to prevent: features that tell videos apart rather than what the videos show.

:func:`map_2d` puts the features on a plane for looking at (t-SNE, PCA, or UMAP when installed).
Pure numpy/scikit-learn; nothing here reads a store or runs a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uscl.errors import UsclError

MAPS = ("tsne", "pca", "umap")


def l2_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def group_codes(values) -> np.ndarray:
    """Integer codes of any hashable per-row values (video ids, patient ids)."""
    return np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)


def nearest(features: np.ndarray, k: int, *, queries: np.ndarray | None = None, allowed: np.ndarray | None = None,
            exclude_group: np.ndarray | None = None, chunk: int = 512) -> np.ndarray:
    """Row numbers of the ``k`` most cosine-similar rows of each query row, most similar first.

    A row is never its own neighbour; only ``allowed`` rows are candidates, and none of the
    query's own ``exclude_group`` (e.g. its video). Missing neighbours (too few candidates) are -1.
    Computed a chunk of queries at a time: memory ``chunk x N``, never ``N x N``.
    """
    x = l2_rows(features)
    n = len(x)
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    kk = min(k, n)
    if kk == 0 or len(queries) == 0:
        return out
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        sims = x[q] @ x.T
        if allowed is not None:
            sims[:, ~np.asarray(allowed, bool)] = -np.inf
        if exclude_group is not None:
            sims[exclude_group[q][:, None] == exclude_group[None, :]] = -np.inf
        sims[np.arange(len(q)), q] = -np.inf
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, 1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, 1), np.take_along_axis(top_sims, order, 1)
        out[start:start + len(q), :kk] = np.where(np.isfinite(top_sims), top, -1)
    return out


@dataclass
class KnnAccuracy:
    accuracy: float | None  # frame-level, over the scored frames (None: no frame could be scored)
    balanced_accuracy: float | None  # mean per-class recall over the classes among the scored frames
    per_class: dict[str, float | None]  # recall per class (None: no scored frame of it)
    scored: int  # labelled frames with at least one neighbour in another group
    unscored: int  # labelled frames whose every labelled candidate was in their own group
    predictions: np.ndarray = field(repr=False)  # (N,) predicted class index, -1 where not scored


def knn_class_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int,
                       classes: list[str]) -> KnnAccuracy:
    """Each labelled frame (label >= 0) classified by a majority vote of its ``k`` nearest labelled
    frames from other ``groups``; unlabelled frames (-1) are neither scored nor neighbours."""
    labels = np.asarray(labels, dtype=np.int64)
    labelled = labels >= 0
    q = np.flatnonzero(labelled)
    if len(q) == 0:  # nothing labelled: nothing to score
        return KnnAccuracy(None, None, {c: None for c in classes}, 0, 0, np.full(len(labels), -1, dtype=np.int64))
    nb = nearest(features, k, queries=q, allowed=labelled, exclude_group=np.asarray(groups))
    valid = nb >= 0
    counts = np.zeros((len(q), len(classes)))
    rows = np.broadcast_to(np.arange(len(q))[:, None], nb.shape)
    np.add.at(counts, (rows[valid], labels[nb[valid]]), 1)
    has = valid.any(1)
    pred = np.full(len(labels), -1, dtype=np.int64)
    pred[q[has]] = counts[has].argmax(1)
    truth, guess = labels[q[has]], pred[q[has]]
    per_class = {c: (float((guess[truth == i] == i).mean()) if (truth == i).any() else None)
                 for i, c in enumerate(classes)}
    recalls = [r for r in per_class.values() if r is not None]
    return KnnAccuracy(float((guess == truth).mean()) if len(truth) else None,
                       float(np.mean(recalls)) if recalls else None, per_class,
                       int(has.sum()), int((~has).sum()), pred)


@dataclass
class VideoPurity:
    purity: float | None  # mean fraction of a frame's k nearest frames from its own video
    chance: float | None  # the same for neighbours drawn at random: mean (n_video - 1) / (N - 1)
    per_frame: np.ndarray = field(repr=False)  # (N,) each frame's fraction (nan: no neighbour)


def video_purity(features: np.ndarray, videos: np.ndarray, k: int) -> VideoPurity:
    """Mean fraction of each frame's ``k`` nearest other frames that share its video."""
    videos = np.asarray(videos)
    n = len(videos)
    if n < 2:
        return VideoPurity(None, None, np.full(n, np.nan))
    nb = nearest(features, k)
    valid = nb >= 0
    same = (videos[np.where(valid, nb, 0)] == videos[:, None]) & valid
    frac = same.sum(1) / np.maximum(valid.sum(1), 1)
    _, inverse, sizes = np.unique(videos, return_inverse=True, return_counts=True)
    chance = (sizes[inverse] - 1) / (n - 1)
    return VideoPurity(float(frac.mean()), float(chance.mean()), frac.astype(float))


def map_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of the L2-normalised features: t-SNE (PCA to 50 dimensions first, PCA
    init, fixed ``seed``: deterministic), PCA, or UMAP (needs umap-learn, not a dependency)."""
    if method not in MAPS:
        raise UsclError(f"map must be one of {', '.join(MAPS)}, got {method!r}", param="map")
    x = l2_rows(features)
    n = len(x)
    if n < 3:
        raise UsclError(f"a 2-D map needs at least 3 frames, got {n}", param="frames_per_video")
    if method == "umap":
        try:
            import umap  # noqa: PLC0415 - optional
        except ImportError:
            raise UsclError("map umap needs umap-learn (pip install umap-learn); or use tsne (the default) or pca",
                            param="map") from None
        return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(x), dtype=np.float64)
    if method == "pca":
        return _pca(x, 2, seed)
    from sklearn.manifold import TSNE

    reduced = _pca(x, min(50, x.shape[1], n), seed)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(1.0, (n - 1) / 3)))
    return np.asarray(tsne.fit_transform(reduced), dtype=np.float64)


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    out = PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(x.astype(np.float64))
    if out.shape[1] < dims:  # fewer samples than dimensions: pad
        out = np.pad(out, ((0, 0), (0, dims - out.shape[1])))
    return out
