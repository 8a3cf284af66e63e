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

The card follows the run's task (``metrics.json`` / ``model.json`` ``"task"``):
classification (the video's class), or a dense task, segmentation (U-Net) or
detection (Mask R-CNN), whose card names the mask classes and what an output
value means, counts the masked frames per video label and per mask class,
reports Dice, IoU and HD95 (and for detection COCO mAP) with their intervals
over folds, and shows how to run the model without uscl where that is possible.
"""

from __future__ import annotations

import json
from pathlib import Path

from uscl import __version__
from uscl.checkpoint.inits import parse_init
from uscl.checkpoint.run_files import CONFIG_FILE as PRETRAIN_CONFIG
from uscl.checkpoint.run_files import LABELLED_FILE
from uscl.errors import UsclError
from uscl.finetune.config import DEFAULT_LR, GRADIENT_MODES, SELECTED_ON_TEST, default_lr
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
CLASSIFY, SEGMENT, DETECT = "classify", "segment", "detect"
TASK_WORDS = {CLASSIFY: "classification", SEGMENT: "segmentation", DETECT: "detection"}
DENSE_TASKS = (SEGMENT, DETECT)


def card_task(*metas: dict) -> str:
    """The task the first of ``metas`` that records one names ("classify" when none does)."""
    for m in metas:
        if (m or {}).get("task"):
            return str(m["task"])
    return CLASSIFY


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
    summary = dense_data_summary if card_task(metrics, model_meta) in DENSE_TASKS else data_summary
    data = summary(_read_json(run / SPLITS_FILE), store, config.get("store"), metrics.get("store_id"))
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
    task = card_task(metrics, model_meta)
    if task in DENSE_TASKS:
        return build_dense_card(task, metrics, config, model_meta, data, pretraining)
    classes = metrics.get("classes") or model_meta.get("classes") or []
    card = {
        "format": CARD_FORMAT, "version": 1, "written_by": f"uscl {__version__}",
        "task": {"task": TASK_WORDS[CLASSIFY],
                 "kind": "image classification of ultrasound frames; a video's call is the arg-max of its "
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
    return card


def _is_segment(*metas: dict) -> bool:
    return card_task(*metas) == SEGMENT


def _is_detect(*metas: dict) -> bool:
    return card_task(*metas) == DETECT


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


def classifier_key(arch: str) -> str:
    """Where torchvision's ``arch`` keeps its final Linear (``fc``, ``classifier.3``...): the head's keys there."""
    from uscl.models.families import FAMILIES  # torchvision: imported when first asked for

    fam = FAMILIES.get(arch)
    return fam.classifier if fam is not None else "fc"


def run_loading(metrics: dict, meta: dict) -> dict:
    """A fold of a run folder, loaded with torchvision + safetensors (a kNN fold has no linear head)."""
    folds = metrics.get("folds_run") or ([meta["fold"]] if meta.get("fold") is not None else [])
    if not folds or not meta:
        return {"how": UNKNOWN, "snippet": None}
    if meta.get("head") == "knn":
        return {"how": "a kNN model (feature bank, no linear head): export it with `uscl export --format onnx` "
                       "or `--format torchscript` to run it without uscl", "snippet": None}
    size, arch, classes = meta.get("image_size"), meta.get("arch") or "resnet18", meta.get("classes") or []
    head = classifier_key(arch)
    lines = ["import torch", "import torchvision", "from safetensors.torch import load_file", "",
             f"CLASSES = {classes!r}",
             f'sd = load_file("fold{folds[0]}/model.safetensors")  # any fold{{k}}/ of {list(folds)}',
             'state = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}',
             f'state["{head}.weight"], state["{head}.bias"] = sd["head.weight"], sd["head.bias"]',
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
        return {"how": "onnxruntime", "snippet": "\n".join(segment_onnx_lines(file, meta))}
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


def segment_onnx_lines(file: str, meta: dict) -> list[str]:
    """onnxruntime + numpy + PIL: an exported segmenter's label maps at the stored frame size."""
    size, mean, std = meta.get("image_size"), meta.get("mean"), meta.get("std")
    labels = ["background", *(meta.get("mask_classes") or meta.get("classes") or [])]
    frame = (meta.get("store_options") or {}).get("size")
    frame_line = (f"H, W = {frame}, {frame}  # the stored frames' size (the store's prepare size)" if frame else
                  f"H, W = {size}, {size}  # put the stored frame's own height and width here (not recorded)")
    return ["import numpy as np", "import onnxruntime as ort", "from PIL import Image", "",
            f"LABELS = {labels!r}  # a label map value k means LABELS[k]; 0 is background",
            f'sess = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])',
            *_input_lines(size, mean, std, f"np.zeros((1, 3, {size}, {size}), np.float32)"),
            f'probs = sess.run(["probabilities"], {{"input": x}})[0]  # N x len(LABELS) x {size} x {size}, '
            "per-pixel softmax",
            frame_line,
            "# back to the frame size: each channel bilinear, then the arg-max (uscl resizes the logits with",
            "# torch's bilinear, align_corners=False, before the softmax: a few boundary pixels may differ)",
            "full = np.stack([np.stack([np.asarray(Image.fromarray(c).resize((W, H), Image.BILINEAR)) for c in p])",
            "                 for p in probs])",
            "label_map = full.argmax(1).astype(np.uint8)  # N x H x W: 0 background, k = LABELS[k]"]


def export_card(base: dict, export: dict, meta: dict, folds: list) -> dict:
    """The run's card with the exported file: its format, which folds it holds, and how to load it.

    A single fold's own test scores are added; an ensemble of every fold was
    never tested on held-out videos, and the card says so.
    """
    card = dict(base)
    per_fold = {f.get("fold"): f for f in (base.get("metrics") or {}).get("per_fold", [])}
    dense = base.get("task", {}).get("task") in (TASK_WORDS[SEGMENT], TASK_WORDS[DETECT])
    if len(folds) == 1:
        own = per_fold.get(folds[0])
        if own and dense:
            scope = (f"fold {folds[0]}'s own test videos: mean Dice {_fmt(own['dice'])}, IoU {_fmt(own['iou'])}, "
                     f"HD95 {_fmt(own['hd95'])} px ({_fmt(own['test_videos'])} videos, "
                     f"{_fmt(own['test_images'])} images)")
        elif own:
            scope = (f"fold {folds[0]}'s own test videos: video accuracy {own['video_accuracy']}, frame accuracy "
                     f"{own['frame_accuracy']} ({own['test_videos']} videos)")
        else:
            scope = f"fold {folds[0] if folds[0] is not None else UNKNOWN}: its test scores are unknown"
    else:
        scope = ("an ensemble averaging folds " + ", ".join(map(str, folds)) + ": it was trained on every video, "
                 "so no held-out estimate exists for it; the cross-validation scores describe single fold models")
    card["export"] = {**export, "folds": folds, "metrics_scope": scope}
    card["loading"] = export_loading(export["format"], export["file"], meta)
    return card


# -- dense tasks: segmentation and detection ----------------------------------------------------------
DETECTION_KEYS = {"bbox_map50": "box mAP@0.5", "bbox_map": "box mAP@[.5:.95]",
                  "segm_map50": "mask mAP@0.5", "segm_map": "mask mAP@[.5:.95]"}
DENSE_METRICS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 (px)"}
# the label maps a detector's Dice is computed on: instances scoring at least this
# (uscl.finetune.detect.fold.SCORE_THRESHOLD, not recorded per run; kept equal by a test)
DETECT_SCORE_THRESHOLD = 0.5
DENSE_USE = {SEGMENT: "research only: comparing pretraining methods and initialisations on ultrasound "
                      "segmentation of the mask classes below",
             DETECT: "research only: comparing pretraining methods and initialisations on ultrasound detection "
                     "and instance segmentation of the mask classes below"}
NOT_A_DEVICE = "not a medical device; not validated for diagnosis, triage or any clinical decision"


def _is_patient(group) -> bool:
    return str(group or "").startswith("patient:")


def dense_data_summary(splits: dict, store, store_path, store_id) -> dict:
    """The masked videos of a segmentation/detection run: per video label and per mask class.

    The videos are those of the folds (splits.json ``labels``: video -> its
    video label, None when unlabelled); frames, and the images holding each
    mask class, come from the store (each record's ``extra["mask_counts"]``),
    "unknown" when it is not available or a record lacks the counts. Every
    frame of a masked video has a mask (one label map per stored frame).
    """
    labels, groups = splits.get("labels") or {}, splits.get("groups") or {}
    classes = splits.get("classes") or []
    excluded = splits.get("excluded") or {}
    recs = {v: store[v] for v in labels} if store is not None else {}
    per_label = {}
    for lab in sorted({str(x) if x not in (None, "") else "unlabelled" for x in labels.values()}):
        vids = [v for v, x in labels.items() if (str(x) if x not in (None, "") else "unlabelled") == lab]
        pats = {groups[v] for v in vids if _is_patient(groups.get(v))}
        per_label[lab] = {"videos": len(vids),
                          "frames": sum(recs[v].num_frames for v in vids) if recs else UNKNOWN,
                          "patients": len(pats) if pats else UNKNOWN,
                          "videos_without_patient": sum(1 for v in vids if not _is_patient(groups.get(v)))}
    per_class = {}
    for c in classes:
        counts = [((recs[v].extra or {}).get("mask_counts") or {}).get(c) for v in labels] if recs else [None]
        if not labels or any(n is None for n in counts):
            per_class[c] = {"images": UNKNOWN, "videos": UNKNOWN, "pixels": UNKNOWN}
        else:
            per_class[c] = {"images": sum(int(n.get("frames", 0)) for n in counts),
                            "videos": sum(1 for n in counts if int(n.get("frames", 0)) > 0),
                            "pixels": sum(int(n.get("pixels", 0)) for n in counts)}
    manifest = getattr(store, "manifest", None) or {}
    reasons: dict = {}
    for r in excluded.values():
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "store": _known(store_path), "store_id": _known(store_id),
        "store_created_by": _known(manifest.get("created_by")),
        "prepare_options": manifest.get("options") if manifest.get("options") else UNKNOWN,
        "mask_classes": classes or UNKNOWN,
        "store_videos": len(store.videos) if store is not None else UNKNOWN,
        "store_videos_with_masks": len(store.videos_with_masks) if store is not None else UNKNOWN,
        "videos": len(labels) if labels else UNKNOWN,
        "frames": sum(p["frames"] for p in per_label.values()) if recs and per_label else UNKNOWN,
        "per_label": per_label or UNKNOWN,
        "per_class": per_class or UNKNOWN,
        "left_out": len(excluded) if splits else UNKNOWN,
        "left_out_no_mask": sum(1 for r in excluded.values() if r == "no mask") if splits else UNKNOWN,
        "left_out_reasons": reasons if splits else UNKNOWN,
    }


