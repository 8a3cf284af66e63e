"""``MODEL_CARD.md`` and ``model_card.json``: what a fine-tuned model is, how it was judged, how to load it.

A model leaves the project in a run folder or as an export (`uscl export`);
whoever picks it up needs, beside the weights, the task, the data it saw, the
preprocessing, where its backbone came from, how it was evaluated (and any
mark that makes the numbers optimistic), the scores with their uncertainty,
what it must not be used for, and a few lines that load it without `uscl`.

Every value comes from the files the run wrote (``metrics.json``,
``config.yaml``, ``splits.json``, a fold's ``model.json``), the frame store and
the pretraining run's ``config.yaml``; what none of them records is written
``"unknown"``, never guessed. :func:`build_card` is pure (dicts in, dict out),
:func:`render_card` turns the dict into Markdown, :func:`write_card` writes
both atomically. This module sits in ``finetune`` (not ``report``) because
:func:`uscl.finetune.train.finetune` writes the card of every run it makes,
and fine-tuning is below the report stage; `uscl export` calls it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from uscl import __version__
from uscl.checkpoint.inits import parse_init
from uscl.checkpoint.run_files import CONFIG_FILE as PRETRAIN_CONFIG
from uscl.checkpoint.run_files import LABELLED_FILE
from uscl.errors import UsclError
from uscl.finetune.config import DEFAULT_LR, GRADIENT_MODES, SELECTED_ON_TEST
from uscl.finetune.pretraining_labels import LEAKAGE_NOTE
from uscl.finetune.run_folder import CONFIG_FILE, METRICS_FORMAT, SPLITS_FILE, fold_dir
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text
from uscl.utils.config import load_yaml
from uscl.utils.intervals import t_interval

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
CARD_FORMAT = "uscl-model-card"
UNKNOWN = "unknown"
CONFIDENCE = 0.95


def _known(value):
    """``value``, or ``"unknown"`` when nothing recorded it (None or missing)."""
    return UNKNOWN if value is None else value


# -- reading a run (the only part that touches files) ---------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> dict:
    try:
        return load_yaml(path) if path.is_file() else {}
    except UsclError:
        return {}


def read_run(run: str | Path, store=None) -> dict:
    """The inputs of :func:`build_card` for run folder ``run``: its files, the store's counts, the pretraining.

    ``store`` is the open FrameStore when the caller has it (fine-tuning);
    otherwise the store named in config.yaml is opened if it is still there and
    has the run's content (same store id). Missing files give empty dicts.
    """
    run = Path(run)
    metrics = _read_json(run / "metrics.json")
    config = _read_yaml(run / CONFIG_FILE)
    folds_run = metrics.get("folds_run") or []
    model_meta = _read_json(fold_dir(run, folds_run[0]) / "model.json") if folds_run else {}
    if store is None:
        store = _open_store(config.get("store"), metrics.get("store_id"))
    data = data_summary(_read_json(run / SPLITS_FILE), store, config.get("store"), metrics.get("store_id"))
    pretraining = read_pretraining(metrics.get("init_spec") or config.get("init"), metrics.get("init_meta") or {})
    return {"metrics": metrics, "config": config, "model_meta": model_meta, "data": data,
            "pretraining": pretraining}


def _open_store(path, store_id):
    """The run's store if it is still where config.yaml says and holds the same videos; else None."""
    if not path:
        return None
    try:
        store = FrameStore(path, check=False)
    except (UsclError, OSError, ValueError):
        return None
    return store if store_id is None or store.store_id == store_id else None


