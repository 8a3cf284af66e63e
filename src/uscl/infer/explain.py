"""`uscl predict --explain`: Grad-CAM overlays of every input, written under OUT/explain/<input-stem>/.

Per input:

* ``frame_XXXX.png``: overlays of up to 8 evenly spaced frames plus the most
  confident one (highest probability of the explained class);
* ``overlay.mp4``: the whole clip with its overlay (H.264; clips of 2+ frames);
* ``sheet.png``: a contact sheet of the most confident frames, the
  probabilities in the captions and title;
* ``cam.npy``: the maps themselves, float16 (T, H, W) at the model's input size.

Overlays are drawn on the model input itself (the preprocessed, resized frame,
de-normalised), i.e. on what the model actually saw, then enlarged for
viewing when the input is small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uscl.errors import UsclError
from uscl.infer.gradcam import cam_layer_name, explain_frames
from uscl.infer.inputs import to_display, to_model_input, unique_stem
from uscl.infer.model import CLASSIFY, LoadedModel, check_task
from uscl.infer.overlay import overlay, upscale, write_contact_sheet, write_png, write_rgb_mp4
from uscl.infer.predict import InputPrediction
from uscl.utils.atomic import atomic_write_with
from uscl.video.sampling import even_indices

EXPLAIN_DIR = "explain"


@dataclass
class ExplainOptions:
    class_name: str | None = None  # None: each input's predicted class
    frames: int = 8  # evenly spaced overlay PNGs per input (plus the most confident frame)
    sheet: int = 8  # frames on the contact sheet
    display_size: int = 224  # overlays smaller than this are enlarged for viewing
    alpha: float = 0.45
    fps: float | None = None  # clip frame rate; None: the store's sampling rate, else 10
    batch_size: int = 32
    device: str = "cpu"


@dataclass
class ExplainRecord:
    input: str
    folder: Path
    class_name: str
    files: list[str] = field(default_factory=list)


class Explainer:
    """Writes the explanation files of one input at a time (see the module docstring)."""

    def __init__(self, model: LoadedModel, out: str | Path, options: ExplainOptions | None = None):
        self.model = model
        self.options = options or ExplainOptions()
        check_task(model.task, CLASSIFY, str(model.source), "Grad-CAM explains class scores; a segmentation "
                   "or detection model's overlays are its explanation (`uscl predict` without --explain)")
        if model.is_knn:
            raise UsclError("explaining needs class scores with gradients; this is a kNN model, which has none "
                            "(fine-tune with mode paper, full or linear to explain it)")
        if self.options.class_name is not None and self.options.class_name not in model.classes:
            raise UsclError(f"class_name {self.options.class_name!r} is not a class of this model "
                            f"({', '.join(model.classes)})", param="class_name")
        self.root = Path(out) / EXPLAIN_DIR
        self._used: set[str] = set()
        self.records: list[ExplainRecord] = []
        self.how = ("mean of the folds' Grad-CAM maps, each normalised to its maximum" if model.is_ensemble
                    else "Grad-CAM of the one model")

    def folder_for(self, name: str) -> Path:
        return self.root / unique_stem(name, self._used)

    def __call__(self, pred: InputPrediction) -> ExplainRecord:
        if pred.frames is None:
            raise ValueError("the prediction carries no frames to explain")
        opt = self.options
        pp = self.model.preprocessing
        classes = self.model.classes
        cls = opt.class_name or pred.label
        ci = classes.index(cls)
        x = to_model_input(pred.frames, pp.image_size, pp.mean, pp.std, opt.device)
        cams = explain_frames(self.model, x, ci, batch_size=opt.batch_size).maps
        seen = to_display(x, pp.mean, pp.std)
        size = max(opt.display_size, pp.image_size)
        folder = self.folder_for(pred.name)
        rec = ExplainRecord(pred.name, folder, cls)

        conf = pred.frame_probs[:, ci]
        best = int(conf.argmax())
        picks = sorted(set(int(i) for i in even_indices(len(seen), min(opt.frames, len(seen)))) | {best})
        for t in picks:
            img = upscale(overlay(seen[t:t + 1], cams[t:t + 1], opt.alpha), size)[0]
            rec.files.append(write_png(folder / f"frame_{t:04d}.png", img).name)
        if len(seen) > 1:
            clip = upscale(overlay(seen, cams, opt.alpha), size)
            fps = opt.fps or pp.store_options.get("fps") or 10.0
            rec.files.append(write_rgb_mp4(folder / "overlay.mp4", clip, float(fps)).name)
        top = [int(i) for i in np.argsort(-conf, kind="stable")[: opt.sheet]]
        sheet_imgs = list(upscale(overlay(seen[top], cams[top], opt.alpha), size))
        caps = [f"frame {t}\n" + " ".join(f"{c[:5]} {p:.2f}" for c, p in zip(classes, pred.frame_probs[t])) for t in top]
        probs = ", ".join(f"{c} {p:.2f}" for c, p in zip(classes, pred.probs))
        which = (f"ensemble of {len(self.model.folds)} folds" if self.model.is_ensemble
                 else f"fold {self.model.folds[0].fold}")
        title = (f"{_short(pred.name)}\nprediction {pred.label} ({probs}; {pred.agreement:.0%} of frames agree)\n"
                 f"Grad-CAM of '{cls}' on {cam_layer_name(pp.arch).removeprefix('backbone.')}, {which}; "
                 f"most confident frames for '{cls}'")
        rec.files.append(write_contact_sheet(folder / "sheet.png", sheet_imgs, caps, title).name)
        atomic_write_with(folder / "cam.npy", lambda tmp: np.save(tmp, cams.astype(np.float16), allow_pickle=False),
                          suffix=".npy")
        rec.files.append("cam.npy")
        self.records.append(rec)
        return rec

    def describe(self) -> dict:
        """The explanation summary without its per-input records."""
        return {
            "layer": cam_layer_name(self.model.preprocessing.arch),
            "method": "Grad-CAM: ReLU(sum_k mean(dy_c/dA_k) A_k), bilinear upsampling, each map / its maximum",
            "combine": self.how,
            "target": self.options.class_name or "each input's predicted class",
            "overlay_on": f"the model input ({self.model.preprocessing.image_size} px, de-normalised)",
        }

    def record_dict(self, r: "ExplainRecord") -> dict:
        """One input's entry in the summary's ``inputs``."""
        return {"input": r.input, "folder": str(r.folder.relative_to(self.root.parent)), "class": r.class_name,
                "files": r.files}

    def summary(self) -> dict:
        return {**self.describe(), "inputs": [self.record_dict(r) for r in self.records]}


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]
