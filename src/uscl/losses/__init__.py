"""Losses as pure functions: NT-Xent, multi-positive NT-Xent, MoCo's InfoNCE against a queue, the masked supervised
cross-entropy."""

from uscl.losses.moco import enqueue, moco_infonce
from uscl.losses.multi_positive import multi_positive_nt_xent, time_weights
from uscl.losses.ntxent import nt_xent
from uscl.losses.supervised import masked_cross_entropy

__all__ = ["enqueue", "masked_cross_entropy", "moco_infonce", "multi_positive_nt_xent", "nt_xent", "time_weights"]