def data_summary(splits: dict, store, store_path, store_id) -> dict:
    """Videos, frames and patients per class of the videos in the folds (splits.json), and the store.

    Frames come from the store (None here when it is not available: then
    "unknown"); patients from the folds' groups, which name the patient
    wherever the store recorded one.
    """
    labels, groups = splits.get("labels") or {}, splits.get("groups") or {}
    per_class = {}
    for c in splits.get("classes") or sorted(set(labels.values())):
        vids = [v for v, lab in labels.items() if lab == c]
        pats = {groups[v] for v in vids if str(groups.get(v, "")).startswith("patient:")}
        no_patient = sum(1 for v in vids if not str(groups.get(v, "")).startswith("patient:"))
        frames = sum(store[v].num_frames for v in vids) if store is not None else None
        per_class[c] = {"videos": len(vids), "frames": _known(frames),
                        "patients": len(pats) if pats else UNKNOWN, "videos_without_patient": no_patient}
    manifest = getattr(store, "manifest", None) or {}
    return {
        "store": _known(store_path), "store_id": _known(store_id),
        "store_created_by": _known(manifest.get("created_by")),
        "prepare_options": manifest.get("options") if manifest.get("options") else UNKNOWN,
        "videos": len(labels) if labels else UNKNOWN,
        "frames": sum(p["frames"] for p in per_class.values()) if store is not None and per_class else UNKNOWN,
        "per_class": per_class or UNKNOWN,
        "left_out": len(splits.get("excluded") or {}) if splits else UNKNOWN,
    }


def read_pretraining(spec: str | None, init_meta: dict) -> dict | None:
    """For a ``checkpoint:RUN`` init: the pretraining run's method, store, epochs and seed; None otherwise.

    Reads the run's config.yaml (the folder given, or the folder of the file
    given) as :func:`uscl.checkpoint.inits.load_init` and the label check do;
    the backbone's own metadata (``init_meta``) says which epoch it holds.
    """
    try:
        parsed = parse_init(spec) if spec else None
    except UsclError:
        return None
    if parsed is None or parsed.kind != "checkpoint":
        return None
    path = Path(parsed.path)
    run = path if path.is_dir() else path.parent
    cfg = _read_yaml(run / PRETRAIN_CONFIG)
    labelled = _read_json(run / LABELLED_FILE)
    return {
        "run": str(run),
        "config_found": bool(cfg),
        "method": _known(cfg.get("method") or init_meta.get("method")),
        "store": _known(cfg.get("store") or labelled.get("store")),
        "store_id": _known(init_meta.get("store_id") or labelled.get("store_id")),
        "epochs": _known(cfg.get("epochs")),
        "backbone_epoch": _known(init_meta.get("epoch")),
        "backbone_selected_by": _known(init_meta.get("selected_by")),
        "seed": _known(cfg.get("seed")),
        "labelled_videos": len(labelled.get("videos") or []) if labelled else UNKNOWN,
    }


# -- the card (pure) --------------------------------------------------------------------------------
def build_card(metrics: dict, config: dict, model_meta: dict, data: dict, pretraining: dict | None) -> dict:
    """The card of a run as a dict (what model_card.json holds and MODEL_CARD.md shows)."""
    classes = metrics.get("classes") or model_meta.get("classes") or []
    segment = _is_segment(metrics, model_meta)
    detect = _is_detect(metrics, model_meta)
    card = {
        "format": CARD_FORMAT, "version": 1, "written_by": f"uscl {__version__}",
        "task": {"kind": DETECT_KIND if detect else SEGMENT_KIND if segment else
                 "image classification of ultrasound frames; a video's call is the arg-max of its "
                 "frames' mean probabilities",
                 "classes": classes or UNKNOWN, "num_classes": len(classes) if classes else UNKNOWN,
                 "arch": _known(metrics.get("arch") or model_meta.get("arch"))},
        "data": data,
        "preprocessing": preprocessing_section(model_meta),
        "init": init_section(metrics, model_meta, pretraining),
        "evaluation": evaluation_section(metrics, config),
        "metrics": metrics_section(metrics),
    }
    card["intended_use"] = use_section(card)
    card["loading"] = run_loading(metrics, model_meta)
    if segment:  # the accuracy summary above is classification's; a segmentation summary is still to come
        card["metrics"]["note"] = SEGMENT_METRICS_NOTE
    if detect:
        card["metrics"]["note"] = DETECT_METRICS_NOTE
        card["preprocessing"]["note"] = DETECT_INPUT_NOTE
    return card


# the segmentation card is not written yet: the classification card states the task and points at metrics.json
SEGMENT_KIND = ("semantic segmentation of ultrasound frames (task 'segment'): per pixel, probabilities of the "
                "background and of each mask class; the mask is their arg-max (0 background, k = class k)")
SEGMENT_METRICS_NOTE = ("a segmentation model: its Dice, IoU and HD95 per fold are in the run's metrics.json; "
                        "the accuracies on this card do not apply to it")


