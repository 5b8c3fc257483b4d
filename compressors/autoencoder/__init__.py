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

from ..registry import Codec, Param, register
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
