"""``uscl embed``: what a backbone's frozen features of a store's frames separate.

The frames (``frames_per_video`` evenly spread per video: the cost stays bounded on long videos)
go through the frozen backbone (:func:`uscl.models.features.extract_features`, the extractor of the
online and linear probes) at the size it was trained at. Then (:mod:`uscl.report.embedding`):

* kNN class accuracy across videos (other patients when the store names them) and video purity
  with its chance level: ``embedding.json``, ``embed.md``;
* a 2-D map coloured by class (``map_class.png``) and by video (``map_video.png``), its coordinates
  in ``embedding.csv``;
* ``neighbours.png``: query frames and their nearest frames from other videos.

The map is t-SNE from scikit-learn by default rather than UMAP: umap-learn would be a new dependency
(numba and LLVM, with a JIT warm-up on every first call), while t-SNE with PCA initialisation and a
fixed ``random_state`` is deterministic and quick enough at the few thousand frames a few frames per
video give (13 s of one CPU core at 3,000 frames; Barnes-Hut grows as N log N). ``map="pca"`` is
instant; ``map="umap"`` works when umap-learn is installed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from uscl.errors import UsclError
from uscl.models.features import FrameFeatures, extract_features
from uscl.report.embed_source import Source, resolve_source
from uscl.report.embedding import MAPS, KnnAccuracy, VideoPurity, group_codes, knn_class_accuracy, map_2d, nearest, \
    video_purity
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text, prepare_output_dir
from uscl.utils.device import resolve_device
from uscl.utils.seed import derive_seed

EMBED_FILE = "embedding.json"
FORMAT = "uscl-embedding"
FIGURES = ("map_class.png", "map_video.png", "neighbours.png")


@dataclass
class EmbedSettings:
    frames_per_video: int | None = 8  # evenly spread frames per video (None: all)
    k: int = 8  # neighbours of both numbers
    map: str = "tsne"  # tsne | pca | umap
    seed: int = 0  # t-SNE's random_state, the query frames of the grid
    image_size: int | None = None  # None: the backbone's training size (else the store's)
    queries: int = 6  # rows of neighbours.png
    grid_neighbours: int = 8  # nearest frames per row
    batch_size: int = 64
    device: str = "auto"
    figures: bool = True  # False: numbers only (embedding.json, embedding.csv without a map)

    def validate(self) -> None:
        if self.frames_per_video is not None and self.frames_per_video < 1:
            raise UsclError(f"frames_per_video must be >= 1, got {self.frames_per_video}", param="frames_per_video")
        if self.k < 1:
            raise UsclError(f"k must be >= 1, got {self.k}", param="k")
        if self.map not in MAPS:
            raise UsclError(f"map must be one of {', '.join(MAPS)}, got {self.map!r}", param="map")
        if self.image_size is not None and self.image_size < 16:
            raise UsclError(f"image_size must be at least 16 px, got {self.image_size}", param="image_size")


@dataclass
class Embedding:
    feats: FrameFeatures
    classes: list[str]
    groups: np.ndarray  # the kNN accuracy's groups (patients, else videos), per row
    knn: KnnAccuracy
    purity: VideoPurity
    coords: np.ndarray | None
    summary: dict = field(default_factory=dict)  # what embedding.json holds


@dataclass
class EmbedResult:
    out: Path
    summary: dict
    files: list[Path]


def embed(backbone: str, store: str | Path, out: str | Path, settings: EmbedSettings | None = None, *,
          fold: int = 0, arch: str = "resnet18", init_seed: int = 0, overwrite: bool = False,
          unsafe_pickle: bool = False, log=print) -> EmbedResult:
    """Embed the frames of ``store`` with ``backbone`` (a run folder, ``random``, ``imagenet:PATH``...:
    :func:`uscl.report.embed_source.resolve_source`) and write the numbers, map and grid into ``out``."""
    settings = settings or EmbedSettings()
    settings.validate()
    out = Path(out)
    fs = FrameStore(store)
    source = resolve_source(backbone, fold=fold, arch=arch, seed=init_seed, unsafe_pickle=unsafe_pickle)
    prepare_output_dir(out, overwrite=overwrite, marker=EMBED_FILE)  # refused before any work is done
    emb = compute_embedding(source, fs, settings, log=log)
    files = write_embedding(emb, fs, out, settings)
    k = emb.summary["knn"]
    log(f"embed: kNN class accuracy across {k['neighbours_from']} {_fmt(k['accuracy'])} "
        f"(balanced {_fmt(k['balanced_accuracy'])}), video purity {_fmt(emb.summary['video_purity']['purity'])} "
        f"(chance {_fmt(emb.summary['video_purity']['chance'])}); wrote {out}")
    return EmbedResult(out, emb.summary, files)


def compute_embedding(source: Source, store: FrameStore, settings: EmbedSettings, log=print) -> Embedding:
    """Features of the store's frames under ``source``, both numbers and (``figures``) the 2-D map."""
    classes = store.classes
    size = settings.image_size or source.image_size or int(store.videos[0].height)
    device = resolve_device(settings.device)
    feats = extract_features(source.backbone.to(device), store, list(range(len(store.videos))),
                             class_to_index={c: i for i, c in enumerate(classes)}, image_size=size,
                             mean=source.mean, std=source.std, device=device, batch_size=settings.batch_size,
                             max_frames_per_video=settings.frames_per_video)
    source.backbone.to("cpu")
    if len(feats.videos) < 2:
        raise UsclError(f"{store.root} gives {len(feats.videos)} frame(s); embedding needs at least 2", param="store")
    by_patient = any(v.patient for v in store.videos)
    groups = group_codes([store.videos[v].patient or f"video:{store.videos[v].video_id}" for v in feats.videos])
    knn = knn_class_accuracy(feats.features, feats.labels, groups, settings.k, classes)
    purity = video_purity(feats.features, feats.videos, settings.k)
    coords = None
    if settings.figures:
        log(f"embed: {settings.map} map of {len(feats.videos)} frames")
        coords = map_2d(feats.features, settings.map, settings.seed)
    emb = Embedding(feats, classes, groups, knn, purity, coords)
    emb.summary = _summary(emb, source, store, settings, size, by_patient)
    return emb


