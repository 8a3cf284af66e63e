"""The file names of a run folder, in one place (writers and readers import them from here).

Pretraining run (``uscl pretrain --out RUN``)::

    RUN/config.yaml                 resolved configuration (CONFIG_FILE)
    RUN/labelled_videos.json        videos whose labels the supervised term used (LABELLED_FILE)
    RUN/metrics.csv                 one row per epoch (METRICS_FILE)
    RUN/last.safetensors + .json    weights after the latest epoch (LAST)
    RUN/best.safetensors + .json    the selected best epoch so far (BEST)
    RUN/backbone.safetensors + .json  the exported backbone, torchvision keys (BACKBONE)
    RUN/train_state.pt              optimizer, scaler, RNG, metrics (STATE_FILE)
    RUN/tb/                         TensorBoard events (TENSORBOARD_DIR)
"""

from __future__ import annotations

CONFIG_FILE = "config.yaml"
LABELLED_FILE = "labelled_videos.json"
METRICS_FILE = "metrics.csv"
STATE_FILE = "train_state.pt"
LAST = "last.safetensors"
BEST = "best.safetensors"
BACKBONE = "backbone.safetensors"
TENSORBOARD_DIR = "tb"
