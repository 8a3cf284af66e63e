"""Pretraining: config, methods, the training loop (single process or torchrun/DDP)."""

from uscl.pretrain.config import (
    DatasetConfig, LossConfig, ModelConfig, PretrainConfig, load_config, lr_at, validate_config,
)
from uscl.pretrain.trainer import PretrainResult, pretrain, resume_config

__all__ = [
    "DatasetConfig", "LossConfig", "ModelConfig", "PretrainConfig", "PretrainResult",
    "load_config", "lr_at", "pretrain", "resume_config", "validate_config",
]
