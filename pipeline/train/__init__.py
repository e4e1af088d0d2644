"""Training: nodule classifier (``train``), 3D segmenter (``train_seg``) and ``predict``.

Public API: ``TrainConfig``, ``SegTrainConfig`` (config), ``train_classifier``, ``TrainResult``
(stage), ``train_segmenter`` (segment), ``load_model`` (``pipeline.runtime``), ``predict`` (predict).
Heavy imports (torch, MONAI) happen when these are first used.
"""
from pipeline.train.config import SegTrainConfig, TrainConfig

__all__ = ["SegTrainConfig", "TrainConfig", "load_model", "predict", "train_classifier", "train_segmenter"]


def __getattr__(name: str):
    if name == "train_classifier":
        from pipeline.train.stage import train_classifier
        return train_classifier
    if name == "train_segmenter":
        from pipeline.train.segment import train_segmenter
        return train_segmenter
    if name == "load_model":
        from pipeline.runtime import load_model
        return load_model
    if name == "predict":
        from pipeline.train.predict import predict
        return predict
    raise AttributeError(name)
