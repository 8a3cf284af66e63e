"""uscl: pretrain ultrasound image models on ultrasound videos."""

__version__ = "0.1.0"
