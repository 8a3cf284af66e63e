"""Losses as pure functions: NT-Xent, multi-positive NT-Xent, MoCo's InfoNCE against a queue, the masked supervised
cross-entropy, the
segmentation loss (cross-entropy plus soft Dice)."""

from uscl.losses.moco import enqueue, moco_infonce
from uscl.losses.multi_positive import multi_positive_nt_xent, time_weights
from uscl.losses.ntxent import nt_xent
from uscl.losses.segmentation import dice_ce_loss, soft_dice_loss
from uscl.losses.supervised import masked_cross_entropy

__all__ = ["dice_ce_loss", "enqueue", "masked_cross_entropy", "moco_infonce", "multi_positive_nt_xent", "nt_xent",
           "soft_dice_loss", "time_weights"]