def build_dense_card(task: str, metrics: dict, config: dict, model_meta: dict, data: dict,
                     pretraining: dict | None) -> dict:
    """The card of a segmentation or detection run (what :func:`build_card` returns for those tasks)."""
    classes = metrics.get("classes") or model_meta.get("mask_classes") or model_meta.get("classes") or []
    card = {
        "format": CARD_FORMAT, "version": 1, "written_by": f"uscl {__version__}",
        "task": dense_task_section(task, classes, metrics, model_meta),
        "data": data,
        "preprocessing": dense_preprocessing_section(task, model_meta),
        "init": init_section(metrics, model_meta, pretraining),
        "evaluation": dense_evaluation_section(task, metrics, config, model_meta, data),
        "metrics": dense_metrics_section(task, metrics, classes),
    }
    card["intended_use"] = dense_use_section(task, card)
    card["loading"] = dense_run_loading(task, metrics, model_meta)
    return card


def dense_task_section(task: str, classes: list, metrics: dict, meta: dict) -> dict:
    labels = ["background", *classes] if classes else UNKNOWN
    values = ("0 = background, " + ", ".join(f"{k} = {c}" for k, c in enumerate(classes, 1))) if classes else UNKNOWN
    if task == SEGMENT:
        kind = "semantic segmentation of ultrasound frames: a class for every pixel"
        output = ("per pixel, probabilities of the background (channel 0) and of each mask class (channel k = "
                  "mask class k), at the input size; the label map is their arg-max, resized to the frame size")
    else:
        kind = "instance detection and segmentation of ultrasound frames (Mask R-CNN): boxes and masks of objects"
        output = ("per image: boxes (x1, y1, x2, y2 in the input's pixels), labels 1..K (k = mask class k; 0, the "
                  "background, is never output), scores, and a mask probability per instance (binarised at 0.5); "
                  f"for Dice the instances scoring >= {DETECT_SCORE_THRESHOLD} are painted into a label map "
                  "(most confident last), 0 = background")
    return {"task": TASK_WORDS[task], "kind": kind, "classes": classes or UNKNOWN,
            "num_classes": len(classes) if classes else UNKNOWN, "labels": labels, "label_values": values,
            "output": output, "arch": _known(metrics.get("arch") or meta.get("arch")),
            "head": _known(meta.get("head"))}


