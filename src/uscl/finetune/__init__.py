"""Fine-tuning and evaluation with k-fold cross-validation split by video (and patient).

* :mod:`.config`      - :class:`FinetuneConfig`
* :mod:`.splits`      - stratified, grouped folds; POCOVID-Net ``cross_val.json`` import; leakage check
* :mod:`.label_fraction` - nested, stratified, patient-whole subsets of each fold's training videos
* :mod:`.init`        - backbone initialisation (random, ImageNet file, our runs, the USCL release)
* :mod:`.train`       - :func:`finetune`: the run (checks, folds, run folder, outputs, resume)
* :mod:`.modes`       - one function per mode: paper / full (gradient), linear, knn
* :mod:`.engine`      - device preprocessing, one training epoch, evaluation
* :mod:`.loaders`     - a fold's data loaders
* :mod:`.outputs`     - a fold's model file and history.csv
* :mod:`.run_folder`  - start, replace or resume a run folder
* :mod:`.predictions` - predictions.csv
* :mod:`.pretraining_labels` - inits pretrained with the test videos' labels: refused or flagged
* :mod:`.model_card`  - MODEL_CARD.md + model_card.json of every run (and of `uscl export`)
* :mod:`.metrics`     - frame- and video-level metrics, summaries over folds, paired differences
* :mod:`.segment` - segmentation fine-tuning (U-Net decoder, Dice + CE); its metrics: Dice / IoU / HD95 per image, per fold (image and video level), over folds
* :mod:`.compare`     - several inits over the same folds (their report: :mod:`uscl.report`)

The names below are imported when first used: the CLI builds the `finetune` flags from
:mod:`.config` alone, without loading the training code (sklearn, the models).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FinetuneConfig": "uscl.finetune.config",
    "FinetuneResult": "uscl.finetune.train",
    "InitRuns": "uscl.finetune.compare",
    "build_splits": "uscl.finetune.train",
    "finetune": "uscl.finetune.train",
    "finetune_inits": "uscl.finetune.compare",
}

__all__ = ["FinetuneConfig", "FinetuneResult", "InitRuns", "build_splits", "finetune", "finetune_inits"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
