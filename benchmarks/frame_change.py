"""How much do frames of one video differ, against frames of other videos? A data check, not a
speed benchmark: it asks whether a store gives sample pair generation anything to work with.

USCL's positive pairs mix and contrast *different* frames of one video. If a video's frames are
nearly identical (a synthetic clip that barely moves), SPG's pairs are two augmentations of the
same image, i.e. SimCLR, and SPG cannot win. For each store this prints, over all videos:

* ``within_video``: mean Pearson correlation of the pixels of two frames of one video, at the
  nearest gap (1 frame) and at random gaps;
* ``across_videos_same_class`` / ``across_videos``: the same for frames of two different videos
  of one class / of any class;
* ``separation``: within-video (random gap) minus across-videos-same-class: how much more alike
  a video's own frames are than frames of another video showing the same thing.

    python benchmarks/frame_change.py --store synth_store --store pocus112 --out benchmarks/results/frame_change.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 1.0


def frame_change(store_path: str, pairs: int = 400, seed: int = 0) -> dict:
    from uscl.store import FrameStore

    store = FrameStore(store_path)
    rng = np.random.default_rng(seed)
    videos = [i for i in range(len(store)) if store.videos[i].num_frames >= 2]
    labels = [store.videos[i].label for i in videos]
    near, far, same, other = [], [], [], []
    for _ in range(pairs):
        v = videos[rng.integers(len(videos))]
        arr = store.frames(v)
        t = int(rng.integers(len(arr) - 1))
        near.append(_corr(arr[t], arr[t + 1]))
        a, b = rng.choice(len(arr), 2, replace=False)
        far.append(_corr(arr[a], arr[b]))
        w = videos[rng.integers(len(videos))]
        if w != v:
            other.append(_corr(arr[a], store.frames(w)[rng.integers(store.videos[w].num_frames)]))
        mates = [u for u, lab in zip(videos, labels) if lab == store.videos[v].label and u != v]
        if mates and store.videos[v].label:
            u = mates[rng.integers(len(mates))]
            same.append(_corr(arr[a], store.frames(u)[rng.integers(store.videos[u].num_frames)]))
    frames = [store.videos[i].num_frames for i in videos]
    out = {"store": str(store_path), "videos": len(videos), "frames_per_video_median": float(np.median(frames)),
           "within_video_gap1": float(np.mean(near)), "within_video_random_gap": float(np.mean(far)),
           "across_videos_same_class": float(np.mean(same)) if same else None,
           "across_videos": float(np.mean(other))}
    if same:
        out["separation"] = out["within_video_random_gap"] - out["across_videos_same_class"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", action="append", required=True, help="a frame store (repeat to compare)")
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = {"stores": [frame_change(s, args.pairs) for s in args.store]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