def _is_segment(*metas: dict) -> bool:
    return any((m or {}).get("task") == "segment" for m in metas)


# nor the detection card: it states the task, points at metrics.json and at the export's sidecar
DETECT_KIND = ("instance detection of ultrasound frames (task 'detect'): Mask R-CNN boxes, instance masks and "
               "scores per mask class; one fold's detector (folds are not averaged)")
DETECT_METRICS_NOTE = ("a detection model: its COCO box and mask mAP and its Dice, IoU and HD95 per fold are in the "
                       "run's metrics.json; the accuracies on this card do not apply to it")
DETECT_INPUT_NOTE = ("a detection model takes the stored frame / 255 as float C x H x W (no other transform): its "
                     "own transform resizes it to min_size and normalises it; the model input above does not apply")
DETECT_LOADING = ("a detection model (torchvision Mask R-CNN on uscl's ResNet-FPN, uscl.models.detector): export it "
                  "with `uscl export --format torchscript` (or onnx) to run it without uscl; the export's JSON "
                  "sidecar describes its input and outputs")


def _is_detect(*metas: dict) -> bool:
    return any((m or {}).get("task") == "detect" for m in metas)


def preprocessing_section(meta: dict) -> dict:
    """What turns a source video into the model's input: the store's prepare, then the evaluation transform."""
    size, mean, std = meta.get("image_size"), meta.get("mean"), meta.get("std")
    channels = meta.get("channels")
    return {
        "image_size": _known(size), "mean": _known(mean), "std": _known(std),
        "store_channels": _known({1: "grey (1)", 3: "rgb (3)"}.get(channels, channels)),
        "model_input": (f"float32 N x 3 x {size} x {size}" if size else UNKNOWN),
        "prepare": _prepare_steps(meta.get("store_options")),
        "transform": (f"resize the stored frame to {size}x{size} (bilinear, antialiased), scale to [0, 1], "
                      f"normalise (x - {mean}) / {std}, repeat grey to 3 channels"
                      if None not in (size, mean, std) else UNKNOWN),
    }


def _prepare_steps(opts: dict | None) -> list[str] | str:
    """The store's ``prepare`` in words, from the options its manifest records."""
    if not opts:
        return UNKNOWN
    size = opts.get("size")
    return [
        f"frames: {_opt(opts, 'fps', 'all frames', 'nearest to multiples of 1/fps, fps={}')}, "
        f"then {_opt(opts, 'max_frames', 'no cap', 'at most {} evenly spaced')}",
        f"channels: {_known(opts.get('channels'))} (grey = ITU-R 601 luma)",
        "crop to the live ultrasound image and mask static overlays" if opts.get("crop")
        else ("no crop" if "crop" in opts else "crop: unknown"),
        (f"resized to {size}x{size} (PIL bilinear; aspect not kept)" if size else
         "native size kept" if size == 0 else "size: unknown"),
    ]


def _opt(opts: dict, key: str, if_none: str, template: str) -> str:
    """A prepare option in words: absent from the manifest is unknown, recorded as None is ``if_none``."""
    if key not in opts:
        return f"{key} unknown"
    return if_none if opts[key] is None else template.format(opts[key])


def init_section(metrics: dict, meta: dict, pretraining: dict | None) -> dict:
    """Where the backbone's starting weights came from; for our pretraining runs, how they were made."""
    spec = metrics.get("init_spec") or meta.get("init")
    kind = str(spec).partition(":")[0] if spec else None
    out = {"spec": _known(spec), "name": _known(metrics.get("init") or meta.get("init_name")),
           "kind": _known(kind)}
    if kind == "checkpoint":
        out["pretraining"] = pretraining if pretraining is not None else UNKNOWN
    return out


def _grouping(data_per_class) -> str:
    if not isinstance(data_per_class, dict) or not data_per_class:
        return UNKNOWN
    no_patient = sum(c["videos_without_patient"] for c in data_per_class.values())
    videos = sum(c["videos"] for c in data_per_class.values())
    if no_patient == 0:
        return "patient (every video's patient is recorded)"
    if no_patient == videos:
        return "video (no patient recorded)"
    return f"patient where recorded, else video ({no_patient} of {videos} videos have no patient)"