def dense_preprocessing_section(task: str, meta: dict) -> dict:
    """As classification's for a segmenter (plus the resize back); a detector resizes and normalises itself."""
    out = preprocessing_section(meta)
    mean, std = meta.get("mean"), meta.get("std")
    if task == SEGMENT:
        out["output_resize"] = ("the logits are resized (bilinear) to the stored frame size before the arg-max, "
                                "so scores are against the stored masks at that size")
        return out
    lo, hi = meta.get("min_size"), meta.get("max_size")
    out["model_input"] = ("a list of float32 C x H x W images in [0, 1]: the stored frames, not normalised "
                          "(C = 1 grey in uscl; a plain torchvision rebuild needs the grey repeated to 3)")
    out["transform"] = (f"the detector's own GeneralizedRCNNTransform: resize so the short side is {lo} "
                        f"(the long side at most {hi}), normalise (x - {mean}) / {std}; boxes and masks come "
                        "back at the input image's size"
                        if None not in (lo, hi, mean, std) else UNKNOWN)
    return out


def dense_evaluation_section(task: str, metrics: dict, config: dict, meta: dict, data: dict) -> dict:
    mode = metrics.get("mode") or config.get("mode")
    lr = config.get("lr") if config.get("lr") is not None else (
        meta.get("lr") if meta.get("lr") is not None else (default_lr(task, mode) if config else None))
    selection = metrics.get("selection")
    rule = (UNKNOWN if selection is None else
            "the last epoch's weights (no selection)" if str(selection).startswith("last") else
            "the epoch with the best validation mean Dice; validation videos carved from the training fold, "
            "never the test fold" if str(selection).startswith("val") else str(selection))
    marks = [SELECTED_ON_TEST] if metrics.get("selected_on_test") else []
    if metrics.get("pretraining_label_leakage"):
        marks.append(f"{LEAKAGE_NOTE}: {metrics['pretraining_label_leakage'].get('note', '')}".rstrip(": "))
    k = metrics.get("n_folds")
    scoring = ("per test frame and mask class against the stored mask, at the stored frame size: Dice, IoU, HD95 "
               "(medpy's, in pixels); a class's mean is over the frames whose truth holds it; frames without it "
               "count as false positives when anything is predicted, reported apart")
    if task == DETECT:
        scoring += (f"; Dice/IoU/HD95 on label maps of the instances scoring >= {DETECT_SCORE_THRESHOLD}; box and "
                    "mask mAP@0.5 and mAP@[.5:.95] by pycocotools over all instances of the fold's test frames")
    return {
        "protocol": (f"{_known(k)}-fold cross-validation over the videos with masks, grouped by patient where the "
                     "store records one (else by video), stratified by video label when every label has enough "
                     "videos; every video is tested in exactly one fold, never trained on there"),
        "folds": _known(k), "folds_run": _known(metrics.get("folds_run")),
        "complete": _known(metrics.get("complete")),
        "coverage": metrics.get("coverage") or ("every fold" if metrics.get("complete") else UNKNOWN),
        "split_method": _known(metrics.get("split_method")), "split_seed": _known(config.get("seed")),
        "grouping": _grouping(data.get("per_label")),
        "mode": _known(mode), "trainable": _known(meta.get("trainable")),
        "epochs": _known(config.get("epochs") if config.get("epochs") is not None else meta.get("epochs")),
        "learning_rate": _known(lr),
        "encoder_lr": _known(config.get("encoder_lr") if config.get("encoder_lr") is not None
                             else meta.get("encoder_lr")),
        "batch_size": _known(config.get("batch_size")), "weight_decay": _known(config.get("weight_decay")),
        "train_frames_per_video": (_known(config.get("max_frames_per_video")) if config.get("max_frames_per_video")
                                   else ("all" if config else UNKNOWN)),
        "selection": _known(selection), "selection_rule": rule,
        "selected_on_test": _known(metrics.get("selected_on_test")),
        "scoring": scoring,
        "pretraining_label_leakage": metrics.get("pretraining_label_leakage"),
        "marks": marks,
    }


