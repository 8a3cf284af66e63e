"""Training-step throughput of the dense tasks (segmentation, detection), each against a reference of the same run.

Every figure is a ratio of two steps timed INTERLEAVED in one process (one step of
each kind in turn, the order alternating), from their median step times, as
bench_pretrain_step.py does: on a shared, noisy machine blocks minutes apart
measure the load, not the code. Each step works on one fixed batch already in
memory (no loader): the figures are the step itself, augmentation included.

* **segmentation vs classification** (per ``--modes``, default full and paper): the
  segmentation fine-tuning step, ``uscl.finetune.segment.engine.train_one_epoch`` on one
  batch (MaskedAugment of images + masks, Segmenter = ResNet + U-Net decoder, dice_ce_loss,
  Adam), against the classification one, ``uscl.finetune.engine.train_one_epoch`` on the same
  frames (BatchAugment, the classifier, cross-entropy, Adam), same size, batch, mode and
  device. ``segment_over_classify_time`` = how much longer a segmentation step takes (the
  decoder's cost); on CUDA (or with --channels-last-variant) a third variant runs the segmenter
  channels-last (the segmentation fold does not; the classification fold does);
* **the joint augmentation alone**: MaskedAugment (image + mask) vs BatchAugment.augment
  (image only, what the classification path calls) on the same batch, and the mask part
  alone (resize + nearest crop/flip of the masks): the mask's overhead;
* **detection**: Mask R-CNN on the resnet18 FPN as ``uscl finetune --task detect`` builds it
  (``uscl.finetune.detect.fold.CPU_DETECTOR`` RoI settings) vs the same model with
  torchvision's default RoI settings, one step of
  ``uscl.finetune.detect.engine.train_one_epoch`` (SGD, clipping as the fold), images/s; and
  the trunk + FPN alone (the detector's transform, backbone forward, a mean-of-features
  loss, backward, SGD) as the floor no RoI setting can go below.

Frames are grey (1 channel, the `uscl prepare` default), stored at ``--frame-size`` (default
8/7 of the segmentation size, as a 256 px store is trained at 224 px) with masks of two
classes (ellipses); detection images are at the detector's size (min_size = max_size, as the
fold sets them). Random init (BatchNorm trains, as in a from-scratch detector). cuDNN and TF32
settings are torch's defaults, as in `uscl finetune` (which sets neither). Rates on a
CPU are per CPU-second of this single-threaded process (steady on a shared box) and per
wall-second; on CUDA per wall-second (synchronised).

    python benchmarks/bench_dense_step.py --out benchmarks/results/dense_step.json            # CPU: 112 / 128 px
    python benchmarks/bench_dense_step.py --device cuda --out benchmarks/results/dense_step_gpu.json   # 224 / 512 px
    python benchmarks/bench_dense_step.py --quick                                             # seconds (smoke test)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ARCH = "resnet18"
MASK_CLASSES = 2
# defaults per device: (segmentation px, batch), (detection px, images per step)
DEFAULTS = {"cpu": {"seg_size": 112, "seg_batch": 16, "det_size": 128, "det_batch": 2},
            "cuda": {"seg_size": 224, "seg_batch": 64, "det_size": 512, "det_batch": 8}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call of ``fn``, the device synchronised around it."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def interleaved(fns: dict, steps: int, warmup: int, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Each of ``fns`` ``warmup`` times, then ``steps`` rounds of one call each, the order rotating by round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out = {n: {"wall": [], "cpu": []} for n in names}
    for k in range(steps):
        order = names[k % len(names):] + names[:k % len(names)]
        for n in order:
            w, c = timed(fns[n], device)
            out[n]["wall"].append(w)
            out[n]["cpu"].append(c)
    return out


def rate(times: dict[str, list[float]], items: int, device: torch.device) -> dict:
    wall, cpu = statistics.median(times["wall"]), statistics.median(times["cpu"])
    r = {"images_per_step": items, "median_step_s_wall": round(wall, 4),
         "images_per_s_wall": round(items / wall, 2) if wall > 0 else None,
         "step_s_wall": [round(t, 4) for t in times["wall"]]}
    if device.type == "cpu":
        r.update({"median_step_s_cpu": round(cpu, 4), "images_per_s_cpu": round(items / cpu, 2) if cpu > 0 else None})
    return r


def ratios(a: dict[str, list[float]], b: dict[str, list[float]], device: torch.device) -> dict:
    """Step time of ``a`` over ``b``: the ratio of medians and the median of the per-round ratios (wall, CPU)."""
    out = {}
    for clock in ("wall", "cpu") if device.type == "cpu" else ("wall",):
        ma, mb = statistics.median(a[clock]), statistics.median(b[clock])
        out[f"time_ratio_{clock}"] = round(ma / mb, 3) if mb > 0 else None
        paired = [x / y for x, y in zip(a[clock], b[clock]) if y > 0]
        out[f"time_ratio_{clock}_paired_median"] = round(statistics.median(paired), 3) if paired else None
    return out


def headline_clock(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "wall"


# -- data ----------------------------------------------------------------------------------------
def ellipse_masks(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, size, size) label maps: one ellipse of class 1 and one of class 2 per image (class 2 on top)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for cls in range(1, MASK_CLASSES + 1):
            cy, cx = rng.uniform(0.25, 0.75, 2) * size
            ry, rx = rng.uniform(0.08, 0.2, 2) * size
            out[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = cls
    return out


def grey_frames(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 1, H, W): speckle noise, brighter inside the structures."""
    base = rng.integers(20, 120, masks.shape, dtype=np.int64)
    return np.clip(base + 60 * masks.astype(np.int64), 0, 255).astype(np.uint8)[:, None]


