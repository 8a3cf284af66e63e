"""Frame and video predictions of a fine-tuned model: :func:`predict` (the API behind `uscl predict`).

Per input: per-frame class probabilities (the fold's, or the mean over the
folds of an ensemble), and the video-level prediction: the mean probability
over frames, its arg-max class, and the fraction of frames whose own arg-max
agrees with it. Frames of consecutive inputs share batches, so a folder of
stills runs as fast as one long video. An input that cannot be read is
recorded in ``skipped`` and the rest goes on.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from uscl.errors import UsclError
from uscl.infer.inputs import InputItem, gather_inputs, to_model_input
from uscl.infer.model import CLASSIFY, LoadedModel, check_task, load_model
from uscl.infer.prediction_files import PredictionWriter
from uscl.store.preprocess import PrepareOptions, try_load_input_frames
from uscl.utils.atomic import atomic_write_text
from uscl.utils.device import autocast_for, resolve_device
from uscl.utils.ordered_pool import ordered_map
from uscl.utils.progress import progress


@dataclass
class InputPrediction:
    """The predictions for one input."""

    name: str
    kind: str
    frame_probs: np.ndarray  # (T, K) float
    classes: list[str]
    frames: np.ndarray | None = None  # uint8 (T, S, S, C) as preprocessed, kept for explanations

    @property
    def num_frames(self) -> int:
        return int(self.frame_probs.shape[0])

    @property
    def probs(self) -> np.ndarray:
        """Video-level class probabilities: the mean over frames."""
        return self.frame_probs.mean(0)

    @property
    def label_index(self) -> int:
        return int(self.probs.argmax())

    @property
    def label(self) -> str:
        return self.classes[self.label_index]

    @property
    def agreement(self) -> float:
        """Fraction of frames whose own prediction is the video-level class."""
        return float((self.frame_probs.argmax(1) == self.label_index).mean())

    def to_dict(self, with_frames: bool = True) -> dict:
        out = {
            "input": self.name,
            "kind": self.kind,
            "num_frames": self.num_frames,
            "prediction": self.label,
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, self.probs)},
            "agreement": round(self.agreement, 6),
        }
        if with_frames:
            out["frames"] = [
                {"frame": t, "prediction": self.classes[int(p.argmax())],
                 "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)}}
                for t, p in enumerate(self.frame_probs)
            ]
        return out


@dataclass
class PredictionRun:
    """Everything one predict call produced."""

    model: LoadedModel
    results: list[InputPrediction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    device: str = "cpu"
    predicted: int = 0  # inputs predicted (also those not kept in ``results``)

    @property
    def classes(self) -> list[str]:
        return self.model.classes


@torch.no_grad()
def predict_batch(model: LoadedModel, x: torch.Tensor, device: torch.device, amp: bool = True) -> np.ndarray:
    """Probabilities (N, K) for normalised inputs, averaged over the folds of an ensemble."""
    x = x.to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    total = None
    with autocast_for("bf16" if amp else "fp32", device):  # bf16, as fine-tuning used
        for f in model.folds:
            p = f.net(x).float()
            total = p if total is None else total + p
    return (total / len(model.folds)).cpu().numpy()


def predict_frames(model: LoadedModel, frames: np.ndarray, *, batch_size: int = 64,
                   device: torch.device | str = "cpu", amp: bool = True) -> np.ndarray:
    """Probabilities (T, K) of uint8 preprocessed frames (T, S, S, C) of one input."""
    device = torch.device(device)
    pp = model.preprocessing
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_model_input(frames[i:i + batch_size], pp.image_size, pp.mean, pp.std, device)
        out.append(predict_batch(model, x, device, amp))
    return np.concatenate(out) if out else np.zeros((0, len(pp.classes)))


WORKER_DIED = "the worker process decoding it died (killed, or out of memory); the other inputs went on"


def read_inputs(items: Iterable[InputItem], options: PrepareOptions, skipped: list[tuple[str, str]],
                on_skip: Callable[[str, str], None] | None = None, *, desc: str = "predict",
                show_progress: bool = True, workers: int = 1) -> Iterator[tuple[InputItem, np.ndarray]]:
    """``(item, frames)`` of every readable item, in order, under a progress bar; an item that cannot be read
    is appended to ``skipped`` as ``(name, reason)`` (and passed to ``on_skip``) and the rest goes on.

    ``workers`` ≥ 2 decodes in that many processes (uscl.utils.ordered_pool, one decoder thread each), a
    few inputs ahead of the caller; the frames and their order are those of ``workers=1`` (this process)."""
    items = list(items)
    decode = functools.partial(try_load_input_frames, options=options, threads=1 if workers > 1 else None)
    outcomes = ordered_map(decode, (it.source for it in items if it.source is not None), workers,
                           crashed=lambda _item, _exc: (None, WORKER_DIED), preload=("uscl.store.preprocess",))
    bar = progress(items, desc=desc, unit="input", **({} if show_progress else {"disable": True}))
    try:
        for item in bar:
            frames, reason = (None, item.problem or "unreadable") if item.source is None else next(outcomes)[1]
            if reason is not None:
                skipped.append((item.name, reason))
                if on_skip:
                    on_skip(item.name, reason)
                continue
            yield item, frames
    finally:
        outcomes.close()  # stops the decoding processes, also when the caller stops early


def predict_items(model: LoadedModel, items: Iterable[InputItem], *, batch_size: int = 64,
                  device: torch.device | str = "cpu", amp: bool = True, keep_frames: bool = False,
                  on_skip: Callable[[str, str], None] | None = None,
                  on_result: Callable[[InputPrediction], None] | None = None,
                  show_progress: bool = True, workers: int = 1, keep_results: bool = True) -> PredictionRun:
    """Predict every item; frames of consecutive inputs are batched together.

    ``on_result(prediction)`` is called once per input as soon as it is done,
    with its preprocessed frames attached (``prediction.frames``), which are
    then dropped unless ``keep_frames``: explaining works input by input
    without holding every clip in memory. ``keep_results=False`` keeps no
    result in ``run.results`` either (``on_result`` writes them: memory
    stays flat in the number of inputs). ``workers``: decoding processes
    (:func:`read_inputs`).
    """
    check_task(model.task, CLASSIFY, str(model.source))
    device = torch.device(device)
    model.to(device)
    items = list(items)
    pp = model.preprocessing
    options = PrepareOptions.from_dict(pp.store_options)
    run = PredictionRun(model=model, device=str(device))
    pending: list[tuple[InputItem, np.ndarray]] = []  # inputs whose frames wait in the batch buffer
    buffered = 0

    def flush() -> None:
        nonlocal pending, buffered
        if not pending:
            return
        frames = np.concatenate([f for _, f in pending])
        probs = predict_frames(model, frames, batch_size=batch_size, device=device, amp=amp)
        start = 0
        for item, f in pending:
            n = len(f)
            result = InputPrediction(item.name, item.source.kind, probs[start:start + n], list(pp.classes), frames=f)
            if on_result:
                on_result(result)
            if not keep_frames:
                result.frames = None
            if keep_results:
                run.results.append(result)
            run.predicted += 1
            start += n
        pending, buffered = [], 0

    for item, frames in read_inputs(items, options, run.skipped, on_skip, show_progress=show_progress,
                                    workers=workers):
        pending.append((item, frames))
        buffered += len(frames)
        if buffered >= batch_size:
            flush()
    flush()
    return run


def predict(model_path: str | os.PathLike, inputs: list[str | os.PathLike], *, fold: int | None = None,
            batch_size: int = 64, device: str = "auto", amp: bool = True, keep_frames: bool = False,
            on_skip: Callable[[str, str], None] | None = None,
            on_result: Callable[[InputPrediction], None] | None = None, show_progress: bool = True,
            workers: int = 1) -> PredictionRun:
    """Load a fine-tuned model (``fold`` or the ensemble of all folds) and predict on files/folders.

    >>> run = predict("runs/ft_pocus", ["clip.mp4", "more_clips/"], fold=0)
    >>> [(r.name, r.label, r.agreement) for r in run.results], run.skipped
    """
    if batch_size < 1:
        raise UsclError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
    if not inputs:
        raise UsclError("no inputs given", param="inputs")
    model = load_model(model_path, fold)
    check_task(model.task, CLASSIFY, str(model_path))
    dev = resolve_device(device)
    return predict_items(model, gather_inputs(inputs), batch_size=batch_size, device=dev, amp=amp,
                         keep_frames=keep_frames, on_skip=on_skip, on_result=on_result, show_progress=show_progress,
                         workers=workers)


# -- output ---------------------------------------------------------------------------------
def format_table(run: PredictionRun, max_name: int = 48) -> str:
    """The terminal table: one row per input (video-level prediction, class probabilities, agreement)."""
    classes = run.classes
    names = [_clip(r.name, max_name) for r in run.results]
    w = max([len(n) for n in names] + [5])
    cw = max([len(c) for c in classes] + [6])
    head = f"{'input':<{w}}  {'frames':>6}  {'prediction':<{cw}}  " + "  ".join(f"{c:>{cw}}" for c in classes) + "  agree"
    lines = [head, "-" * len(head)]
    for n, r in zip(names, run.results):
        lines.append(f"{n:<{w}}  {r.num_frames:>6}  {r.label:<{cw}}  "
                     + "  ".join(f"{p:>{cw}.3f}" for p in r.probs) + f"  {r.agreement:>5.2f}")
    if run.skipped:
        lines.append(f"skipped {len(run.skipped)} input(s):")
        lines += [f"  {n}: {why}" for n, why in run.skipped]
    return "\n".join(lines)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


def write_outputs(run: PredictionRun, out: str | os.PathLike, extra: dict | None = None) -> dict[str, Path]:
    """frames.csv, videos.csv, predictions.json (and skipped.csv when inputs were skipped), by the
    writer a streaming run uses (uscl.infer.prediction_files), so both give the same files."""
    writer = PredictionWriter(out, run.model, run.device)
    for r in run.results:
        writer.add(r)
    return writer.close(run.skipped, extra)


def write_skipped(out: str | os.PathLike, skipped: list[tuple[str, str]]) -> Path:
    """``out/skipped.csv``: the inputs that could not be read, and why (atomically)."""
    path = Path(out) / "skipped.csv"
    atomic_write_text(path, _csv([["input", "reason"], *map(list, skipped)]))
    return path
