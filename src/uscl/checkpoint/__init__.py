"""Checkpoints that never unpickle (safetensors + JSON), run-folder file names, and the saver
that decides which checkpoints a pretraining run keeps."""

from uscl.checkpoint.saver import CheckpointSaver
from uscl.checkpoint.weights import (
    BACKBONE_FILE,
    backbone_state,
    export_backbone_state,
    WRAPPER_PREFIXES,
    check_backbone_state,
    expected_backbone_keys,
    export_backbone,
    link_or_copy,
    load_backbone,
    load_train_state,
    load_weights,
    resolve_backbone_path,
    save_train_state,
    save_weights,
    sidecar_path,
    strip_wrappers,
    unwrap_model,
    weights_path,
)

__all__ = [
    "BACKBONE_FILE", "CheckpointSaver", "WRAPPER_PREFIXES", "backbone_state", "export_backbone_state", "check_backbone_state", "expected_backbone_keys", "export_backbone",
    "link_or_copy", "load_backbone", "load_train_state", "load_weights", "resolve_backbone_path",
    "save_train_state", "save_weights", "sidecar_path", "strip_wrappers", "unwrap_model", "weights_path",
]