NO_IMAGE = "n/a: no test image holds the class"
ALL_MISSED = "undefined: nothing of the class was predicted on any image holding it"
NO_EMPTY = "n/a: every test image holds the class"
NO_FOLD_VALUE = "undefined in every fold"


def _stats(s) -> dict | str:
    """metrics.json's ``{mean, std, lo, hi, n, values}`` in the card's interval form (the same numbers).

    Not recorded: "unknown"; recorded with no fold having a value (e.g. HD95 where every structure was
    missed, mAP with nothing to detect): "undefined in every fold"."""
    if not isinstance(s, dict) or "mean" not in s:
        return UNKNOWN
    if s["mean"] is None:
        return NO_FOLD_VALUE
    return {"mean": s["mean"], "ci_low": s.get("lo"), "ci_high": s.get("hi"), "n_folds": s.get("n"),
            "std": s.get("std"), "values": s.get("values")}


def _pooled_class(c: dict | None) -> dict:
    keys = ("images", "dice", "iou", "hd95", "missed", "video_dice", "videos", "empty_truth_images",
            "false_positive_share", "mean_false_positive_area")
    if not isinstance(c, dict):
        return dict.fromkeys(keys, UNKNOWN)
    empty = c.get("empty_truth") or {}
    n, n_empty = c.get("n_images"), empty.get("n")

    def value(v, why_none):
        return v if v is not None else (why_none if why_none else UNKNOWN)

    none_held = NO_IMAGE if n == 0 else None
    return {"images": _known(n), "dice": value(c.get("dice"), none_held), "iou": value(c.get("iou"), none_held),
            "hd95": value(c.get("hd95"), none_held or (ALL_MISSED if n and c.get("n_hd95") == 0 else None)),
            "missed": _known(c.get("n_missing")), "video_dice": value(c.get("video_dice"), none_held),
            "videos": _known(c.get("n_videos")), "empty_truth_images": _known(n_empty),
            "false_positive_share": value(empty.get("fp_share"), NO_EMPTY if n_empty == 0 else None),
            "mean_false_positive_area": value(empty.get("mean_fp_area"), NO_EMPTY if n_empty == 0 else None)}


