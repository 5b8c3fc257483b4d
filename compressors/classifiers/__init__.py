"""Classifiers for measuring whether compression changes what a model sees (kind ``classifier``).

``--classifier NAME|URL`` on ``compress`` runs one on the source and on the decoded image
of every image it takes; shipped: ``digits`` (28x28 gray). Only registered architectures
load, only from safetensors (:mod:`compressors.models`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressors import models
from compressors.registry import Param

KIND = "classifier"

models.register_architecture(models.Architecture(
    cls="compressors.classifiers.model:DigitsClassifier", kind=KIND, shipped_dir=Path(__file__).parent / "models",
))
models.register_trainer(models.Trainer(
    kind=KIND, fit="compressors.classifiers.train:fit", data="files",
    description="digit classifier (28x28 gray) on labelled MNIST IDX files: the first --train-count digits",
    options={
        "train_count": Param(8000, 1, 1_000_000, "train on the first N digits of the file"),
        "batch": Param(64, 1, 4096, "digits per step"),
        "lr": Param(1e-3, 1e-6, 1e-1, "Adam learning rate", kind=float),
        "shift": Param(2, 0, 8, "random translations up to this many pixels"),
        "name": Param(None, help="the name the model answers to when shipped (e.g. digits)", kind=str),
    },
))


def describe(ref: str) -> str:
    """``name@id`` of a loaded or shipped classifier, as the report names it."""
    return models.describe(ref, KIND)


def takes(ref: str, image: np.ndarray) -> bool:
    """Whether classifier ``ref`` takes images of this shape (others get no label)."""
    return tuple(image.shape) == tuple(models.get(ref, KIND).module.input_shape)


def classify(ref: str, image: np.ndarray) -> tuple[int, float]:
    """Top-1 ``(label, confidence)`` of one uint8 image under classifier ``ref``."""
    from compressors.classifiers.model import classify as run  # noqa: PLC0415

    labels, conf = run(models.get(ref, KIND).module, image)
    return int(labels[0]), float(conf[0])


__all__ = ["KIND", "classify", "describe", "takes"]
