"""Checkpoints that never unpickle: safetensors + JSON for weights, plain tensors for state.

* ``save_weights(path, state_dict, meta)`` writes ``path`` (``.safetensors``) and
  the JSON sidecar beside it (same stem, ``.json``); both atomically.
* ``save_train_state`` / ``load_train_state``: optimizer, schedule, scaler and
  RNG states as plain tensors/dicts, read back with ``torch.load(weights_only=True)``.
* ``link_or_copy(src, dst)``: the best checkpoint is the last one, hard-linked, not rewritten.
* ``export_backbone(model, path, meta)`` writes the backbone with torchvision
  ResNet key names (no ``fc.*``), so ``resnet18().load_state_dict(sd, strict=False)``
  works; ``load_backbone(path_or_run)`` reads it back and checks the keys.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
try:
    from safetensors import SafetensorError as SafetensorsError
except ImportError:  # older safetensors
    SafetensorsError = Exception
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from uscl.checkpoint.run_files import BACKBONE as BACKBONE_FILE
from uscl.checkpoint.run_files import BEST
from uscl.errors import UsclError
from uscl.models.backbone import build_backbone
from uscl.utils.atomic import atomic_path, atomic_write_json

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def weights_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_suffix(".safetensors")


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        out[k] = v
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors as safetensors and ``meta`` as the JSON sidecar; returns the weights path."""
    path = weights_path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in strip_wrappers(state_dict).items()}
    header = {"format": "pt", "uscl_meta": json.dumps(meta, default=_json_default)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=header)
    atomic_write_json(sidecar_path(path), meta)
    return path


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a copy of ``src`` atomically; a hard link when the file system allows
    (``src`` is later replaced, never modified in place, so the link keeps this content)."""
    src, dst = Path(src), Path(dst)
    with atomic_path(dst, suffix=dst.suffix) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, meta) of a safetensors file and its JSON sidecar.

    Without a sidecar the copy of the metadata in the safetensors header is used ({} if none).
    """
    path = weights_path(path)
    if not path.is_file():
        raise UsclError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorsError, OSError, ValueError) as exc:
        raise UsclError(f"{path} is not a readable safetensors file: {exc}") from exc
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if not side.is_file():
        meta = _header_meta(path)
    else:
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise UsclError(f"{side} is corrupt: {exc}") from exc
    return state, meta


def _header_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get("uscl_meta")
        return json.loads(text) if text else {}
    except (SafetensorsError, OSError, ValueError):
        return {}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# -- training state -----------------------------------------------------------
def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save of plain tensors/dicts/numbers, atomically (readable with weights_only=True)."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise UsclError(f"{path} could not be read as a training state (weights_only): {exc}") from exc


# -- backbone export ------------------------------------------------------------
def expected_backbone_keys(arch: str) -> set[str]:
    net, _ = build_backbone(arch)
    return set(net.state_dict())


def export_backbone(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write the backbone of ``model`` (a USCLModel, possibly wrapped, or a bare ResNet).

    Keys are torchvision's (``conv1.weight``, ``layer4.1.bn2.running_var`` ...), no ``fc.*``.
    """
    model = unwrap_model(model)
    backbone = getattr(model, "backbone", model)
    meta = dict(meta)
    meta.setdefault("arch", getattr(model, "arch", None))
    meta.setdefault("feature_dim", getattr(model, "feature_dim", None))
    return export_backbone_state(backbone.state_dict(), path, meta)


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone part of a model's state dict with torchvision keys: ``backbone.*`` of a
    pretraining model with the prefix removed (a bare ResNet's keys as they are), no ``fc.*``."""
    state = strip_wrappers(state)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def export_backbone_state(state: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write :func:`backbone_state` of ``state`` to ``path`` (safetensors + JSON, atomic)."""
    return save_weights(path, backbone_state(state), {**meta, "key_format": "torchvision"})


def resolve_backbone_path(path_or_run: str | os.PathLike) -> Path:
    """A run folder → its ``backbone.safetensors`` (or, for a run killed before exporting it,
    its ``best.safetensors``); a file path (with or without suffix) → itself."""
    p = Path(path_or_run)
    if p.is_dir():
        for name in (BACKBONE_FILE, BEST):
            if (p / name).is_file():
                return p / name
        raise UsclError(f"{p} holds no {BACKBONE_FILE}: is it a `uscl pretrain` run folder?")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    p = weights_path(p)
    if not p.is_file():
        raise UsclError(f"backbone weights not found: {path_or_run}")
    return p


def check_backbone_state(state: dict[str, torch.Tensor], arch: str, *, where: str = "") -> None:
    """Raise UsclError listing missing/unexpected keys and shape mismatches for ``arch``."""
    ref = build_backbone(arch)[0].state_dict()
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    bad_shape = sorted(k for k in set(ref) & set(state) if tuple(ref[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or bad_shape):
        return
    parts = [f"{where or 'backbone'} does not match architecture {arch}"]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if bad_shape:
        parts.append("shape mismatch: " + _short([f"{k} {tuple(state[k].shape)} vs {tuple(ref[k].shape)}" for k in bad_shape]))
    raise UsclError("; ".join(parts))


def load_backbone(path_or_run: str | os.PathLike, arch: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (torchvision-keyed state_dict, meta) of an exported backbone, checked against its arch.

    ``arch`` (if given) must match the architecture recorded in the sidecar.
    """
    path = resolve_backbone_path(path_or_run)
    state, meta = load_weights(path)
    state = backbone_state(state)  # also a full pretraining checkpoint
    recorded = meta.get("arch")
    if arch and recorded and arch != recorded:
        raise UsclError(f"{path} holds a {recorded} backbone, but {arch} was asked for")
    use_arch = arch or recorded
    if not use_arch:
        raise UsclError(f"{path}: the architecture is unknown (no 'arch' in {sidecar_path(path).name}); pass it explicitly")
    check_backbone_state(state, use_arch, where=str(path))
    return state, meta


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "")
