"""Where a backbone's starting weights come from (fine-tuning, and continued pretraining).

Init specs (optionally named, ``name=spec``, for comparisons):

* ``random``                   - torchvision's random initialisation (seeded)
* ``imagenet:PATH``            - a local torchvision state dict (.pth/.pt or .safetensors) of any of
  :data:`uscl.models.ARCHITECTURES` (e.g. ``torchvision.models.densenet121(weights=...).state_dict()``);
  its architecture is read from its keys and its classifier is dropped
* ``checkpoint:RUN_OR_FILE``   - one of our pretraining runs (uscl.checkpoint.load_backbone)
* ``uscl-official:PATH``       - the USCL authors' ``best_model.pth``: ``features.0..7`` =
  conv1, bn1, relu, maxpool, layer1..layer4 (children of a torchvision ResNet wrapped in
  ``nn.Sequential``); ``l1/l2/fc`` or ``linear/fc`` heads are dropped

Nothing is downloaded. ``.pth`` files are read with ``torch.load(weights_only=True)``;
a legacy full pickle is refused unless ``unsafe_pickle`` is set, because unpickling
runs arbitrary code from the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from uscl.checkpoint.weights import load_backbone
from uscl.errors import UsclError
from uscl.models.backbone import classifier_keys
from uscl.models.classifier import infer_arch

KINDS = ("random", "imagenet", "checkpoint", "uscl-official")

# features.<i> of the release -> torchvision ResNet child name (2 = relu, 3 = maxpool: no weights)
_OFFICIAL_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


@dataclass
class InitSpec:
    name: str  # readable label (random, imagenet, uscl, simclr, or the user's name=)
    kind: str  # one of KINDS
    path: str | None = None
    explicit_name: bool = False

    @property
    def spec(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_init(text: str) -> InitSpec:
    """``random`` | ``imagenet:PATH`` | ``checkpoint:RUN`` | ``uscl-official:PATH``, optionally ``name=...``."""
    text = str(text).strip()
    name = None
    head, eq, rest = text.partition("=")
    if eq and ":" not in head and re.fullmatch(r"[A-Za-z0-9_.\-]+", head):
        name, text = head, rest.strip()
    kind, colon, path = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UsclError(
            f"unknown init {text!r}; use random, imagenet:PATH, checkpoint:RUN_OR_FILE or uscl-official:PATH"
            " (optionally NAME=... to name it)", param="init"
        )
    if kind == "random":
        if path:
            raise UsclError(f"init random takes no path (got {text!r})", param="init")
        return InitSpec(name or "random", kind, None, name is not None)
    if not path:
        raise UsclError(f"init {kind} needs a path: {kind}:PATH", param="init")
    default = {"imagenet": "imagenet", "uscl-official": "uscl-official", "checkpoint": Path(path).name or "checkpoint"}[kind]
    return InitSpec(name or default, kind, path, name is not None)


# -- reading files -----------------------------------------------------------------
def read_state_dict(path: str | Path, *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth/.pt file, without unpickling code by default."""
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"weights file not found: {path} (nothing is downloaded; give a local file)")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise UsclError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not unsafe_pickle:
            raise UsclError(
                f"{path} cannot be loaded safely (torch.load weights_only=True failed: {str(exc).splitlines()[0]}). "
                "It is probably a legacy full pickle. Loading it runs arbitrary code stored in the file; "
                "if you trust its origin, set unsafe_pickle (UNSAFE), or convert it to a state dict / safetensors",
                param="unsafe_pickle",
            ) from exc
        print(f"WARNING: unsafe_pickle: unpickling {path} with weights_only=False; this can run arbitrary code",
              file=sys.stderr)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj, path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise UsclError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UsclError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel / DDP
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def official_to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the USCL release's ``features.N.*`` keys onto torchvision names; drop its heads."""
    out = {}
    for key, value in sd.items():
        if not key.startswith("features."):
            continue  # l1/l2/fc (training model) or linear/fc (evaluation model)
        _, child, *rest = key.split(".")
        if child not in _OFFICIAL_CHILDREN or not rest:
            raise UsclError(f"unexpected key {key!r} in the USCL checkpoint (features.{child} has no weights)")
        out[".".join([_OFFICIAL_CHILDREN[child], *rest])] = value
    if not out:
        some = ", ".join(list(sd)[:5])
        raise UsclError(f"no features.* keys: this is not a USCL release checkpoint (keys start: {some})")
    return out


# torchvision's own DenseNet release files predate its module names: denselayer1.norm.1 = denselayer1.norm1
_LEGACY_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def backbone_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the torchvision classifier of the architecture the keys are (``fc.*`` when unknown)."""
    arch = infer_arch(sd)
    drop = classifier_keys(arch, sd) if arch else {k for k in sd if k.startswith("fc.")}
    return {k: v for k, v in sd.items() if k not in drop}


def torchvision_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision file's keys as today's torchvision models name them (old DenseNet files renamed)."""
    out = {}
    for k, v in sd.items():
        m = _LEGACY_DENSENET.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


# -- resolving an init ------------------------------------------------------------------
def load_init(spec: InitSpec, *, unsafe_pickle: bool = False) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """Backbone state dict (torchvision names, no fc) and metadata (with ``arch`` when known)."""
    if spec.kind == "random":
        return None, {"init": "random"}
    if spec.kind == "imagenet":
        sd = backbone_keys(torchvision_names(read_state_dict(spec.path, unsafe_pickle=unsafe_pickle)))
        return sd, {"init": spec.spec, "arch": infer_arch(sd), "method": "imagenet"}
    if spec.kind == "uscl-official":
        sd = official_to_torchvision(read_state_dict(spec.path, unsafe_pickle=unsafe_pickle))
        return sd, {"init": spec.spec, "arch": infer_arch(sd), "method": "uscl-official"}
    sd, meta = load_backbone(spec.path)
    meta = dict(meta or {})
    meta.setdefault("arch", infer_arch(sd))
    meta["init"] = spec.spec
    return backbone_keys(sd), meta


def name_for(spec: InitSpec, meta: dict) -> str:
    """Readable name: the user's, else the pretraining method recorded in the run (uscl, simclr...)."""
    if spec.explicit_name or spec.kind != "checkpoint":
        return spec.name
    method = meta.get("method")
    return str(method) if method else spec.name
