"""Fine-tuning and evaluation with k-fold cross-validation split by video (and patient).

* :mod:`.splits`  - stratified, grouped folds; POCOVID-Net ``cross_val.json`` import; leakage check
* :mod:`.init`    - backbone initialisation (random, ImageNet file, our runs, the USCL release)
* :mod:`.config`  - :class:`FinetuneConfig`
* :mod:`.train`   - :func:`finetune` (paper / full / linear / knn modes)
* :mod:`.metrics` - frame- and video-level metrics, summaries over folds, paired differences
* :mod:`.compare` - several inits over the same folds
* :mod:`.report`  - report.md, metrics.json and plots for a run or a comparison
"""

from uscl.finetune.config import FinetuneConfig

__all__ = ["FinetuneConfig"]
