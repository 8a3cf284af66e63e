"""Batched, per-image augmentation of uint8 frames on the training device."""

from uscl.augment.batch import BatchAugment, eval_transform
from uscl.augment.config import AugmentConfig, finetune_augment_config

__all__ = ["AugmentConfig", "BatchAugment", "eval_transform", "finetune_augment_config"]
