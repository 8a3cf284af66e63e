"""Batched, per-image augmentation of uint8 frames on the training device, and USCL's views:
three frames of a video augmented and mixed into two (eager, or replayed as a CUDA graph)."""

from uscl.augment.batch import BatchAugment, eval_transform
from uscl.augment.config import AugmentConfig, AugmentSettings, finetune_augment_config
from uscl.augment.mixup import mix_views, sample_lambda, views_of
from uscl.augment.views import gpu_batch_to_frame_views, gpu_batch_to_views

__all__ = ["AugmentConfig", "AugmentSettings", "BatchAugment", "eval_transform", "finetune_augment_config", "gpu_batch_to_frame_views", "gpu_batch_to_views",
           "mix_views", "sample_lambda", "views_of"]
