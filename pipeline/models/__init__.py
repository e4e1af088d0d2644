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
from pipeline.models.transfer import (STRATEGIES, TransferConfig, apply_strategy, needs_new_optimizer,
                                      resolve_strategy, set_train_mode, trainable_summary)

__all__ = [
    "ENCODERS", "Encoder", "build_encoder", "build_imagenet_model", "load_medicalnet_checkpoint",
    "medicalnet_path", "InputAdapter", "ClassifierHead", "ModelConfig", "NoduleClassifier",
    "build_classifier", "SegmenterConfig", "NoduleSegmenter", "build_segmenter", "STRATEGIES",
    "TransferConfig", "resolve_strategy", "apply_strategy", "set_train_mode", "needs_new_optimizer",
    "trainable_summary",
]
