"""Segmentation fine-tuning: a U-Net decoder over the initialised ResNet, scored by Dice, IoU and HD95."""
