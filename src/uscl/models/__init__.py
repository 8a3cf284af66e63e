"""Models: ResNet backbone, projection head, classifier."""

from uscl.models.backbone import ARCHITECTURES, build_backbone
from uscl.models.classifier import FinetunedClassifier, build_classifier
from uscl.models.heads import USCLModel, build_model, projection_head

__all__ = ["ARCHITECTURES", "build_backbone", "FinetunedClassifier", "build_classifier", "USCLModel", "build_model",
           "projection_head"]
