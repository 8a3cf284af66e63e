"""Inference on new files: predictions, Grad-CAM explanations and model export.

>>> from uscl.infer import predict, format_table, export_model
>>> run = predict("runs/ft_pocus", ["clips/"], fold=0)        # or the ensemble of all folds
>>> print(format_table(run))
>>> export_model("runs/ft_pocus", "pocus.onnx", "onnx", fold=0)
>>> seg = predict_segments("runs/ft_seg", ["clips/"], out="masks")  # a segmentation run: label masks
>>> det = predict_detections("runs/ft_det", ["clips/"], out="dets")  # a detection run: one fold's instances
>>> w = PredictionWriter("preds", model, "cpu", resume=True)  # files streamed as results arrive, resumable
>>> run = predict_items(model, [i for i in gather_inputs(["archive/"]) if i.name not in w.done], on_result=w.add,
...                     keep_results=False, workers=4)
>>> w.close(run.skipped)
"""

from uscl.infer.detect import (
    DetectPrediction, DetectRun, DetectWriter, FrameDetections, detect_frames, format_detect_table,
    predict_detect_items, predict_detections, write_detect_outputs,
)
from uscl.infer.explain import ExplainOptions, Explainer
from uscl.infer.export import FORMATS, ExportResult, export_model, rebuild_torchvision, torchvision_state
from uscl.infer.gradcam import GradCAM, explain_frames
from uscl.infer.inputs import InputItem, gather_inputs, load_frames, to_display, to_model_input
from uscl.infer.model import (
    DetectionModel, EnsembleModel, FoldModel, KnnHead, LoadedModel, Preprocessing, ProbabilityModel,
    SegmentProbabilityModel, build_detect_net, build_fold_net, build_segment_net, load_model, model_task,
)
from uscl.infer.mask_overlay import draw_detections, draw_masks, legend
from uscl.infer.overlay import colorize, overlay, write_contact_sheet, write_png, write_rgb_mp4
from uscl.infer.prediction_files import PredictionWriter
from uscl.infer.predict import (
    InputPrediction, PredictionRun, format_table, predict, predict_frames, predict_items, write_outputs,
)
from uscl.infer.segment import (
    SegmentPrediction, SegmentRun, SegmentWriter, format_segment_table, predict_segment_frames, predict_segment_items,
    predict_segments, segment_probabilities, write_segment_outputs,
)

__all__ = [
    "EnsembleModel", "ExplainOptions", "Explainer", "ExportResult", "FORMATS", "FoldModel", "GradCAM", "InputItem",
    "InputPrediction", "KnnHead", "LoadedModel", "PredictionRun", "PredictionWriter", "Preprocessing", "ProbabilityModel",
    "build_fold_net", "colorize", "explain_frames", "export_model", "format_table", "gather_inputs", "load_frames",
    "load_model", "overlay", "predict", "predict_frames", "predict_items", "rebuild_torchvision", "to_display",
    "to_model_input", "torchvision_state", "write_contact_sheet", "write_outputs", "write_png", "write_rgb_mp4",
    "SegmentPrediction", "SegmentProbabilityModel", "SegmentRun", "SegmentWriter", "build_segment_net", "draw_masks",
    "format_segment_table", "legend", "model_task", "predict_segment_frames", "predict_segment_items",
    "predict_segments", "segment_probabilities", "write_segment_outputs",
    "DetectPrediction", "DetectRun", "DetectWriter", "DetectionModel", "FrameDetections", "build_detect_net",
    "detect_frames", "draw_detections", "format_detect_table", "predict_detect_items", "predict_detections",
    "write_detect_outputs",
]