def dense_metrics_section(task: str, metrics: dict, classes: list) -> dict:
    """Dice, IoU, HD95 over folds at image and video level (and detection's mAPs), the pooled per-class view."""
    summary = metrics.get("summary") or {}
    pooled = (metrics.get("pooled") or {}).get("per_class") or {}
    per_fold = []
    for f in metrics.get("folds") or []:
        macro = (f.get("summary") or {}).get("macro") or {}
        def macro_value(key):  # None in a recorded summary: no class had a value (e.g. every HD95 missed)
            return macro[key] if macro.get(key) is not None else ("undefined" if key in macro else UNKNOWN)

        row = {"fold": f.get("fold"), "test_videos": _known(f.get("n_test_videos")),
               "test_images": _known(f.get("n_test_images")),
               **{m: macro_value(m) for m in DENSE_METRICS},
               **{f"video_{m}": macro_value(f"video_{m}") for m in DENSE_METRICS}}
        if task == DETECT:
            coco = f.get("coco") or {}
            row.update({k: (UNKNOWN if coco.get(k) is None else "undefined" if coco[k] != coco[k] else coco[k])
                        for k in DETECTION_KEYS})
        per_fold.append(row)
    out = {
        "interval": (f"{CONFIDENCE:.0%} Student-t over folds of each fold's mean over the classes "
                     "(uscl.utils.intervals.t_interval); the folds share training videos, so it is optimistic; "
                     "none with fewer than 2 folds"),
        "hd95_unit": "pixels of the stored frame (no pixel spacing is recorded, so not millimetres)",
        "image": {m: _stats((summary.get("image") or {}).get(m)) for m in DENSE_METRICS},
        "video": {m: _stats((summary.get("video") or {}).get(m)) for m in DENSE_METRICS},
        "per_class": {c: _pooled_class(pooled.get(str(i)) or pooled.get(i))
                      for i, c in enumerate(classes, 1)} or UNKNOWN,
        "per_class_note": ("pooled over every fold's test images: a class's Dice/IoU/HD95 average the images whose "
                           "truth holds it; missed = such images with nothing of the class predicted (HD95 "
                           "undefined there, left out of its mean); false-positive share = share of the images "
                           "without the class where some of it was predicted"),
        "per_fold": per_fold,
        "warning": metrics.get("warning"),
    }
    if task == DETECT:
        out["detection"] = {k: _stats((summary.get("detection") or {}).get(k)) for k in DETECTION_KEYS}
    return out


