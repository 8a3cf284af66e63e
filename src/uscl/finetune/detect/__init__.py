"""Detection fine-tuning: torchvision Mask R-CNN / Faster R-CNN on the initialised ResNet-FPN, COCO metrics."""
