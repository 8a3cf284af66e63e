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
* :mod:`.metrics`     - frame- and video-level metrics, summaries over folds, paired differences
* :mod:`.compare`     - several inits over the same folds (their report: :mod:`uscl.report`)
"""

from uscl.finetune.compare import InitRuns, finetune_inits
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.train import FinetuneResult, build_splits, finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "InitRuns", "build_splits", "finetune", "finetune_inits"]