# -- segmentation vs classification --------------------------------------------------------------
def bench_segmentation(args, device: torch.device, mode: str) -> dict:
    from uscl.finetune import engine as cls_engine
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.modes import param_groups as cls_groups
    from uscl.finetune.modes import set_trainable
    from uscl.finetune.segment import engine as seg_engine
    from uscl.models import build_classifier
    from uscl.models.segmenter import build_segmenter, set_segmenter_trainable
    from uscl.utils.seed import make_generator, seed_everything

    seed_everything(0)
    size, b = args.seg_size, args.seg_batch
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(ellipse_masks(b, args.frame_size, rng))
    images = torch.from_numpy(grey_frames(masks.numpy(), rng))
    labels = torch.from_numpy(rng.integers(0, 3, b)).long()
    cls_batch = [{"image": images, "label": labels}]
    seg_batch = [{"image": images, "mask": masks}]
    gen_dev = device if device.type == "cuda" else None  # as the folds draw: on the device on CUDA

    # classification, as uscl.finetune.modes.train_fold sets it up
    ccfg = FinetuneConfig(task="classify", mode=mode, image_size=size, batch_size=b)
    crunner = cls_engine.Runner(ccfg, device)
    cmodel = build_classifier(ARCH, 3)
    set_trainable(cmodel, mode)
    cmodel.to(device)
    if crunner.cuda:
        cmodel.to(memory_format=torch.channels_last)
    copt = torch.optim.Adam(cls_groups(cmodel, ccfg.learning_rate, ccfg.layer_decay), lr=ccfg.learning_rate,
                            weight_decay=ccfg.weight_decay)
    cgen = make_generator(1, gen_dev)

    # segmentation, as uscl.finetune.segment.engine.segment_fold sets it up
    class ChannelsLastRunner(seg_engine.SegmentRunner):
        """The fold's runner, its augmented images made channels-last (as the classification Runner does on CUDA)."""

        def train_batch(self, images, masks, generator):
            x, y = super().train_batch(images, masks, generator)
            return x.contiguous(memory_format=torch.channels_last), y

    scfg = FinetuneConfig(task="segment", mode=mode, image_size=size, batch_size=b)
    variants = {"segment": False}
    if device.type == "cuda" or args.channels_last_variant:
        variants["segment_channels_last"] = True
    seg_steps = {}
    for name, cl in variants.items():
        srunner = (ChannelsLastRunner if cl else seg_engine.SegmentRunner)(scfg, device)
        smodel = build_segmenter(ARCH, MASK_CLASSES)
        set_segmenter_trainable(smodel, mode)
        smodel.to(device)
        if cl:
            smodel.to(memory_format=torch.channels_last)
        sopt = torch.optim.Adam(seg_engine.param_groups(smodel, scfg.learning_rate, scfg.encoder_lr),
                                lr=scfg.learning_rate, weight_decay=scfg.weight_decay)
        sgen = make_generator(2, gen_dev)

        def seg_step(m=smodel, o=sopt, r=srunner, g=sgen):
            seg_engine.train_one_epoch(m, seg_batch, o, r, g, freeze_bn_stats=scfg.freeze_bn_stats)

        seg_steps[name] = seg_step

    def cls_step():
        cls_engine.train_one_epoch(cmodel, cls_batch, copt, crunner, cgen, freeze_bn_stats=ccfg.freeze_bn_stats)

    times = interleaved({"classify": cls_step, **seg_steps}, args.steps, args.warmup, device)
    clock = headline_clock(device)
    res = {
        "mode": mode, "image_size": size, "frame_size": args.frame_size, "batch": b,
        "steps": args.steps, "warmup": args.warmup,
        "precision": "bf16 autocast" if crunner.amp else "fp32",
        "classify": rate(times["classify"], b, device),
    }
    for name in seg_steps:
        res[name] = rate(times[name], b, device)
        res[f"{name}_over_classify"] = ratios(times[name], times["classify"], device)
    res["segment_over_classify_time"] = res["segment_over_classify"][f"time_ratio_{clock}"]
    res["segment_images_per_s_share_of_classify"] = (
        round(1 / res["segment_over_classify_time"], 3) if res["segment_over_classify_time"] else None)
    res["parameters"] = {"classifier": sum(p.numel() for p in cmodel.parameters()),
                         "segmenter": sum(p.numel() for p in smodel.parameters())}
    return res


