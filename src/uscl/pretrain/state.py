"""The training state a run saves after every epoch and a resume restores: model, optimiser,
scaler, the method's own state, RNG states, metrics so far and the saver's best epoch.

One file (``train_state.pt``, written atomically, read with ``weights_only=True``) holds all
of it, weights included, so a process killed at any moment leaves either the previous
epoch's state or the new one, never a mix: a restart resumes exactly at an epoch boundary.
"""

from __future__ import annotations

from pathlib import Path

from uscl.checkpoint import CheckpointSaver, load_train_state, load_weights, save_train_state, strip_wrappers, unwrap_model
from uscl.checkpoint.run_files import LAST, STATE_FILE
from uscl.errors import UsclError
from uscl.pretrain.config import PretrainConfig
from uscl.pretrain.loop import Training
from uscl.utils.seed import rng_state, set_rng_state

STATE_FORMAT = "uscl-train-state"


def save_state(run_dir: Path, epoch: int, cfg: PretrainConfig, t: Training, metrics: list[dict],
               saver: CheckpointSaver) -> None:
    save_train_state(run_dir / STATE_FILE, {
        "format": STATE_FORMAT, "epoch": epoch, "arch": cfg.arch, "method": cfg.method,
        "model": unwrap_model(t.raw_model).state_dict(), "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict(), "method_state": t.method.state_dict(),
        "schedule": {"base_lr": cfg.lr, "flat_epochs": cfg.flat_epochs, "epochs": cfg.epochs},
        "rng": rng_state(), "loader_epoch": epoch, "metrics": metrics, "best": saver.state_dict(),
    })


def restore_state(run_dir: Path, cfg: PretrainConfig, t: Training, saver: CheckpointSaver,
                  store_id: str | None) -> tuple[int, list[dict]]:
    """Load the saved state into ``t`` and ``saver``; returns (epochs done, metrics so far)."""
    state = load_train_state(run_dir / STATE_FILE)
    if state.get("arch") != cfg.arch or state.get("method") != cfg.method:
        raise UsclError(f"cannot resume {run_dir}: its training state is for {state.get('arch')}/"
                        f"{state.get('method')}, not {cfg.arch}/{cfg.method}", param="resume")
    _, meta = load_weights(run_dir / LAST)
    if meta.get("store_id") and meta["store_id"] != store_id:
        raise UsclError(f"cannot resume {run_dir}: it was trained on another frame store "
                        f"(store id {meta['store_id']}, this one {store_id})", param="store")
    weights = state.get("model")
    if weights is None:  # a state written before the weights were kept in it
        weights, meta = load_weights(run_dir / LAST)
        if int(meta.get("epoch", -1)) != int(state["epoch"]):
            raise UsclError(f"cannot resume {run_dir}: {LAST} (epoch {meta.get('epoch')}) and "
                            f"{STATE_FILE} (epoch {state['epoch']}) disagree", param="resume")
    try:
        unwrap_model(t.raw_model).load_state_dict(strip_wrappers(weights), strict=True)
    except RuntimeError as exc:
        raise UsclError(f"cannot resume {run_dir}: its weights do not fit this model: {exc}", param="resume") from exc
    t.optimizer.load_state_dict(state["optimizer"])
    t.scaler.load_state_dict(state["scaler"])
    t.method.load_state_dict(state.get("method_state", {}))
    set_rng_state(state["rng"])
    saver.load_state_dict(state.get("best", {}))
    return int(state["epoch"]), list(state.get("metrics", []))
