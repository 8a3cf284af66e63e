"""Which checkpoints a pretraining run keeps, and the backbone it exports.

One class, one job (as timm's ``CheckpointSaver``): after every epoch ``last`` is
written; when the epoch's score improved (lower is better) ``best`` becomes a hard
link to it, not a second copy; when the run stops, the selected checkpoint
(``select``: ``best`` or ``last``) is exported as ``backbone.safetensors`` with
torchvision key names, and its JSON says truthfully which epoch it holds and why.
Every file is written atomically (temp file, then ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uscl.checkpoint.run_files import BACKBONE, BEST, LAST
from uscl.checkpoint.weights import export_backbone_state, link_or_copy, load_weights, save_weights, sidecar_path
from uscl.utils.atomic import atomic_write_json

# checkpoint metadata carried into backbone.json
BACKBONE_META = ("arch", "feature_dim", "method", "epoch", "val_loss", "train_loss", "store_id", "image_size",
                 "channels", "mean", "std", "class_names", "uscl_version")


class CheckpointSaver:
    """``last`` every epoch, ``best`` by ``criterion`` (a metric name; lower is better unless
    ``higher_is_better``), ``backbone`` from the ``select`` checkpoint at the end."""

    def __init__(self, run_dir: str | Path, *, select: str = "best", criterion: str = "val_loss",
                 higher_is_better: bool = False):
        if select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {select!r}")
        self.run_dir = Path(run_dir)
        self.select = select
        self.criterion = criterion
        self.higher_is_better = higher_is_better
        self.best_epoch: int | None = None
        self.best_score: float | None = None

    def update(self, epoch: int, score: float | None) -> bool:
        """Record ``epoch``'s score (None: not measured this epoch); returns whether it is the new best."""
        better = (lambda a, b: a > b) if self.higher_is_better else (lambda a, b: a < b)
        improved = score is not None and (self.best_score is None or better(score, self.best_score))
        if improved:
            self.best_score, self.best_epoch = float(score), int(epoch)
        return improved

    def save(self, epoch: int, state: dict[str, torch.Tensor], meta: dict[str, Any], improved: bool) -> None:
        """Write ``last``, and ``best`` as a link to it when the epoch ``improved`` (:meth:`update`)."""
        save_weights(self.run_dir / LAST, state, {**meta, "epoch": epoch, "selected_by": "last"})
        if improved:
            link_or_copy(self.run_dir / LAST, self.run_dir / BEST)
            atomic_write_json(sidecar_path(self.run_dir / BEST), {**meta, "epoch": epoch, "selected_by": self.criterion})

    def export_backbone(self) -> Path | None:
        """``backbone.safetensors`` from the selected checkpoint (None when it does not exist yet)."""
        source = self.run_dir / (LAST if self.select == "last" else BEST)
        if not source.is_file():
            return None
        state, meta = load_weights(source)
        why = "last" if self.select == "last" else self.criterion
        out = {k: meta.get(k) for k in BACKBONE_META}
        return export_backbone_state(state, self.run_dir / BACKBONE, out | {
            "source": self.select, "selected_by": why, "run": str(self.run_dir)})

    def remove_backbone(self) -> None:
        """A resumed run re-exports at its end; until then ``best`` stands in for readers."""
        for p in (self.run_dir / BACKBONE, sidecar_path(self.run_dir / BACKBONE)):
            p.unlink(missing_ok=True)

    def describe(self) -> str:
        """What the exported backbone holds, for the final log line."""
        best = (f"best epoch {self.best_epoch} by {self.criterion.replace('_', ' ')} ({self.best_score:.4f})"
                if self.best_score is not None else "no best epoch")
        return best

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.best_epoch, "score": self.best_score, "selected_by": self.criterion}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_epoch, self.best_score = state.get("epoch"), state.get("score")
        self.criterion = state.get("selected_by", self.criterion)
