"""The ``lossless`` codec: learned predictive coding, bit-exact on any machine.

A small MLP (:mod:`.model`) reads each pixel's causal context (:mod:`.features`: the
neighbours above and to the left in all planes, the MED prediction, the errors of the
planes already decoded at that pixel) and gives a discretized logistic over its value;
row-parallel rANS (:mod:`.rans`) codes the values under those distributions; decoding
runs a wavefront over rows (:mod:`.codec`). Coding only runs the model's integer form,
so the decoder derives exactly the encoder's distributions whatever the machine, BLAS or
thread count, and the ``.impl`` container (:mod:`.container`) carries a CRC32 of the
decoded pixels: a mismatch is an error, never silently different pixels.

Importing this package registers the codec; the model is trained with
``python -m compressors.lossless.train`` (:mod:`.train`).
"""

from __future__ import annotations

from pathlib import Path

from threadpoolctl import threadpool_limits

from .. import models
from ..registry import Codec, Param, register
from . import codec as _codec
from . import container

KIND = "lossless"
EXTENSION = ".impl"
SHIPPED_DIR = Path(__file__).parent / "models"

models.register_architecture(models.Architecture(
    cls="compressors.lossless.model:LosslessMLP", kind=KIND, shipped_dir=SHIPPED_DIR,
    prepare="compressors.lossless.integer:prepare",
))
models.register_trainer(models.Trainer(
    kind=KIND, fit="compressors.lossless.train:fit", data="crops",
    description="the lossless codec's pixel model (integer MLP over the causal context); "
                "--init-model fine-tunes",
    options={
        "hidden": Param(64, 8, 256, "first trunk layer width"),
        "trunk2": Param(48, 8, 256, "second trunk layer width"),
        "head": Param(24, 4, 128, "hidden width of the R and B heads"),
        "batch": Param(4096, 64, 65536, "pixels per step"),
        "lr": Param(3e-3, 1e-5, 1e-1, "Adam learning rate (cosine-decayed to 2 %)", kind=float),
        "samples_per_image": Param(4000, 100, 100000, "random pixels drawn from each crop"),
        "gray_fraction": Param(0.1, 0.0, 1.0, "share of crops trained as gray", kind=float),
        "cpu_minutes": Param(0.0, 0.0, 600.0, "CPU-time budget (0: wall-clock minutes only)", kind=float),
    },
))


def default_model_id() -> str:
    return models.default_model_id(KIND)


def get_model(ref: str) -> models.LoadedModel:
    """A loaded lossless model (``.runtime`` is its :class:`.integer.IntegerNet`) by id or shipped name."""
    return models.get(ref, KIND)


def encode(image, *, model: str | None = None, stripe: int = _codec.DEFAULT_STRIPE) -> bytes:
    """uint8 (H, W, 1|3) -> ``.impl`` bytes, with model ``model`` (id or shipped name; default: the shipped one)."""
    lm = get_model((model or "").strip() or default_model_id())
    with threadpool_limits(limits=1, user_api="blas"):  # small products: threads only add overhead
        return _codec.encode_with(lm.runtime, lm.model_id, image, stripe)


def decode(data: bytes):
    """``.impl`` bytes -> the exact uint8 (H, W, C) image; ``ValueError`` on anything else."""
    header, counts, words = container.unpack(data)
    lm = get_model(header.model_id)  # ValueError on an unknown model, before any allocation
    with threadpool_limits(limits=1, user_api="blas"):
        return _codec.decode_with(lm.runtime, header, counts, words)


CODEC = register(
    Codec(
        name="lossless",
        extension=EXTENSION,
        encode_fn=encode,
        decode_fn=decode,
        params={
            "model": Param(default=default_model_id() or None, kind=str,
                           help="lossless model id (16 hex digits): the shipped one or one loaded from a URL"),
            "stripe": Param(default=_codec.DEFAULT_STRIPE, lo=8, hi=65535,
                            help="rows per independently started stripe: fewer decode faster, cost a few bits"),
        },
        description="learned predictive coding (integer MLP over the causal context, row-parallel rANS), bit-exact",
    )
)

__all__ = ["CODEC", "EXTENSION", "KIND", "decode", "default_model_id", "encode", "get_model"]
