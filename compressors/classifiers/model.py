"""Classifiers whose agreement on source and decoded images a run can measure.

A classifier class declares the images it takes (``input_shape``) and maps a uint8 batch
to logits; :func:`classify` gives the top-1 label and its softmax confidence. Only classes
registered in :mod:`compressors.models` (kind ``classifier``) can be loaded, and only from
safetensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compressors.hardware import one_thread


class DigitsClassifier(nn.Module):
    """A small CNN for 28x28 gray digits (two conv + pool stages, two linear layers; ~0.2 M weights).

    The LeNet family (LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to
    document recognition", Proc. IEEE 1998) with ReLU, max-pooling and dropout.
    """

    input_shape = (28, 28, 1)

    def __init__(self, classes: int = 10, width: int = 32):
        super().__init__()
        self.classes, self.width = classes, width
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * w * 49, 128),
                                  nn.ReLU(inplace=True), nn.Dropout(0.25), nn.Linear(128, classes))

    def config(self) -> dict:
        return {"classes": self.classes, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 1, 28, 28) in [0, 1] -> logits (B, classes)."""
        return self.head(self.features(x))

    @staticmethod
    def to_input(images: np.ndarray) -> torch.Tensor:
        """uint8 (B, 28, 28, 1) -> float (B, 1, 28, 28) in [0, 1]."""
        return torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0).permute(0, 3, 1, 2)


@torch.inference_mode()
def classify(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 ``(labels int64, confidences float64)`` of uint8 images shaped ``model.input_shape`` (batched)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"{type(model).__name__} takes uint8 images of shape {model.input_shape}, "
                         f"got {images.dtype} {images.shape[1:]}")
    with one_thread():  # small images: threads only wait for each other
        probs = torch.softmax(model(model.to_input(images)).float(), dim=1)
    conf, labels = probs.max(dim=1)
    return labels.numpy().astype(np.int64), conf.double().numpy()