def dense_use_section(task: str, card: dict) -> dict:
    data, ev, classes = card["data"], card["evaluation"], card["task"]["classes"]
    names = ", ".join(classes) if isinstance(classes, list) else UNKNOWN
    limits = [
        "evaluated only by cross-validation on the same frame store it was trained on; no external test set",
        f"finds only these mask classes: {names}; any other structure is background to it or is taken for "
        "one of them",
        "HD95 is in pixels of the stored frames, not millimetres",
    ]
    if task == DETECT:
        limits.append("trained and tested on frames at the run's image size; torchvision's detector resizes "
                      "other sizes to it")
    limits += [f"results marked: {m}" for m in ev["marks"]]
    if ev["complete"] is False:
        limits.append(f"a partial evaluation ({ev['coverage']}), not a full k-fold estimate")
    return {
        "intended_use": DENSE_USE[task],
        "not_a_medical_device": NOT_A_DEVICE,
        "trained_on": (f"{data['videos']} videos with masks of frame store {data['store']} "
                       f"(id {data['store_id']}), mask classes {names}"),
        "limits": limits,
    }


def dense_run_loading(task: str, metrics: dict, meta: dict) -> dict:
    """Segmentation: export to ONNX and run it with onnxruntime. Detection: torchvision's MaskRCNN rebuilt."""
    folds = metrics.get("folds_run") or ([meta["fold"]] if meta.get("fold") is not None else [])
    if not folds or not meta:
        return {"how": UNKNOWN, "snippet": None}
    if task == SEGMENT:
        return {"how": ("the U-Net decoder is uscl's own code (uscl.models.segmenter), so export first, with uscl: "
                        f"`uscl export RUN model.onnx --format onnx --fold {folds[0]}` (one fold; without --fold, "
                        "the mean of every fold's per-pixel probabilities); then onnxruntime alone runs it"),
                "snippet": "\n".join(segment_onnx_lines("model.onnx", meta))}
    return detect_loading(meta, folds)