def evaluation_section(metrics: dict, config: dict) -> dict:
    """The protocol behind the numbers, with every mark that makes them optimistic."""
    mode = metrics.get("mode") or config.get("mode")
    gradient = mode in GRADIENT_MODES
    lr = config.get("lr") if config.get("lr") is not None else DEFAULT_LR.get(mode)
    marks = [SELECTED_ON_TEST] if metrics.get("selected_on_test") else []
    if metrics.get("pretraining_label_leakage"):
        marks.append(f"{LEAKAGE_NOTE}: {metrics['pretraining_label_leakage'].get('note', '')}".rstrip(": "))
    return {
        "protocol": "k-fold cross-validation; every video is tested in exactly one fold, never trained on there",
        "folds": _known(metrics.get("n_folds")), "folds_run": _known(metrics.get("folds_run")),
        "complete": _known(metrics.get("complete")),
        "coverage": metrics.get("coverage") or ("every fold" if metrics.get("complete") else UNKNOWN),
        "split_method": _known(metrics.get("split_method")), "split_seed": _known(config.get("seed")),
        "mode": _known(mode),
        "epochs": _known(config.get("epochs")) if gradient or mode is None
        else f"not applicable (mode {mode} fits on frozen features)",
        "learning_rate": _known(lr) if gradient or mode is None else "not applicable",
        "batch_size": _known(config.get("batch_size")), "weight_decay": _known(config.get("weight_decay")),
        "selection": _known(metrics.get("selection")),
        "selected_on_test": _known(metrics.get("selected_on_test")),
        "pretraining_label_leakage": metrics.get("pretraining_label_leakage"),
        "marks": marks,
    }


def _interval(values: list) -> dict | str:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return UNKNOWN
    iv = t_interval(vals, CONFIDENCE, "fold")
    return {"mean": iv.mean, "ci_low": iv.lo, "ci_high": iv.hi, "n_folds": iv.n, "std": iv.std, "values": vals}


def metrics_section(metrics: dict) -> dict:
    """Mean and 95% Student-t interval over folds of video and frame accuracy, and the pooled accuracies."""
    folds = metrics.get("folds") or []
    pooled = (metrics.get("summary") or {}).get("pooled") or {}
    return {
        "interval": (f"{CONFIDENCE:.0%} Student-t over folds (uscl.report.stats.t_interval); the folds share "
                     "training videos, so it is optimistic; none with fewer than 2 folds"),
        "video_accuracy": _interval([f.get("video", {}).get("accuracy") for f in folds]),
        "frame_accuracy": _interval([f.get("frame", {}).get("accuracy") for f in folds]),
        "per_fold": [{"fold": f.get("fold"), "video_accuracy": f.get("video", {}).get("accuracy"),
                      "frame_accuracy": f.get("frame", {}).get("accuracy"),
                      "test_videos": f.get("n_test_videos")} for f in folds],
        "pooled": {"video_accuracy": _known(pooled.get("video", {}).get("accuracy")),
                   "frame_accuracy": _known(pooled.get("frame", {}).get("accuracy"))},
        "warning": metrics.get("warning"),
    }


def use_section(card: dict) -> dict:
    """Intended use and limits, naming the data the model was trained on."""
    data, ev = card["data"], card["evaluation"]
    classes = card["task"]["classes"]
    limits = [
        "evaluated only by cross-validation on the same frame store it was trained on; no external test set",
        "calls only these classes: " + (", ".join(classes) if isinstance(classes, list) else UNKNOWN)
        + "; any other finding is forced into one of them",
    ]
    limits += [f"results marked: {m}" for m in ev["marks"]]
    if ev["complete"] is False:
        limits.append(f"a partial evaluation ({ev['coverage']}), not a full k-fold estimate")
    return {
        "intended_use": "research only: comparing pretraining methods and initialisations on ultrasound videos",
        "not_a_medical_device": "not a medical device; not validated for diagnosis, triage or any clinical decision",
        "trained_on": (f"{data['videos']} videos of frame store {data['store']} (id {data['store_id']}), "
                       f"classes {', '.join(classes) if isinstance(classes, list) else UNKNOWN}"),
        "limits": limits,
    }