# -- the augmentation alone ----------------------------------------------------------------------
def bench_augment(args, device: torch.device) -> dict:
    from uscl.augment import BatchAugment, finetune_augment_config
    from uscl.augment.masks import MaskedAugment, resample_masks, resize_masks
    from uscl.finetune.engine import cfg_mean_std
    from uscl.finetune.config import FinetuneConfig
    from uscl.utils.seed import make_generator

    size, b = args.seg_size, args.seg_batch
    rng = np.random.default_rng(3)
    masks = torch.from_numpy(ellipse_masks(b, args.frame_size, rng)).to(device)
    images = torch.from_numpy(grey_frames(masks.cpu().numpy(), rng)).to(device)
    cfg = finetune_augment_config(size)
    cfg.mean, cfg.std = cfg_mean_std(FinetuneConfig())
    batch_aug = BatchAugment(cfg)  # the classification Runner's augmentation
    masked = MaskedAugment(BatchAugment(cfg))  # the SegmentRunner's
    gdev = device if device.type == "cuda" else None
    g1, g2, g3 = make_generator(1, gdev), make_generator(2, gdev), make_generator(3, gdev)
    calls = args.augment_calls

    def image_only():
        for _ in range(calls):
            batch_aug.augment(images, g1, out_channels=1)

    def image_and_mask():
        for _ in range(calls):
            masked(images, masks, g2, out_channels=1)

    def mask_only():  # what MaskedAugment adds: the masks through the drawn geometry
        for _ in range(calls):
            p = masked.draw(b, g3)
            resample_masks(resize_masks(masks, size), p.boxes, size, p.flip)

    times = interleaved({"batch_augment_image_only": image_only, "masked_augment_image_and_mask": image_and_mask,
                         "mask_part_only": mask_only}, args.augment_rounds, 1, device)
    clock = headline_clock(device)
    res = {"image_size": size, "frame_size": args.frame_size, "batch": b, "calls_per_round": calls,
           "rounds": args.augment_rounds}
    for name, t in times.items():
        r = rate(t, b * calls, device)
        r["ms_per_batch"] = round(1000 * statistics.median(t[clock]) / calls, 3)
        res[name] = r
    res["masked_over_batch_augment"] = ratios(times["masked_augment_image_and_mask"],
                                              times["batch_augment_image_only"], device)
    res["mask_overhead_time_ratio"] = res["masked_over_batch_augment"][f"time_ratio_{clock}"]
    return res


