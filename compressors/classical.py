"""Classical codecs through Pillow, in the same registry, so every report can compare.

The artifacts are the standard formats (JPEG, WebP, AVIF, JPEG 2000): any viewer opens them.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from compressors.registry import Codec, Param, register

QUALITY = Param(75, 1, 100, "quality: 1 (smallest) .. 100 (best)")


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def _save(image: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    _pil(image).save(buf, format=fmt, **options)
    return buf.getvalue()


def _expect(data: bytes, signature: tuple[bytes, ...], offset: int, name: str) -> None:
    if not any(data[offset : offset + len(s)] == s for s in signature):
        raise ValueError(f"not a {name} artifact (bad signature)")


def pillow_decode(data: bytes, *, signature: tuple[bytes, ...], offset: int, name: str) -> np.ndarray:
    """Decode a standard-format artifact back to the codec boundary (same C as encoded)."""
    _expect(data, signature, offset, name)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im if mode in ("L", "RGB") else im.convert("L" if mode in ("I;16", "I", "LA") else "RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"corrupt {name} artifact: {exc}") from None
    if arr.ndim == 3 and name == "WebP" and _is_gray(arr):
        arr = arr[:, :, 1]  # WebP has no grayscale mode: gray comes back as R ~ G ~ B (YUV rounding)
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


def _is_gray(arr: np.ndarray) -> bool:
    """Channels within one level of each other: the YUV->RGB rounding of a gray WebP."""
    a = arr.astype(np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 1 and np.abs(a[..., 2] - a[..., 1]).max() <= 1)


def _codec(name: str, extension: str, fmt: str, signature, offset, params, encode, description) -> Codec:
    return register(
        Codec(
            name=name,
            extension=extension,
            encode_fn=encode,
            decode_fn=lambda data: pillow_decode(data, signature=signature, offset=offset, name=fmt),
            params=params,
            description=description,
        )
    )


JPEG = _codec(
    "jpeg", ".jpg", "JPEG", (b"\xff\xd8\xff",), 0,
    {"quality": QUALITY},
    lambda image, quality: _save(image, "JPEG", quality=quality, subsampling="4:2:0", optimize=True),
    "JPEG (libjpeg via Pillow), 4:2:0 chroma subsampling, optimised Huffman tables",
)
WEBP = _codec(
    "webp", ".webp", "WebP", (b"WEBP",), 8,
    {"quality": QUALITY},
    lambda image, quality: _save(image, "WEBP", quality=quality, method=6),
    "WebP lossy (libwebp via Pillow), method 6",
)
AVIF = _codec(
    "avif", ".avif", "AVIF", (b"ftypavif", b"ftypavis"), 4,
    {"quality": QUALITY},
    lambda image, quality: _save(image, "AVIF", quality=quality, speed=6),
    "AVIF (libavif via Pillow), speed 6",
)
JPEG2000 = _codec(
    "jpeg2000", ".jp2", "JPEG 2000", (b"\x00\x00\x00\x0cjP  ",), 0,
    {"quality": Param(75, 1, 100, "quality: 1 (smallest) .. 100 (best); q asks OpenJPEG for 20 + q/4 dB")},
    # OpenJPEG takes per-layer PSNR targets; 20 + q/4 dB spans 20..45 dB, the range users meet.
    lambda image, quality: _save(
        image, "JPEG2000", quality_mode="dB", quality_layers=[20.0 + quality / 4], irreversible=True
    ),
    "JPEG 2000 (OpenJPEG via Pillow), 9/7 wavelet, one layer at a target PSNR",
)
