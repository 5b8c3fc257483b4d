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
from . import container

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
        "adversarial": Param(False, help="fine-tune only the synthesis of the base model (--init-model, default: the "
                             "shipped one) against a patch critic: same bitstream, sharper texture, lower PSNR",
                             kind=bool),
        "adv_weight": Param(0.1, 0.0, 10.0, "--adversarial: adversarial gradient relative to the distortion "
                            "gradient at the synthesis' last layer", kind=float),
        "adv_lr": Param(2e-5, 1e-7, 1e-2, "--adversarial: Adam learning rate of the synthesis", kind=float),
    },
))
EXTENSION = ".imp"
SHIPPED_DIR = Path(__file__).parent / "models"

# torch is imported on first use, not by ``import compressors``: the CLI's --help, report
# and query, and every other codec, never need it (tests/test_imports.py).
_LAZY = {"decode_batch": ".codec", "encode_batch": ".codec", "get_model": ".store", "known_ids": ".store",
         "load_model": ".store", "serialize": ".store"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode(image, **params):
    """See :func:`compressors.autoencoder.codec.encode`."""
    from .codec import encode as encode_  # noqa: PLC0415  (torch: on first use)

    return encode_(image, **params)


def decode(data: bytes):
    """See :func:`compressors.autoencoder.codec.decode`."""
    from .codec import decode as decode_  # noqa: PLC0415  (torch: on first use)

    return decode_(data)


def default_model_id() -> str:
    """Id of the default shipped model, or ``""`` when none is shipped."""
    return models.default_model_id("autoencoder")


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
                           help="model: a shipped model's id or name, or the URL of a trained one's .safetensors"),
        },
        description="learned mean-scale hyperprior autoencoder (Minnen et al. 2018), ANS-coded",
        signatures=((0, container.MAGIC),),
        target_search="quality",  # eight levels: the search bisects them (2-4 encodes)
    )
)

__all__ = ["CODEC", "EXTENSION", "decode", "decode_batch", "default_model_id", "encode", "encode_batch",
           "get_model", "known_ids", "load_model", "serialize"]
