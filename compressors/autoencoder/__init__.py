"""Learned autoencoder codec (variable-rate mean-scale hyperprior, constriction ANS).

Importing this package registers the ``autoencoder`` codec in
:data:`compressors.registry.CODECS`.

Public API: :func:`encode`, :func:`decode`, :func:`encode_batch`, :func:`decode_batch`,
:func:`load_model` (register a user-trained model from bytes), :func:`default_model_id`,
and training in :mod:`compressors.autoencoder.train` (``train(...)``, CLI
``python -m compressors.autoencoder.train``).
"""

from __future__ import annotations

import json

from pathlib import Path

from .. import models
from ..registry import Codec, Param, register

models.register_architecture(models.Architecture(
    cls="compressors.autoencoder.model:MeanScaleHyperprior", kind="autoencoder",
    shipped_dir=Path(__file__).parent / "models", prepare="compressors.autoencoder.store:LoadedModel",
))
models.register_trainer(models.Trainer(
    kind="autoencoder", fit="compressors.autoencoder.train:fit", data="crops",
    description="the learned lossy codec (variable-rate mean-scale hyperprior); --init-model fine-tunes",
    options={
        "lr": Param(1e-4, 1e-6, 1e-2, "Adam learning rate (cosine-decayed to 1e-5 over the last 30 %)", kind=float),
        "lambdas": Param(None, help="comma-separated rate-distortion lambdas, low to high quality "
                         "(default: the base model's, or 0.0018..0.18 in 8 levels for a new model)", kind=str),
        "precision": Param("auto", help="auto: bf16 autocast where the hardware has bf16 units, else float32",
                           kind=str, choices=("auto", "bf16", "fp32")),
    },
))
from .codec import decode, decode_batch, encode, encode_batch
from .store import SHIPPED_DIR, default_model_id, get_model, known_ids, load_model, serialize

EXTENSION = ".imp"


def _levels() -> int:
    mid = default_model_id()
    meta = SHIPPED_DIR / f"{mid}.json"
    if mid and meta.exists():
        return int(json.loads(meta.read_text())["arch"]["qualities"])
    return 6


LEVELS = _levels()

CODEC = register(
    Codec(
        name="autoencoder",
        extension=EXTENSION,
        encode_fn=encode,
        decode_fn=decode,
        params={
            "quality": Param(default=min(4, LEVELS), lo=1, hi=LEVELS,
                             help=f"rate level of the learned codec, 1 (smallest) .. {LEVELS} (best)"),
            "model": Param(default=default_model_id(), kind=str,
                           help="model id (16 hex digits): a shipped model or one registered with load_model"),
        },
        description="learned mean-scale hyperprior autoencoder (Minnen et al. 2018), ANS-coded",
    )
)

__all__ = ["CODEC", "EXTENSION", "decode", "decode_batch", "default_model_id", "encode", "encode_batch",
           "get_model", "known_ids", "load_model", "serialize"]