# -- detection -----------------------------------------------------------------------------------
def bench_detection(args, device: torch.device) -> dict:
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.detect.engine import train_one_epoch
    from uscl.finetune.detect.fold import CPU_DETECTOR, MAX_GRAD_NORM
    from uscl.finetune.detect.targets import targets_from_mask
    from uscl.models.detector import build_detector
    from uscl.utils.seed import seed_everything

    seed_everything(0)
    size, b = args.det_size, args.det_batch
    rng = np.random.default_rng(5)
    masks = ellipse_masks(b, size, rng)
    imgs = torch.from_numpy(grey_frames(masks, rng)).float().div_(255.0)
    images = list(imgs.unbind(0))  # (1, H, W) in [0, 1], as detect_fold's _images
    targets = [targets_from_mask(m, MASK_CLASSES) for m in masks]
    cfg = FinetuneConfig(task="detect", mode=args.det_mode, image_size=size, batch_size=b)
    settings = {"cpu_detector": dict(CPU_DETECTOR), "torchvision_default": {}}
    models, steps = {}, {}
    for name, kw in settings.items():
        torch.manual_seed(0)  # the same initial weights for both
        model = build_detector(ARCH, MASK_CLASSES, None, "random", with_masks=True, trainable_layers=cfg.mode,
                               min_size=size, max_size=size, **kw).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
        models[name] = model

        def det_step(m=model, o=opt):
            train_one_epoch(m, o, [(images, targets)], device, max_grad_norm=MAX_GRAD_NORM,
                            freeze_bn_stats=cfg.freeze_bn_stats)

        steps[name] = det_step

    torch.manual_seed(0)
    floor_model = build_detector(ARCH, MASK_CLASSES, None, "random", with_masks=True, trainable_layers=cfg.mode,
                                 min_size=size, max_size=size).to(device)
    fparams = [p for p in floor_model.backbone.parameters() if p.requires_grad]
    fopt = torch.optim.SGD(fparams, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)

    def floor_step():
        floor_model.train()
        ims = [im.to(device, non_blocking=True) for im in images]
        batch, _ = floor_model.transform(ims)
        feats = floor_model.backbone(batch.tensors)
        loss = sum(f.float().mean() for f in feats.values())
        fopt.zero_grad(set_to_none=True)
        loss.backward()
        fopt.step()

    times = interleaved({**steps, "trunk_fpn_floor": floor_step}, args.det_steps, args.warmup, device)
    clock = headline_clock(device)
    res = {"image_size": size, "images_per_step": b, "mode": cfg.mode, "steps": args.det_steps,
           "warmup": args.warmup, "precision": "fp32 (as detect_fold trains)",
           "instances_per_image": [int(len(t["labels"])) for t in targets],
           "cpu_detector_settings": dict(CPU_DETECTOR),
           "torchvision_default_settings": {k: getattr_roi(models["torchvision_default"], k) for k in CPU_DETECTOR}}
    for name, t in times.items():
        res[name] = rate(t, b, device)
    res["default_over_cpu_detector"] = ratios(times["torchvision_default"], times["cpu_detector"], device)
    res["cpu_detector_over_floor"] = ratios(times["cpu_detector"], times["trunk_fpn_floor"], device)
    res["default_over_floor"] = ratios(times["torchvision_default"], times["trunk_fpn_floor"], device)
    res["speedup_cpu_detector_over_default"] = res["default_over_cpu_detector"][f"time_ratio_{clock}"]
    return res


