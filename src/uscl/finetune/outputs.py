"""The files of a fine-tuned fold: ``model.safetensors`` (+ JSON metadata) and ``history.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from uscl.checkpoint import save_weights
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.engine import cfg_mean_std
from uscl.utils.atomic import atomic_write_text

MODEL_KIND = "uscl-finetuned"


def model_meta(cfg: FinetuneConfig, store, arch: str, classes: list[str], init_spec: str, init_name: str) -> dict:
    """What every fold's model records: classes and preprocessing (enough for ``uscl predict``), init, mode."""
    mean, std = cfg_mean_std(cfg)
    return {
        "kind": MODEL_KIND,
        "arch": arch,
        "classes": classes,
        "num_classes": len(classes),
        "image_size": cfg.image_size,
        "channels": store.channels,
        "out_channels": 3,
        "mean": mean,
        "std": std,
        "store_options": store.options,
        "store_id": store.store_id,
        "init": init_spec,
        "init_name": init_name,
        "mode": cfg.mode,
        "selection": cfg.selection,
        "selected_on_test": cfg.select_on_test,
    }


def save_model(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Safetensors + JSON sidecar (:func:`uscl.checkpoint.save_weights`); the metadata also rides in the header."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_weights(path, tensors, meta)


def write_history(path: Path, rows: list[dict]) -> None:
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (f"{v:.6g}" if isinstance(v, float) else v) for c, v in r.items()})
    atomic_write_text(path, buf.getvalue())
