"""The ``digits`` codec: 28x28 gray digits through a small autoencoder with an entropy-coded code.

Importing this package registers the codec in :data:`compressors.CODECS`, the model class
(kind ``digits``) and its trainer in :mod:`compressors.models`. Shipped models answer to
``digits-28`` and ``digits-128`` (the codec's default for ``latent``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressors import models
from compressors.registry import Codec, Param, register

KIND = "digits"
EXTENSION = ".imd"

models.register_architecture(models.Architecture(
    cls="compressors.digits.model:DigitsAutoencoder", kind=KIND, shipped_dir=Path(__file__).parent / "models",
))
models.register_trainer(models.Trainer(
    kind=KIND, fit="compressors.digits.train:fit", data="files",
    description="28x28 digit autoencoder (the codec `digits`) on MNIST IDX files: the first --train-count digits",
    options={
        "latent": Param(28, 1, 1024, "values in the code", choices=(28, 128)),
        "lam": Param(0.01, 1e-5, 10.0, "rate-distortion trade-off: loss = bpp + lam * 255^2 * MSE", kind=float),
        "train_count": Param(8000, 1, 1_000_000, "train on the first N digits of the file"),
        "batch": Param(64, 1, 4096, "digits per step"),
        "lr": Param(1e-3, 1e-6, 1e-1, "Adam learning rate", kind=float),
        "name": Param(None, help="the name the model answers to when shipped (e.g. digits-28)", kind=str),
    },
))

def encode(image: np.ndarray, *, latent: int = 28, model: str | None = None) -> bytes:
    """See :func:`compressors.digits.codec.encode` (imported on first use: it needs torch)."""
    from compressors.digits import codec  # noqa: PLC0415

    return codec.encode(image, latent=latent, model=model)


def decode(data: bytes) -> np.ndarray:
    """See :func:`compressors.digits.codec.decode`."""
    from compressors.digits import codec  # noqa: PLC0415

    return codec.decode(data)


CODEC = register(Codec(
    name="digits",
    extension=EXTENSION,
    encode_fn=encode,
    decode_fn=decode,
    params={
        # 28 or 128 (the shipped models); bounds, not choices: the derived CLI has no typed choices yet
        "latent": Param(28, 28, 128, "values in the code: 28 or 128 (a model for it must exist)"),
        "model": Param(None, kind=str, help="digits model id, name or URL (default: the shipped one for latent)"),
    },
    shape=(28, 28, 1),
    description="28x28 grayscale digits: conv autoencoder, code quantised and ANS-coded (a 22-byte container)",
))

__all__ = ["CODEC", "decode", "encode"]