def getattr_roi(model, key: str):
    """The value a torchvision detector holds for one of CPU_DETECTOR's constructor keywords."""
    rpn, roi = model.rpn, model.roi_heads
    table = {"rpn_pre_nms_top_n_train": lambda: rpn._pre_nms_top_n["training"],
             "rpn_post_nms_top_n_train": lambda: rpn._post_nms_top_n["training"],
             "rpn_pre_nms_top_n_test": lambda: rpn._pre_nms_top_n["testing"],
             "rpn_post_nms_top_n_test": lambda: rpn._post_nms_top_n["testing"],
             "box_batch_size_per_image": lambda: roi.fg_bg_sampler.batch_size_per_image,
             "box_detections_per_img": lambda: roi.detections_per_img}
    try:
        return table[key]()
    except (KeyError, AttributeError):
        return None


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--tasks", nargs="+", default=["segment", "augment", "detect"],
                   choices=["segment", "augment", "detect"])
    p.add_argument("--modes", nargs="+", default=["full", "paper"], choices=["frozen", "paper", "full"],
                   help="segmentation/classification modes (classification has no 'frozen'; it is skipped)")
    p.add_argument("--seg-size", type=int, help="segmentation px (default 112 CPU, 224 CUDA)")
    p.add_argument("--seg-batch", type=int, help="segmentation batch (default 16 CPU, 64 CUDA)")
    p.add_argument("--frame-size", type=int, help="stored frame px (default 8/7 of --seg-size)")
    p.add_argument("--det-size", type=int, help="detection px (default 128 CPU, 512 CUDA)")
    p.add_argument("--det-batch", type=int, help="detection images per step (default 2 CPU, 8 CUDA)")
    p.add_argument("--det-mode", default="full", choices=["frozen", "paper", "full"])
    p.add_argument("--steps", type=int, default=8, help="measured rounds of the segmentation steps")
    p.add_argument("--det-steps", type=int, default=5, help="measured rounds of the detection steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--augment-rounds", type=int, default=9)
    p.add_argument("--augment-calls", type=int, default=5, help="augmentation calls timed together per round")
    p.add_argument("--channels-last-variant", action="store_true",
                   help="also time the segmenter channels-last on a CPU (always on CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 step: seconds; checks the script only")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    d = DEFAULTS[args.device]
    if args.quick:
        args.seg_size, args.seg_batch, args.frame_size = 32, 2, 40
        args.det_size, args.det_batch = 64, 1
        args.steps = args.det_steps = 1
        args.warmup, args.augment_rounds, args.augment_calls = 0, 1, 1
        args.modes = args.modes[:1]
    args.seg_size = args.seg_size or d["seg_size"]
    args.seg_batch = args.seg_batch or d["seg_batch"]
    args.frame_size = args.frame_size or round(args.seg_size * 8 / 7)
    args.det_size = args.det_size or d["det_size"]
    args.det_batch = args.det_batch or d["det_batch"]
    return args


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    report = {
        "benchmark": "dense_step",
        "what": "training-step images/s of segmentation and detection, each against a reference step "
                "timed interleaved in the same run (ratios of median step times)",
        "machine": common.machine_info(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} visible)",
        "torch_threads": torch.get_num_threads(),
        "arch": ARCH,
        "quick": bool(args.quick),
        "rates_from": ("CPU time of this process (single-threaded)" if device.type == "cpu"
                       else "wall clock, synchronised"),
    }
    if "segment" in args.tasks:
        report["segmentation"] = [bench_segmentation(args, device, m) for m in args.modes if m != "frozen"]
    if "augment" in args.tasks:
        report["augment"] = bench_augment(args, device)
    if "detect" in args.tasks:
        report["detection"] = bench_detection(args, device)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    with_load = common.machine_info().get("loadavg_1m")
    if with_load is not None:
        report["loadavg_1m_end"] = with_load
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    common.emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
