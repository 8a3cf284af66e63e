"""`uscl export`: a fine-tuned model as TorchScript, ONNX or torchvision safetensors, checked against the original."""

from __future__ import annotations

import argparse

NAME = "export"
ORDER = 55
HELP = "export a fine-tuned model (TorchScript, ONNX or safetensors) that runs without uscl"
DESCRIPTION = """\
Write a backbone-plus-head model that runs without uscl, with a JSON beside it
(same stem) describing its preprocessing: store options, input size,
mean/std, class names, input layout N x 3 x H x W float32 (normalised).

  torchscript (.pt, torch.jit.load) and onnx (.onnx, onnxruntime): input
      'input', output 'probabilities' (softmax). Without --fold a run folder
      is exported as the ensemble averaging its folds' probabilities.
  safetensors: one fold in torchvision's key layout (conv1.* ... fc.*):
      torchvision.models.resnet18(num_classes=K).load_state_dict(...) rebuilds
      it; it returns logits (apply softmax).

A segmentation model (`uscl finetune --task segment`) exports its per-pixel
probabilities instead: output 'probabilities' N x (K+1) x H x W (channel 0
background, k the k-th mask class; an ensemble averages its folds), and
safetensors holds one fold's segmenter (backbone.*, decoder.*, head.*; logits)
for uscl.models.segmenter.build_segmenter(arch, K). The JSON adds task,
mask_classes and labels.

A detection model (`uscl finetune --task detect`) exports one fold's
torchvision Mask R-CNN (--fold K; default the run's first fold: detectors
are not averaged). Its input is the preprocessed frame as float C x H x W in
[0, 1] (it resizes and normalises itself); it returns boxes (input pixels),
labels 1..K, scores and instance mask probabilities.
  torchscript: torch.jit.script of the torchvision model;
      losses, detections = torch.jit.load(path)(list_of_images)
  onnx: torchvision's ONNX path (opset 17), one image per run: input
      'images', outputs boxes, labels, scores, masks
  safetensors: the detector's weights; the JSON's build_detector options
      rebuild it with uscl.models.detector.build_detector

The exported file is loaded back (torch.jit.load / onnxruntime / plain
torchvision) and compared with the original on the same input; the max abs
difference is printed and a mismatch is an error.

example:
  uscl export runs/ft_pocus pocus_fold0.onnx --format onnx --fold 0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="`uscl finetune` run folder, fold folder or model.safetensors")
    p.add_argument("out", metavar="OUT", help="output file (extension added if missing) or existing folder")
    p.add_argument("--format", dest="fmt", required=True, choices=["torchscript", "onnx", "safetensors"],
                   help="file format")
    p.add_argument("--fold", type=int, metavar="K",
                   help="export fold K of a run folder (default: all folds, averaged; a detection run: its first)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(args: argparse.Namespace) -> int:
    from uscl.infer.export import export_model

    result = export_model(args.model, args.out, args.fmt, fold=args.fold, overwrite=args.overwrite)
    print(result.format_report())
    return 0
