"""A pretraining run folder: which folder a run writes to (new, resumed, overwritten or
continued after a restart), and the per-epoch records it keeps (metrics.csv, TensorBoard).

File names: :mod:`uscl.checkpoint.run_files`.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from uscl.checkpoint.run_files import (BACKBONE, BEST, CONFIG_FILE, LAST, METRICS_FILE, STATE_FILE,
                                       TENSORBOARD_DIR)
from uscl.checkpoint.weights import load_train_state
from uscl.errors import UsclError
from uscl.pretrain.config import PretrainConfig, elastic_differences, resume_differences, saved_config
from uscl.utils.atomic import atomic_write_text

METRIC_COLUMNS = ["epoch", "total_loss", "contrastive_loss", "supervised_loss", "lr", "val_loss",
                  "images_per_s", "data_wait_share", "epoch_time_s", "labelled_items",
                  "probe_knn_acc", "probe_linear_acc", "probe_s"]


@dataclass
class RunFolder:
    path: Path
    resume: bool  # continue the training state found there


def finished_epochs(run_dir: Path) -> int | None:
    """Epochs the run in ``run_dir`` has finished (None: no training state)."""
    if not (run_dir / STATE_FILE).is_file():
        return None
    return int(load_train_state(run_dir / STATE_FILE).get("epoch", 0))


def _check_resumable(run_dir: Path, cfg: PretrainConfig, *, what: str) -> None:
    for name in (CONFIG_FILE, STATE_FILE, LAST):
        if not (run_dir / name).is_file():
            raise UsclError(f"cannot {what} {run_dir}: {name} is missing (the run never finished an epoch?)",
                            param="resume")


def choose_run_folder(cfg: PretrainConfig) -> RunFolder:
    """Where the run writes, and whether it continues what is there.

    * ``resume``: continue that folder (locked settings must match);
    * ``auto_resume`` and ``out`` holds an unfinished run with exactly these settings: continue
      it (what ``torchrun --max-restarts`` needs: every restart repeats the command line); a
      finished run or one with other settings is refused, naming the differences;
    * otherwise ``out`` must be empty or absent (or ``overwrite``).
    """
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if cfg.out and Path(cfg.out).resolve() != run_dir.resolve():
            raise UsclError(f"resume={run_dir} continues that folder; out={cfg.out} must be unset or the same",
                            param="out")
        _check_resumable(run_dir, cfg, what="resume")
        diffs = resume_differences(saved_config(run_dir), cfg)
        if diffs:
            raise UsclError(f"cannot resume {run_dir} with different settings ({'; '.join(diffs)}); "
                            "start a new run in another folder instead", param="resume")
        return RunFolder(run_dir, True)
    if not cfg.out:
        raise UsclError("no output folder: set out (or resume)", param="out")
    run_dir = Path(cfg.out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsclError(f"{run_dir} exists and is not a folder", param="out")
    holds_run = (run_dir / STATE_FILE).is_file()
    if cfg.auto_resume and not cfg.overwrite and (run_dir / CONFIG_FILE).is_file():
        diffs = elastic_differences(saved_config(run_dir), cfg)
        if diffs:
            raise UsclError(f"{run_dir} holds a run with other settings ({'; '.join(diffs)}); auto_resume only "
                            "continues the same run: use another out folder", param="auto_resume")
        if not holds_run:  # started, but no epoch finished: start it again
            return RunFolder(run_dir, False)
        _check_resumable(run_dir, cfg, what="continue")
        done = finished_epochs(run_dir) or 0
        if done >= cfg.epochs:
            raise UsclError(f"{run_dir} holds a finished run ({done} of {cfg.epochs} epochs); nothing to continue",
                            param="out")
        return RunFolder(run_dir, True)
    if run_dir.is_dir() and any(run_dir.iterdir()) and not cfg.overwrite:
        hint = (" (it holds a pretraining run: continue it with resume, or auto_resume for the same settings)"
                if holds_run else "")
        raise UsclError(f"output folder {run_dir} is not empty{hint}; choose another out folder, or set overwrite",
                        param="out")
    return RunFolder(run_dir, False)


def clear_outputs(run_dir: Path) -> None:
    """Remove an earlier run's checkpoints and records (``overwrite``); nothing else in the folder."""
    for name in (STATE_FILE, BEST, LAST, BACKBONE, METRICS_FILE):
        for p in (run_dir / name, (run_dir / name).with_suffix(".json")):
            if p.suffix in (".json", ".safetensors", ".pt", ".csv") and p.is_file():
                p.unlink()


def metrics_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
    return buf.getvalue()


class EpochRecords:
    """metrics.csv (rewritten atomically each epoch) and TensorBoard scalars when it imports."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir = run_dir
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional dependency
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: csv only
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))

    def write(self, rows: list[dict]) -> None:
        atomic_write_text(self.run_dir / METRICS_FILE, metrics_csv(rows))
        if self.tb is not None:
            row = rows[-1]
            for k in METRIC_COLUMNS[1:]:
                if row.get(k) is not None:
                    self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Logger:
    """Prints on the main rank only and remembers warnings for the result."""

    def __init__(self, main: bool, stream=None):
        self.main = main
        self.stream = stream
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        if self.main:
            print(msg, file=self.stream or sys.stdout, flush=True)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        if self.main:
            print(f"warning: {msg}", file=sys.stderr, flush=True)
