"""What `uscl predict` reads: files and folders → inputs → the frames the model sees.

Folders are searched recursively with the discovery code of `uscl prepare`
(videos, DICOM cine and stills, images, folders of numbered frames), and each
input is decoded and preprocessed with the *store options recorded in the
model* (fps sampling, max frames, crop, size, channels), then resized and
normalised like the fine-tuning evaluation transform.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uscl.augment import eval_transform
from uscl.store.preprocess import PrepareOptions, load_input_frames
from uscl.video.discover import VideoInput, discover_inputs, frame_folder_members
from uscl.video.formats import kind_of, natural_key


@dataclass
class InputItem:
    """One thing to predict on, with the name shown in tables and files."""

    name: str  # as the user would recognise it: the path given, or folder/relative path
    source: VideoInput | None  # None: not readable as an input (reason in ``problem``)
    problem: str | None = None


def gather_inputs(paths: list[str | os.PathLike]) -> list[InputItem]:
    """Expand files and folders into inputs; unusable paths come back with their ``problem``."""
    items: list[InputItem] = []
    for raw in paths:
        p = Path(raw)
        name = str(raw)
        if not p.exists():
            items.append(InputItem(name, None, "not found"))
        elif p.is_file():
            kind = kind_of(p)
            if kind is None:
                items.append(InputItem(name, None, "not a video, DICOM or image file"))
            else:
                items.append(InputItem(name, VideoInput(path=p, rel=p.name, kind=kind)))
        elif p.is_dir():
            items.extend(_folder_items(p, name))
        else:
            items.append(InputItem(name, None, "not a regular file or folder"))
    return items


def _folder_items(folder: Path, name: str) -> list[InputItem]:
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")),
                   key=lambda f: natural_key(f.name))
    has_subdirs = any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir())
    members = frame_folder_members(files) if not has_subdirs else None
    if members is not None:
        # a folder given on its own that is one numbered sequence of frames is one video (of its readable frames)
        return [InputItem(name, VideoInput(path=folder, rel=folder.name, kind="frames", files=tuple(members[0]),
                                           unreadable=tuple(members[1])))]
    found = discover_inputs(folder)
    items = [InputItem(os.path.join(name, inp.rel), inp) for inp in found.inputs]
    if not items:
        return [InputItem(name, None, "no videos, DICOM, images or frame folders inside")]
    return items


def unique_stem(name: str, used: set[str]) -> str:
    """A file-system-safe folder name for input ``name`` (its stem), made unique against ``used`` (lower case),
    which it joins: ``clip``, ``clip_2``, ... for inputs of the same stem."""
    stem = re.sub(r"[^A-Za-z0-9.\-]+", "_", Path(name.rstrip("/\\")).stem).strip("_.") or "input"
    candidate, n = stem, 2
    while candidate.lower() in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate.lower())
    return candidate


def load_frames(inp: VideoInput, options: PrepareOptions) -> np.ndarray:
    """Decode and preprocess one input exactly as `uscl prepare` did: uint8 (T, S, S, C).

    Raises uscl.video.DecodeError (or UsclError) for a file that cannot be read.
    """
    return load_input_frames(inp, options)


def to_model_input(frames: np.ndarray | torch.Tensor, image_size: int, mean: float, std: float,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (T, H, W, C) frames → normalised float32 (T, 3, image_size, image_size), as at evaluation."""
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    x = x.permute(0, 3, 1, 2).to(device)
    return eval_transform(x, image_size, mean, std, 3)


def to_display(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    """Undo the normalisation: model input (N, 3, H, W) → uint8 RGB (N, H, W, 3), what the model saw."""
    img = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    return (img.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
