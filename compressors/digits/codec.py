"""The ``digits`` codec: a 28x28 gray digit in, an ``.imd`` artifact out, and back.

Layout of the artifact (little-endian)::

    magic b"IMPD" 4 | version u8 | latent u8 | model id 8 bytes | H u8 | W u8 | payload length u16
    payload (ANS words, u32) | CRC32 u32 of everything before it

22 bytes of header and checksum around a payload of a few words: on a 784-pixel image the
container alone is 0.22 bpp, and the report counts it (bpp is always every byte).
Everything is validated (length, magic, version, checksum, shape, latent, model) before
the network runs; the payload must decode to exactly the words it holds. The coding
tables are integers derived bit for bit alike on every machine (:mod:`compressors.exact`).
"""

from __future__ import annotations

import functools
import struct
import zlib

import constriction
import numpy as np
import torch

from compressors import exact, models
from compressors.digits import EXTENSION, KIND  # noqa: F401  (re-exported)
from compressors.digits.model import LATENTS, SIDE
from compressors.hardware import one_thread

MAGIC = b"IMPD"
VERSION = 1
SYMBOL_RANGE = 255  # code values are coded as round(y - mean) clamped to [-255, 255]
_HEADER = struct.Struct("<4sBB8sBBH")
HEADER_SIZE = _HEADER.size


def shipped_name(latent: int) -> str:
    return f"digits-{latent}"


@functools.lru_cache(maxsize=8)
def _tables(model_id: str) -> tuple[np.ndarray, exact.IndexedCategoricals]:
    """The code's per-value means (float64) and integer coding tables, one per value.

    The tables come from the stored scales through :func:`compressors.exact.gaussian_counts`
    (IEEE basic operations only), so every machine codes with the same integers and an
    artifact decodes to the same code everywhere.
    """
    net = models.get(model_id, KIND).module
    with torch.no_grad():
        means, scales = net.means.double().numpy(), net.scales().double().numpy()
    return means, exact.IndexedCategoricals(exact.gaussian_counts(scales, -SYMBOL_RANGE, SYMBOL_RANGE), -SYMBOL_RANGE)


def resolve(latent: int, model: str | None = None) -> models.LoadedModel:
    """The digit model for ``latent`` values: ``model`` (id or shipped name) or the shipped one."""
    if int(latent) not in LATENTS:
        raise ValueError(f"digits: latent must be one of {', '.join(map(str, LATENTS))}, got {latent}")
    lm = models.get(model or shipped_name(int(latent)), KIND)
    if lm.module.latent != int(latent):
        raise ValueError(f"digits model {lm.model_id} has a {lm.module.latent}-value code, not {latent}: "
                         f"pass latent={lm.module.latent}")
    return lm


def check_digit(image: np.ndarray) -> None:
    if image.shape != (SIDE, SIDE, 1):
        kind = "grayscale " if image.shape[2] == 1 else ""
        raise ValueError(f"digits codes 28x28 grayscale images only; this one is {image.shape[1]}x{image.shape[0]} "
                         f"{kind or 'RGB'}".rstrip())


def encode(image: np.ndarray, *, latent: int = 28, model: str | None = None) -> bytes:
    """Code one uint8 (28, 28, 1) digit with the ``latent``-value model (or model ``model``)."""
    check_digit(image)
    lm = resolve(latent, model)
    net = lm.module
    x = torch.from_numpy(np.array(image[None, :, :, 0], dtype=np.float32)).div_(255.0)[:, None]
    with one_thread(), torch.inference_mode():
        y = net.encode_latent(x)[0].double().numpy()
    means, tables = _tables(lm.model_id)
    sym = np.clip(np.round(y - means), -SYMBOL_RANGE, SYMBOL_RANGE).astype(np.int32)
    coder = constriction.stream.stack.AnsCoder()
    tables.encode(coder, sym, np.arange(net.latent))
    payload = coder.get_compressed().astype("<u4").tobytes()
    head = _HEADER.pack(MAGIC, VERSION, net.latent, bytes.fromhex(lm.model_id), SIDE, SIDE, len(payload))
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes) -> np.ndarray:
    """Decode one ``.imd`` artifact to the uint8 (28, 28, 1) digit."""
    if len(data) < HEADER_SIZE + 4:
        raise ValueError(f"digits artifact truncated: {len(data)} bytes, the header alone needs {HEADER_SIZE + 4}")
    magic, version, latent, mid, h, w, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a digits artifact: wrong magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"unsupported digits artifact version {version} (this build reads {VERSION})")
    if len(data) != HEADER_SIZE + n + 4:
        raise ValueError(f"digits artifact is {len(data)} bytes but its header says {HEADER_SIZE + n + 4}")
    (crc,) = struct.unpack_from("<I", data, HEADER_SIZE + n)
    if zlib.crc32(data[: HEADER_SIZE + n]) != crc:
        raise ValueError("digits artifact is corrupt: CRC32 checksum mismatch")
    if (h, w) != (SIDE, SIDE):
        raise ValueError(f"digits artifact claims a {w}x{h} image; the codec only makes 28x28")
    if latent not in LATENTS or n % 4:
        raise ValueError(f"digits artifact header is invalid (latent {latent}, payload {n} bytes)")
    lm = resolve(latent, mid.hex())  # ValueError for a model this process does not know
    means, tables = _tables(lm.model_id)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, "<u4", n // 4, HEADER_SIZE).astype(np.uint32))
    try:
        sym = tables.decode(coder, np.arange(latent))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"digits payload does not decode: {exc}") from None
    if not coder.is_empty():
        raise ValueError("digits payload has words left over after the code: corrupt")
    y_hat = torch.from_numpy((sym + means).astype(np.float32))[None]
    with one_thread(), torch.inference_mode():
        x_hat = lm.module.decode_latent(y_hat)
    return np.ascontiguousarray(x_hat[0, 0].mul(255).round().clamp(0, 255).to(torch.uint8).numpy()[:, :, None])