def detect_loading(meta: dict, folds: list) -> dict:
    """torchvision MaskRCNN over BackboneWithFPN(resnet), as uscl.models.detector builds it, + the fold's weights."""
    needed = {"arch": meta.get("arch"), "min_size": meta.get("min_size"), "max_size": meta.get("max_size"),
              "mean": meta.get("mean"), "std": meta.get("std"), "frozen_bn": meta.get("frozen_bn"),
              "detector": meta.get("detector"), "mask_classes": meta.get("mask_classes") or meta.get("classes")}
    missing = [k for k, v in needed.items() if v is None]
    if missing or meta.get("head") not in (None, "mask-rcnn"):
        return {"how": ("unknown: the fold's model.json does not record " + ", ".join(missing) if missing else
                        f"unknown: head {meta.get('head')} is not a Mask R-CNN"), "snippet": None}
    arch, frozen = needed["arch"], bool(needed["frozen_bn"])
    kwargs = dict(needed["detector"])
    lines = ["import torch", "import torchvision", "from safetensors.torch import load_file",
             "from torchvision.models.detection import MaskRCNN",
             "from torchvision.models.detection.backbone_utils import BackboneWithFPN",
             *(["from torchvision.ops.misc import FrozenBatchNorm2d"] if frozen else []), "",
             f"CLASSES = {list(needed['mask_classes'])!r}  # label k = CLASSES[k - 1]; 0 is background",
             f"trunk = torchvision.models.{arch}(weights=None"
             + (", norm_layer=FrozenBatchNorm2d)  # the run froze BatchNorm (model.json frozen_bn)" if frozen
                else ")  # ordinary BatchNorm (model.json frozen_bn: false)"),
             "backbone = BackboneWithFPN(trunk, {f\"layer{k}\": str(k - 1) for k in range(1, 5)},",
             "                           [trunk.inplanes // 8 * 2 ** i for i in range(4)], 256)",
             f"net = MaskRCNN(backbone, num_classes=len(CLASSES) + 1, min_size={needed['min_size']}, "
             f"max_size={needed['max_size']},",
             f"               image_mean=[{needed['mean']}], image_std=[{needed['std']}], **{kwargs!r})",
             f'net.load_state_dict(load_file("fold{folds[0]}/model.safetensors"))  # any fold{{k}}/ of {list(folds)}',
             "net.eval()",
             "# images: float32 3 x H x W in [0, 1], the stored frames with grey repeated to 3 channels; not",
             "# normalised: the detector resizes and normalises them itself",
             f"images = [torch.zeros(3, {needed['min_size']}, {needed['min_size']})]",
             "with torch.no_grad():",
             "    det = net(images)[0]  # boxes (x1, y1, x2, y2), labels 1..K, scores, masks N x 1 x H x W",
             "masks = det[\"masks\"][:, 0] >= 0.5  # uscl's binarisation; "
             f"its label maps keep scores >= {DETECT_SCORE_THRESHOLD}"]
    return {"how": (f"torchvision MaskRCNN on BackboneWithFPN over torchvision {arch} + safetensors (one fold; the "
                    "folds are separate models). uscl feeds 1-channel grey frames to a first convolution that sums "
                    "its RGB filters; repeating the grey to 3 channels gives the same output up to float rounding. "
                    "The torchvision version is not recorded; the state-dict layout is that of the torchvision "
                    "the run used"),
            "snippet": "\n".join(lines)}


def _cell(v) -> str:
    """A table cell: the long reasons of :func:`_pooled_class` shortened (the legend under the table says them)."""
    return {NO_IMAGE: "n/a", NO_EMPTY: "n/a", ALL_MISSED: "undefined"}.get(v, _fmt(v)) if isinstance(v, str) \
        else _fmt(v)