# -- loading without uscl ------------------------------------------------------------------------
def _input_lines(size, mean, std, array: str) -> list[str]:
    return [f"# x: float32 N x 3 x {size} x {size}: the frames prepared as under Preprocessing, scaled to [0, 1],",
            f"# grey repeated to 3 channels, then (x - {mean}) / {std}",
            f"x = {array}"]


def run_loading(metrics: dict, meta: dict) -> dict:
    """A fold of a run folder, loaded with torchvision + safetensors (a kNN fold has no linear head)."""
    folds = metrics.get("folds_run") or ([meta["fold"]] if meta.get("fold") is not None else [])
    if not folds or not meta:
        return {"how": UNKNOWN, "snippet": None}
    if _is_detect(meta):
        return {"how": DETECT_LOADING, "snippet": None}
    if _is_segment(meta):
        return {"how": "a segmentation model (ResNet encoder + U-Net decoder, uscl.models.segmenter): export it "
                       "with `uscl export --format onnx` or `--format torchscript` to run it without uscl",
                "snippet": None}
    if meta.get("head") == "knn":
        return {"how": "a kNN model (feature bank, no linear head): export it with `uscl export --format onnx` "
                       "or `--format torchscript` to run it without uscl", "snippet": None}
    size, arch, classes = meta.get("image_size"), meta.get("arch") or "resnet18", meta.get("classes") or []
    lines = ["import torch", "import torchvision", "from safetensors.torch import load_file", "",
             f"CLASSES = {classes!r}",
             f'sd = load_file("fold{folds[0]}/model.safetensors")  # any fold{{k}}/ of {list(folds)}',
             'state = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}',
             'state["fc.weight"], state["fc.bias"] = sd["head.weight"], sd["head.bias"]',
             f"net = torchvision.models.{arch}(num_classes=len(CLASSES))",
             "net.load_state_dict(state)", "net.eval()",
             *_input_lines(size, meta.get("mean"), meta.get("std"), f"torch.zeros(1, 3, {size}, {size})"),
             "with torch.no_grad():", "    probs = net(x).softmax(1)  # columns in the order of CLASSES"]
    return {"how": f"torchvision {arch} + safetensors (one fold; the folds are separate models)",
            "snippet": "\n".join(lines)}


def export_loading(fmt: str, file: str, meta: dict) -> dict:
    """How to run an exported file: onnxruntime, torch.jit.load, or torchvision + safetensors."""
    size, classes = meta.get("image_size"), meta.get("classes") or []
    head = _input_lines(size, meta.get("mean"), meta.get("std"), "")[:2]
    if _is_detect(meta):
        how = {"torchscript": f'losses, detections = torch.jit.load("{file}")(images)',
               "onnx": f'onnxruntime.InferenceSession("{file}"), one image (C, H, W) per run',
               "safetensors": "uscl.models.detector.build_detector(**sidecar['build_detector']) + load_state_dict"}
        return {"how": f"{how.get(fmt, fmt)}; images: the preprocessed frames / 255 as float (C, H, W); "
                       "see the JSON sidecar for the outputs", "snippet": None}
    if _is_segment(meta):
        return _segment_export_loading(fmt, file, meta, head)
    if fmt == "onnx":
        lines = ["import numpy as np", "import onnxruntime as ort", "", f"CLASSES = {classes!r}",
                 f'sess = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])', *head,
                 f"x = np.zeros((1, 3, {size}, {size}), np.float32)",
                 'probs = sess.run(["probabilities"], {"input": x})[0]  # columns in the order of CLASSES']
        return {"how": "onnxruntime", "snippet": "\n".join(lines)}
    if fmt == "torchscript":
        lines = ["import torch", "", f"CLASSES = {classes!r}",
                 f'net = torch.jit.load("{file}", map_location="cpu").eval()', *head,
                 f"x = torch.zeros(1, 3, {size}, {size})",
                 "with torch.no_grad():", "    probs = net(x)  # probabilities, columns in the order of CLASSES"]
        return {"how": "torch.jit.load", "snippet": "\n".join(lines)}
    arch = meta.get("arch") or "resnet18"
    lines = ["import torch", "import torchvision", "from safetensors.torch import load_file", "",
             f"CLASSES = {classes!r}", f"net = torchvision.models.{arch}(num_classes=len(CLASSES))",
             f'net.load_state_dict(load_file("{file}"))', "net.eval()", *head,
             f"x = torch.zeros(1, 3, {size}, {size})",
             "with torch.no_grad():", "    probs = net(x).softmax(1)  # the network returns logits"]
    return {"how": f"torchvision {arch} + safetensors", "snippet": "\n".join(lines)}