def _summary(emb: Embedding, source: Source, store: FrameStore, settings: EmbedSettings, size: int,
             by_patient: bool) -> dict:
    feats, knn = emb.feats, emb.knn
    labelled = feats.labels >= 0
    counts = np.bincount(feats.labels[labelled], minlength=len(emb.classes)) if labelled.any() else np.zeros(0)
    return {
        "format": FORMAT, "version": 1,
        "backbone": source.description,
        "store": str(store.root), "store_id": store.store_id,
        "settings": {**asdict(settings), "image_size": size, "mean": source.mean, "std": source.std},
        "counts": {"frames": int(len(feats.videos)), "videos": int(len(np.unique(feats.videos))),
                   "labelled_frames": int(labelled.sum()), "classes": emb.classes,
                   "frames_per_class": {c: int(n) for c, n in zip(emb.classes, counts)},
                   "groups": int(len(np.unique(emb.groups)))},
        "knn": {"k": settings.k, "neighbours_from": "other patients" if by_patient else "other videos",
                "accuracy": knn.accuracy, "balanced_accuracy": knn.balanced_accuracy, "per_class": knn.per_class,
                "majority_share": float(counts.max() / counts.sum()) if counts.sum() else None,
                "scored_frames": knn.scored, "unscored_frames": knn.unscored},
        "video_purity": {"k": settings.k, "purity": emb.purity.purity, "chance": emb.purity.chance},
        "labelled_overlap": _overlap(source, store),
    }


