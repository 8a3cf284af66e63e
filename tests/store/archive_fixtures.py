"""A small mixed archive for the worker and shard tests, and the store's bytes to compare runs by."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from uscl.store.prepare import PrepareOptions
from uscl.video.samples import moving_frames, write_dicom, write_video

SMALL = PrepareOptions(size=32)


def make_archive(root: Path, clips: int = 4) -> Path:
    """Videos (mp4, avi, gif), a DICOM cine, a still with a mask, a frame folder, a garbage .mp4 and a cut
    one, a labels CSV."""
    (root / "convex").mkdir(parents=True)
    (root / "linear").mkdir()
    (root / "bad").mkdir()
    for i in range(clips):
        write_video(root / "convex" / f"Cov_{i}.mp4", moving_frames(6, 48, 48, seed=i), fps=10)
    write_video(root / "convex" / "Reg-b.avi", moving_frames(5, 48, 64, seed=20), fps=10)
    write_video(root / "linear" / "Pneu_c.gif", moving_frames(4, 40, 40, seed=21), fps=10)
    write_dicom(root / "linear" / "Reg_cine.dcm", moving_frames(7, 40, 48, seed=22)[..., 0], frame_time_ms=100)
    Image.fromarray(moving_frames(1, 30, 30)[0]).save(root / "convex" / "Cov_still.png")
    mask = np.zeros((30, 30), np.uint8)
    mask[5:20, 8:25] = 255
    Image.fromarray(mask).save(root / "convex" / "Cov_still_mask.png")
    folder = root / "convex" / "Pneu_frames"
    folder.mkdir()
    for i, f in enumerate(moving_frames(3, 32, 32, seed=5)):
        Image.fromarray(f).save(folder / f"frame_{i + 1}.png")
    (root / "bad" / "garbage.mp4").write_bytes(b"this is no video\n" * 50)
    whole = write_video(root / "bad" / "_whole.tmp.mp4", moving_frames(8, 48, 48)).read_bytes()
    (root / "bad" / "_whole.tmp.mp4").unlink()
    (root / "bad" / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient"])
        for i in range(clips):
            w.writerow([f"convex/Cov_{i}.mp4", "covid", f"p{i}"])
        w.writerow(["convex/Reg-b.avi", "regular", "p9"])
        w.writerow(["linear/Pneu_c.gif", "pneumonia", "p8"])
    return root


def store_files(out: Path) -> dict[str, bytes]:
    """What must be byte-identical between two runs: the manifest, skipped.csv, every array and mask."""
    files = {name: (out / name).read_bytes() for name in ("manifest.json", "skipped.csv")}
    for folder in ("arrays", "masks"):
        for p in sorted((out / folder).glob("*")) if (out / folder).is_dir() else []:
            files[f"{folder}/{p.name}"] = p.read_bytes()
    return files


def skipped_rows(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as fh:
        return {r["path"]: r["reason"] for r in csv.DictReader(fh)}