def _segment_export_loading(fmt: str, file: str, meta: dict, head: list[str]) -> dict:
    """How to run an exported segmentation model: per-pixel probabilities N x (K+1) x H x W."""
    size, arch = meta.get("image_size"), meta.get("arch") or "resnet18"
    labels = ["background", *(meta.get("mask_classes") or meta.get("classes") or [])]
    tail = "masks = probs.argmax(1)  # N x H x W: 0 background, k = LABELS[k]"
    if fmt == "onnx":
        lines = ["import numpy as np", "import onnxruntime as ort", "", f"LABELS = {labels!r}",
                 f'sess = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])', *head,
                 f"x = np.zeros((1, 3, {size}, {size}), np.float32)",
                 'probs = sess.run(["probabilities"], {"input": x})[0]  # N x len(LABELS) x H x W', tail]
        return {"how": "onnxruntime", "snippet": "\n".join(lines)}
    if fmt == "torchscript":
        lines = ["import torch", "", f"LABELS = {labels!r}",
                 f'net = torch.jit.load("{file}", map_location="cpu").eval()', *head,
                 f"x = torch.zeros(1, 3, {size}, {size})",
                 "with torch.no_grad():", "    probs = net(x)  # N x len(LABELS) x H x W probabilities", tail]
        return {"how": "torch.jit.load", "snippet": "\n".join(lines)}
    lines = ["import torch", "from safetensors.torch import load_file",
             "from uscl.models.segmenter import build_segmenter  # the network's code is uscl's", "",
             f"LABELS = {labels!r}", f'net = build_segmenter("{arch}", len(LABELS) - 1)',
             f'net.load_state_dict(load_file("{file}"))', "net.eval()", *head,
             f"x = torch.zeros(1, 3, {size}, {size})",
             "with torch.no_grad():", "    probs = net(x).softmax(1)  # the network returns logits", tail]
    return {"how": f"uscl's {arch} segmenter + safetensors", "snippet": "\n".join(lines)}


def export_card(base: dict, export: dict, meta: dict, folds: list) -> dict:
    """The run's card with the exported file: its format, which folds it holds, and how to load it.

    A single fold's own test scores are added; an ensemble of every fold was
    never tested on held-out videos, and the card says so.
    """
    card = dict(base)
    per_fold = {f.get("fold"): f for f in (base.get("metrics") or {}).get("per_fold", [])}
    if len(folds) == 1:
        own = per_fold.get(folds[0])
        scope = (f"fold {folds[0]}'s own test videos: video accuracy {own['video_accuracy']}, frame accuracy "
                 f"{own['frame_accuracy']} ({own['test_videos']} videos)" if own else
                 f"fold {folds[0] if folds[0] is not None else UNKNOWN}: its test scores are unknown")
    else:
        scope = ("an ensemble averaging folds " + ", ".join(map(str, folds)) + ": it was trained on every video, "
                 "so no held-out estimate exists for it; the cross-validation scores describe single fold models")
    card["export"] = {**export, "folds": folds, "metrics_scope": scope}
    card["loading"] = export_loading(export["format"], export["file"], meta)
    return card


# -- writing ---------------------------------------------------------------------------------------
def card_paths(folder: Path, stem: str | None = None) -> tuple[Path, Path]:
    """MODEL_CARD.md and model_card.json in ``folder``; with ``stem``, ``STEM.MODEL_CARD.md`` and so on
    (several exports may share a folder)."""
    pre = f"{stem}." if stem else ""
    return folder / f"{pre}{CARD_MD}", folder / f"{pre}{CARD_JSON}"