def render_dense_card(card: dict) -> str:
    """MODEL_CARD.md of a segmentation or detection card."""
    t, d, ev, m = card["task"], card["data"], card["evaluation"], card["metrics"]
    title = ", ".join(t["classes"]) if isinstance(t["classes"], list) else UNKNOWN
    out = [f"# Model card: {t['arch']} {t['task']} ({title})", ""]
    for mark in ev["marks"]:
        out += [f"> **{mark}**", ""]
    out += ["## Task", "", *_rows(t), "", "## Data", "", *_rows(d, skip=("per_label", "per_class"))]
    if isinstance(d["per_label"], dict):
        out += ["", "Videos with masks, by video label (every frame of such a video has a mask):", "",
                "| video label | videos | frames with masks | patients |", "|---|---|---|---|"]
        out += [f"| {lab} | {x['videos']} | {x['frames']} | {x['patients']}"
                + (f" (+{x['videos_without_patient']} videos without a patient)"
                   if x["videos_without_patient"] and x["patients"] != UNKNOWN else "") + " |"
                for lab, x in d["per_label"].items()]
    if isinstance(d["per_class"], dict):
        out += ["", "Images (frames) containing each mask class:", "",
                "| mask class | images | videos | pixels |", "|---|---|---|---|"]
        out += [f"| {c} | {x['images']} | {x['videos']} | {x['pixels']} |" for c, x in d["per_class"].items()]
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
    out += ["", "## Metrics", "", f"- interval: {m['interval']}", f"- HD95 unit: {m['hd95_unit']}", "",
            "| metric | image level | video level |", "|---|---|---|"]
    out += [f"| {name} | {_ci_text(m['image'][k])} | {_ci_text(m['video'][k])} |" for k, name in DENSE_METRICS.items()]
    if "detection" in m:
        out += ["", "| detection metric | over folds |", "|---|---|"]
        out += [f"| {name} | {_ci_text(m['detection'][k])} |" for k, name in DETECTION_KEYS.items()]
    if isinstance(m["per_class"], dict):
        out += ["", f"Per mask class, {m['per_class_note']}:", "",
                "| mask class | images | Dice | IoU | HD95 (px) | missed | empty-truth images | false-positive share |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {c} | {_cell(x['images'])} | {_cell(x['dice'])} | {_cell(x['iou'])} | {_cell(x['hd95'])} | "
                f"{_cell(x['missed'])} | {_cell(x['empty_truth_images'])} | {_cell(x['false_positive_share'])} |"
                for c, x in m["per_class"].items()]
        out += ["", f"(n/a: {NO_IMAGE[5:]} or, for the false-positive share, {NO_EMPTY[5:]}; undefined: "
                f"{ALL_MISSED[11:]})"]
    out += [""]
    for f in m["per_fold"]:
        extra = (", " + ", ".join(f"{DETECTION_KEYS[k]} {_fmt(f[k])}" for k in DETECTION_KEYS)
                 if "bbox_map50" in f else "")
        out.append(f"- fold {f['fold']}: Dice {_fmt(f['dice'])}, IoU {_fmt(f['iou'])}, HD95 {_fmt(f['hd95'])} px, "
                   f"video Dice {_fmt(f['video_dice'])}{extra} ({_fmt(f['test_videos'])} test videos, "
                   f"{_fmt(f['test_images'])} images)")
    if m.get("warning"):
        out += [f"- **warning**: {m['warning']}"]
    if "export" in card:
        out += ["", "## Export", "", *_rows(card["export"])]
    u = card["intended_use"]
    out += ["", "## Intended use and limits", "", *_rows(u, skip=("limits",)), "- **limits**:",
            *[f"  - {x}" for x in u["limits"]]]
    load = card["loading"]
    out += ["", "## Loading without uscl", "", f"{load['how']}", ""]
    out += ["```python", load["snippet"], "```", ""] if load.get("snippet") else []
    return "\n".join(out).rstrip() + "\n"


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
        return "; ".join(f"{k}={_fmt(x)}" for k, x in v.items()) if v else "none"
    return "unknown" if v is None else str(v)


def _rows(section: dict, skip=()) -> list[str]:
    return [f"- **{k.replace('_', ' ')}**: {_fmt(v)}" for k, v in section.items() if k not in skip]


def _ci_text(m) -> str:
    if not isinstance(m, dict):
        return m if isinstance(m, str) else UNKNOWN
    if m["ci_low"] is None:
        return f"{m['mean']:.3f} (no CI: {m['n_folds']} fold)"
    return f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] over {m['n_folds']} folds"


def render_card(card: dict) -> str:
    """MODEL_CARD.md: the dict's content as headed sections; marks and the snippet set apart."""
    if card["task"].get("task") in (TASK_WORDS[SEGMENT], TASK_WORDS[DETECT]):
        return render_dense_card(card)
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
