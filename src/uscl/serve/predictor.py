"""One uploaded file through the `uscl predict` path into a result folder.

:class:`Predictor` holds the one loaded model and runs an input exactly as
`uscl predict MODEL FILE --out DIR [--explain]` does, with the same library
calls (``predict_items`` + :class:`Explainer` + ``write_outputs`` for a
classifier, ``predict_segment_items`` + :class:`SegmentWriter` for a segmenter,
``predict_detect_items`` + :class:`DetectWriter` for a detector), so the
``predictions.json`` it writes is the one `uscl predict` writes. Beside those
files it adds ``overlay.gif`` (the overlay clip, which plays in any browser) and
``plot.png`` (per-frame probabilities, mask areas or detection counts).

Progress: a forward hook on each fold's backbone counts the frames that went
through the network (predicting, then Grad-CAM).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from uscl.errors import UsclError
from uscl.infer.detect import DetectWriter, predict_detect_items, write_detect_outputs
from uscl.infer.explain import ExplainOptions, Explainer
from uscl.infer.inputs import InputItem
from uscl.infer.mask_overlay import legend
from uscl.infer.model import CLASSIFY, SEGMENT, LoadedModel
from uscl.infer.predict import predict_items, write_outputs
from uscl.infer.segment import SegmentWriter, predict_segment_items, write_segment_outputs
from uscl.serve.artefacts import write_overlay_gif, write_series_plot
from uscl.video.discover import VideoInput

# artefact name (what the API serves) → what it is; a job serves only the ones it made
ARTEFACTS = {
    "predictions.json": "the prediction JSON (as `uscl predict --out` writes it)",
    "frames.csv": "per-frame class probabilities", "videos.csv": "the video-level prediction",
    "segments.csv": "per-frame pixel area of each mask class", "detections.csv": "one row per detection",
    "overlay.mp4": "the overlay clip (H.264)", "overlay.gif": "the overlay clip (animated GIF)",
    "overlay.png": "the overlay of a still", "sheet.png": "the Grad-CAM contact sheet",
    "plot.png": "the per-frame plot",
}
Progress = Callable[..., None]  # progress(stage, done=None, total=None)


class InputError(Exception):
    """The input could not be predicted (the decoder's reason): HTTP 422."""


@dataclass
class PredictOptions:
    explain: bool = True  # Grad-CAM (classification models)
    batch_size: int | None = None  # None: `uscl predict`'s default per task
    score_threshold: float = 0.5  # detection models
    amp: bool = True


class Predictor:
    """The one loaded model, and one input at a time through it (not thread-safe: one worker calls it)."""

    def __init__(self, model: LoadedModel, device, options: PredictOptions | None = None):
        self.model, self.device = model, device
        self.options = options or PredictOptions()
        if self.model.task == CLASSIFY and self.options.explain and self.model.is_knn:
            raise UsclError("a kNN model has no class scores to explain with Grad-CAM: serve it with --no-explain")
        model.to(device)

    @property
    def explains(self) -> bool:
        return self.model.task == CLASSIFY and self.options.explain

    def run(self, path: Path, name: str, kind: str, out: Path, progress: Progress) -> dict[str, str]:
        """Predict one file (shown as ``name``) into ``out``; the artefacts made, name → path relative to out."""
        item = InputItem(name, VideoInput(path=path, rel=path.name, kind=kind))
        counter = _FrameCounter(self.model, progress)
        try:
            progress("decoding")
            task = self.model.task
            if task == CLASSIFY:
                files = self._classify(item, out, counter)
            elif task == SEGMENT:
                files = self._segment(item, out, counter)
            else:
                files = self._detect(item, out, counter)
        finally:
            counter.remove()
        return {k: v for k, v in files.items() if v and (out / v).is_file()}

    def _kw(self) -> dict:
        return {"device": self.device, "on_skip": None, "show_progress": False}

    def _classify(self, item: InputItem, out: Path, counter: "_FrameCounter") -> dict[str, str]:
        explainer = (Explainer(self.model, out, ExplainOptions(device=str(self.device))) if self.explains else None)

        def on_result(pred) -> None:
            counter.stage("explaining", pred.num_frames)
            explainer(pred)

        run = predict_items(self.model, [item], batch_size=self.options.batch_size or 64, amp=self.options.amp,
                            on_result=on_result if explainer else None, **self._kw())
        _check(run)
        counter.stage("writing")
        write_outputs(run, out, {"explain": explainer.summary()} if explainer else {})
        pred = run.results[0]
        files = {"predictions.json": "predictions.json", "frames.csv": "frames.csv", "videos.csv": "videos.csv"}
        if pred.num_frames > 1:
            series = {c: pred.frame_probs[:, k] for k, c in enumerate(pred.classes)}
            write_series_plot(out / "plot.png", series, "probability", "class probabilities per frame", ylim=(0, 1))
            files["plot.png"] = "plot.png"
        if explainer:
            rec = explainer.records[0]
            folder = rec.folder.relative_to(out)
            files["sheet.png"] = f"{folder}/sheet.png"
            still = next((f for f in rec.files if f.startswith("frame_")), None)
            files.update(self._overlay(out, folder / "overlay.mp4", folder / still if still else None))
        return files

    def _segment(self, item: InputItem, out: Path, counter: "_FrameCounter") -> dict[str, str]:
        run = predict_segment_items(self.model, [item], batch_size=self.options.batch_size or 16,
                                    amp=self.options.amp, on_result=SegmentWriter(self.model, out), **self._kw())
        return self._dense(run, out, counter, write_segment_outputs, "segments.csv",
                           lambda p: {c: (p.areas / p.pixels)[:, k] for k, c in enumerate(p.labels) if k > 0},
                           "share of the frame", "mask area per frame")

    def _detect(self, item: InputItem, out: Path, counter: "_FrameCounter") -> dict[str, str]:
        run = predict_detect_items(self.model, [item], score_threshold=self.options.score_threshold,
                                   batch_size=self.options.batch_size or 4, on_result=DetectWriter(self.model, out),
                                   **self._kw())
        return self._dense(run, out, counter, write_detect_outputs, "detections.csv",
                           lambda p: {c: p.counts[:, k] for k, c in enumerate(p.classes)},
                           "detections", "detections per frame")

    def _dense(self, run, out: Path, counter: "_FrameCounter", write, table: str, series, ylabel: str,
               title: str) -> dict[str, str]:
        """A segmentation or detection run's files: its outputs, the per-frame plot, the overlay."""
        _check(run)
        counter.stage("writing")
        write(run, out)
        pred = run.results[0]
        files = {"predictions.json": "predictions.json", table: table}
        if pred.num_frames > 1:
            colours = {c: v["colour"] for c, v in legend(pred.classes).items()}
            write_series_plot(out / "plot.png", series(pred), ylabel, title, colours)
            files["plot.png"] = "plot.png"
        files.update(self._overlay(out, Path(pred.folder) / "overlay.mp4",
                                   Path(pred.folder) / "overlays" / "frame_00000.png"))
        return files

    @staticmethod
    def _overlay(out: Path, mp4: Path, still: Path | None) -> dict[str, str]:
        """overlay.mp4 + overlay.gif for a clip, overlay.png for a still."""
        if (out / mp4).is_file():
            write_overlay_gif(out / mp4, out / "overlay.gif")
            return {"overlay.mp4": str(mp4), "overlay.gif": "overlay.gif"}
        if still is not None and (out / still).is_file():
            shutil.copyfile(out / still, out / "overlay.png")
            return {"overlay.png": "overlay.png"}
        return {}


def _check(run) -> None:
    if not run.results:
        reason = run.skipped[0][1] if run.skipped else "nothing could be read"
        raise InputError(f"{run.skipped[0][0] if run.skipped else 'the file'} could not be read: {reason} "
                         "(is the file complete, and a video, DICOM or image?)")


class _FrameCounter:
    """Counts the frames through the folds' backbones (a forward hook) and reports them as progress."""

    def __init__(self, model: LoadedModel, progress: Progress):
        self.progress = progress
        self.folds = len(model.folds)
        self.name, self.total, self.seen = "predicting", None, 0
        self.handles = [f.net.backbone.register_forward_hook(self._hook) for f in model.folds]

    def _hook(self, module, inputs, output) -> None:
        x = inputs[0]
        self.seen += int(x.shape[0]) if hasattr(x, "shape") else len(x)
        self.progress(self.name, int(np.ceil(self.seen / self.folds)), self.total)

    def stage(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.seen = name, total, 0
        self.progress(name, 0 if total else None, total)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
