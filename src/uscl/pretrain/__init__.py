"""Pretraining: config, methods (plug-ins), the step, the loop, the run (single process or
torchrun/DDP)."""

from uscl.pretrain.config import (
    DatasetConfig, LossConfig, ModelConfig, PretrainConfig, load_config, lr_at, resume_config, validate_config,
)
from uscl.pretrain.methods import PretrainMethod, StepLosses, method_names, register_method, unregister_method
from uscl.pretrain.moco import MoCo, MoCoSPG  # registers moco and moco-spg
from uscl.pretrain.trainer import PretrainResult, pretrain

__all__ = [
    "DatasetConfig", "LossConfig", "MoCo", "MoCoSPG", "ModelConfig", "PretrainConfig", "PretrainMethod", "PretrainResult",
    "StepLosses", "load_config", "lr_at", "method_names", "pretrain", "register_method", "resume_config",
    "unregister_method", "validate_config",
]