def write_card(card: dict, folder: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Both files, atomically: the Markdown and the same content as JSON."""
    md, js = card_paths(Path(folder), stem)
    atomic_write_json(js, card)
    atomic_write_text(md, render_card(card))
    return md, js


def write_run_card(run: str | Path, store=None) -> dict:
    """Build the card of run folder ``run`` from its files and write it there; returns the card."""
    card = build_card(**read_run(run, store))
    write_card(card, run)
    return card


def find_run(path: str | Path) -> Path | None:
    """The fine-tuning run folder holding ``path`` (a run, a fold folder or a fold's model file)."""
    p = Path(path)
    start = p if p.is_dir() else p.parent
    for d in (start, start.parent):
        if _read_json(d / "metrics.json").get("format") == METRICS_FORMAT:
            return d
    return None


# -- Markdown ----------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) if v else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return "unknown" if v is None else str(v)


def _rows(section: dict, skip=()) -> list[str]:
    return [f"- **{k.replace('_', ' ')}**: {_fmt(v)}" for k, v in section.items() if k not in skip]


def _ci_text(m) -> str:
    if not isinstance(m, dict):
        return UNKNOWN
    if m["ci_low"] is None:
        return f"{m['mean']:.3f} (no CI: {m['n_folds']} fold)"
    return f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] over {m['n_folds']} folds"


def render_card(card: dict) -> str:
    """MODEL_CARD.md: the dict's content as headed sections; marks and the snippet set apart."""
    t, ev, m = card["task"], card["evaluation"], card["metrics"]
    title = ", ".join(t["classes"]) if isinstance(t["classes"], list) else UNKNOWN
    out = [f"# Model card: {t['arch']} ({title})", ""]
    for mark in ev["marks"]:
        out += [f"> **{mark}**", ""]
    out += ["## Task", "", *_rows(t), "", "## Data", "", *_rows(card["data"], skip=("per_class",))]
    if isinstance(card["data"]["per_class"], dict):
        out += ["", "| class | videos | frames | patients |", "|---|---|---|---|"]
        out += [f"| {c} | {d['videos']} | {d['frames']} | {d['patients']}"
                + (f" (+{d['videos_without_patient']} videos without a patient)"
                   if d["videos_without_patient"] and d["patients"] != UNKNOWN else "") + " |"
                for c, d in card["data"]["per_class"].items()]
    out += ["", "## Preprocessing", "", *_rows(card["preprocessing"], skip=("prepare",)), "- **prepare**:"]
    prep = card["preprocessing"]["prepare"]
    out += [f"  - {s}" for s in prep] if isinstance(prep, list) else [f"  - {prep}"]
    init = card["init"]
    out += ["", "## Init", "", *_rows(init, skip=("pretraining",))]
    if isinstance(init.get("pretraining"), dict):
        out += ["- **pretraining run**:", *[f"  - {k.replace('_', ' ')}: {_fmt(v)}"
                                            for k, v in init["pretraining"].items()]]
    elif "pretraining" in init:
        out += ["- **pretraining run**: unknown"]
    out += ["", "## Evaluation", "", *_rows(ev, skip=("marks", "pretraining_label_leakage"))]
    out += ["", "## Metrics", "", f"- video accuracy: {_ci_text(m['video_accuracy'])}",
            f"- frame accuracy: {_ci_text(m['frame_accuracy'])}",
            f"- pooled over the folds' test predictions: video accuracy {_fmt(m['pooled']['video_accuracy'])}, "
            f"frame accuracy {_fmt(m['pooled']['frame_accuracy'])}", f"- interval: {m['interval']}"]
    out += [f"- fold {f['fold']}: video {_fmt(f['video_accuracy'])}, frame {_fmt(f['frame_accuracy'])} "
            f"({_fmt(f['test_videos'])} test videos)" for f in m["per_fold"]]
    if m.get("note"):
        out += [f"- **note**: {m['note']}"]
    if "export" in card:
        out += ["", "## Export", "", *_rows(card["export"])]
    u = card["intended_use"]
    out += ["", "## Intended use and limits", "", *_rows(u, skip=("limits",)), "- **limits**:",
            *[f"  - {x}" for x in u["limits"]]]
    load = card["loading"]
    out += ["", "## Loading without uscl", "", f"{load['how']}", ""]
    out += ["```python", load["snippet"], "```", ""] if load.get("snippet") else []
    return "\n".join(out).rstrip() + "\n"
