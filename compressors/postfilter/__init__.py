"""Decoder-side post-filters: a small residual CNN per codec that restores decoded images.

Models live in the one model store (:mod:`compressors.models`, kind ``postfilter``);
shipped ones in ``compressors/postfilter/models`` answer to their name (``jpeg``).
:func:`apply` filters a decoded uint8 image with a model given by name or id (the tasks
layer loads models named by URL with :func:`compressors.models.load_model` first).
Training: :func:`compressors.postfilter.train.fit`, or
``python -m compressors.postfilter.train`` / ``imgpress train --kind postfilter``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressors import models
from compressors.registry import Param

KIND = "postfilter"

models.register_architecture(models.Architecture(
    cls="compressors.postfilter.model:PostFilter", kind=KIND, shipped_dir=Path(__file__).parent / "models",
))
models.register_trainer(models.Trainer(
    kind=KIND, fit="compressors.postfilter.train:fit", data="crops",
    description="decoder-side residual CNN that restores one codec's output over a quality range",
    options={
        "for": Param("jpeg", help="the codec whose decoded images the filter restores", kind=str),
        "quality_range": Param("30-90", help="qualities to train over, e.g. 30-90 (kmeans: colours)", kind=str),
        "patch": Param(96, 16, 1024, "training patch side (a multiple of 16, at most --crop-size)"),
        "batch": Param(16, 1, 1024, "patches per step"),
        "lr": Param(3e-4, 1e-6, 1e-1, "Adam learning rate (cosine-decayed over the last 30 %)", kind=float),
        "channels": Param(64, 8, 256, "feature maps per layer"),
        "layers": Param(8, 2, 32, "3x3 convolutions"),
        "precision": Param("auto", help="auto: bf16 autocast where the hardware has bf16 units, else float32",
                           kind=str, choices=("auto", "bf16", "fp32")),
        "name": Param(None, help="the name the model answers to when shipped", kind=str),
    },
))


def describe(ref: str) -> str:
    """``name@id`` of a loaded or shipped postfilter, as the report names it."""
    return models.describe(ref, KIND)


def apply(image: np.ndarray, ref: str) -> np.ndarray:
    """Filter a decoded uint8 (H, W, 1|3) image with the post-filter ``ref`` (shipped name or id)."""
    from compressors.postfilter.model import filter_image, inference_dtype  # noqa: PLC0415

    return filter_image(models.get(ref, KIND).module, image, autocast=inference_dtype())


__all__ = ["KIND", "apply", "describe"]