def _overlap(source: Source, store: FrameStore) -> int:
    """How many of the store's videos had their labels used in training the backbone (as far as it lists them)."""
    hashes = {r.get("content_hash") for r in source.labelled if r.get("content_hash")}
    same_store = source.description.get("store_id") == store.store_id  # video ids alone name videos of one store
    ids = {r.get("video_id") for r in source.labelled if not r.get("content_hash")} if same_store else set()
    return sum(1 for v in store.videos if (v.content_hash and v.content_hash in hashes) or v.video_id in ids)


def write_embedding(emb: Embedding, store: FrameStore, out: Path, settings: EmbedSettings) -> list[Path]:
    """embedding.json, embedding.csv and, with figures, the three PNGs and embed.md (all atomic)."""
    from uscl.report.embed_plots import map_by_class, map_by_video, neighbour_grid
    from uscl.report.embed_report import embed_markdown

    files = [out / "embedding.csv"]
    atomic_write_text(files[0], _csv(emb, store))
    if emb.coords is not None:
        ids = [v.video_id for v in store.videos]
        name = emb.summary["backbone"].get("source", "backbone")
        map_name = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}[settings.map]
        files.append(map_by_class(out / FIGURES[0], emb.coords, emb.feats.labels, emb.classes,
                                  f"{map_name} of {name}: by class"))
        files.append(map_by_video(out / FIGURES[1], emb.coords, emb.feats.videos, ids,
                                  f"{map_name} of {name}: by video"))
        images, captions = _grid(emb, store, settings)
        files.append(neighbour_grid(out / FIGURES[2], images, captions,
                                    f"nearest frames from other videos (cosine, {name})"))
        emb.summary["files"] = [p.name for p in files] + ["embed.md", EMBED_FILE]
        files.append(out / "embed.md")
        atomic_write_text(files[-1], embed_markdown(emb.summary))
    else:
        emb.summary["files"] = [files[0].name, EMBED_FILE]
    atomic_write_json(out / EMBED_FILE, emb.summary)  # written last: a folder with it is complete
    return [*files, out / EMBED_FILE]


def _csv(emb: Embedding, store: FrameStore) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video_id", "frame", "label", "patient", "x", "y", "own_video_share", "knn_prediction"])
    for r in range(len(emb.feats.videos)):
        rec = store.videos[int(emb.feats.videos[r])]
        lab, pred = int(emb.feats.labels[r]), int(emb.knn.predictions[r])
        xy = ["", ""] if emb.coords is None else [f"{emb.coords[r, 0]:.5g}", f"{emb.coords[r, 1]:.5g}"]
        w.writerow([rec.video_id, int(emb.feats.frames[r]), emb.classes[lab] if lab >= 0 else "", rec.patient or "",
                    *xy, f"{emb.purity.per_frame[r]:.4g}", emb.classes[pred] if pred >= 0 else ""])
    return buf.getvalue()


def query_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` query rows, the classes taken in turn (unlabelled frames when nothing is labelled)."""
    rng = np.random.default_rng(derive_seed(seed, "embed-queries") % 2**32)
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels[labels >= 0])]
    if not pools:
        pools = [rng.permutation(len(labels)).tolist()]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return np.asarray(picked, dtype=np.int64)


def _grid(emb: Embedding, store: FrameStore, settings: EmbedSettings):
    f = emb.feats
    q = query_rows(f.labels, settings.queries, settings.seed)
    nb = nearest(f.features, settings.grid_neighbours, queries=q, exclude_group=f.videos)
    images, captions = [], []
    for qi, row in zip(q, nb):
        rows = [int(qi)] + [int(j) for j in row if j >= 0]
        images.append([store.frame(int(f.videos[j]), int(f.frames[j])) for j in rows])
        captions.append([f"{emb.classes[f.labels[j]] if f.labels[j] >= 0 else '-'}\n"
                         f"{store.videos[int(f.videos[j])].video_id}" for j in rows])
    return images, captions


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def read_embedding(out: str | Path) -> dict | None:
    """embedding.json of a finished embedding folder (None when there is none or it is unreadable)."""
    path = Path(out) / EMBED_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("format") == FORMAT else None
