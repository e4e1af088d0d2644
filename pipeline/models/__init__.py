"""Models: pretrained encoders, HU input adaptation, classifier, segmenter, transfer strategies.

Public API (import from here):
``ENCODERS, Encoder, build_encoder, build_imagenet_model`` (encoders),
``load_medicalnet_checkpoint, medicalnet_path`` (medicalnet), ``InputAdapter`` (inputs),
``ClassifierHead`` (heads), ``ModelConfig, NoduleClassifier, build_classifier`` (classifier),
``SegmenterConfig, NoduleSegmenter, build_segmenter`` (segmenter),
``STRATEGIES, TransferConfig, resolve_strategy, apply_strategy, set_train_mode,
needs_new_optimizer, trainable_summary`` (transfer).
"""
from pipeline.models.classifier import ModelConfig, NoduleClassifier, build_classifier
from pipeline.models.encoders import ENCODERS, Encoder, build_encoder, build_imagenet_model
from pipeline.models.heads import ClassifierHead
from pipeline.models.inputs import InputAdapter
from pipeline.models.medicalnet import load_medicalnet_checkpoint, medicalnet_path
from pipeline.models.segmenter import NoduleSegmenter, SegmenterConfig, build_segmenter
from pipeline.models.transfer import (
                                      STRATEGIES,
                                      TransferConfig,
                                      apply_strategy,
                                      needs_new_optimizer,
                                      resolve_strategy,
                                      set_train_mode,
                                      trainable_summary,
)

__all__ = [
                                      "ENCODERS",
                                      "STRATEGIES",
                                      "ClassifierHead",
                                      "Encoder",
                                      "InputAdapter",
                                      "ModelConfig",
                                      "NoduleClassifier",
                                      "NoduleSegmenter",
                                      "SegmenterConfig",
                                      "TransferConfig",
                                      "apply_strategy",
                                      "build_classifier",
                                      "build_encoder",
                                      "build_imagenet_model",
                                      "build_segmenter",
                                      "load_medicalnet_checkpoint",
                                      "medicalnet_path",
                                      "needs_new_optimizer",
                                      "resolve_strategy",
                                      "set_train_mode",
                                      "trainable_summary",
]
