"""Losses as pure functions: NT-Xent and the masked supervised cross-entropy."""

from uscl.losses.ntxent import nt_xent
from uscl.losses.supervised import masked_cross_entropy

__all__ = ["nt_xent", "masked_cross_entropy"]
