"""Classical codecs through Pillow, in the same registry, so every report can compare.

The artifacts are the standard formats (JPEG, WebP, AVIF, JPEG 2000): any viewer opens them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from compressors.imageio import DEFAULT_MAX_PIXELS
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


# The largest artifact a decoder accepts: the largest image the pipeline compresses.
MAX_PIXELS = DEFAULT_MAX_PIXELS
_PILLOW_FORMATS = {"JPEG": "JPEG", "WebP": "WEBP", "AVIF": "AVIF", "JPEG 2000": "JPEG2000"}


def pillow_decode(data: bytes, *, signature: tuple[bytes, ...], offset: int, name: str) -> np.ndarray:
    """Decode a standard-format artifact back to the codec boundary (same C as encoded).

    Artifacts are untrusted: only the expected format's parser is tried, and the size the
    header claims is checked against :data:`MAX_PIXELS` before any pixel is allocated.
    """
    _expect(data, signature, offset, name)
    if name == "WebP":  # Pillow's WebP reader allocates its canvas inside Image.open: check first
        w, h = _webp_size(data)
        if w * h > MAX_PIXELS:
            raise ValueError(f"WebP artifact header claims {w}x{h} pixels (limit {MAX_PIXELS:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, explicitly
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[name]]) as im:
                w, h = im.size
                if w < 1 or h < 1 or w * h > MAX_PIXELS:
                    raise _Refused(f"{name} artifact header claims {w}x{h} pixels (limit {MAX_PIXELS:,})")
                im.load()
                mode = im.mode
                arr = np.asarray(
                    im if mode in ("L", "RGB") else im.convert("L" if mode in ("I;16", "I", "LA") else "RGB")
                )
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except MemoryError:
        raise  # not a verdict on the artifact: the caller decides (a shard makes it the image's row)
    except Image.DecompressionBombError:
        raise ValueError(f"{name} artifact header claims over {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ValueError(f"corrupt {name} artifact: its header does not parse as {name}") from None
    except Exception as exc:  # noqa: BLE001  (Pillow's parsers raise OSError, SyntaxError, struct.error ...)
        raise ValueError(f"corrupt {name} artifact: {type(exc).__name__}: {exc}") from None
    if arr.ndim == 3 and name == "WebP" and _is_gray(arr):
        arr = arr[:, :, 1]  # WebP has no grayscale mode: gray comes back as R ~ G ~ B (YUV rounding)
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


class _Refused(Exception):
    pass


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas size a WebP file claims, read from its first chunk (RIFF container spec)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24-bit canvas width-1, height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14-bit width-1, height-1
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame: 14-bit sizes
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    raise ValueError("corrupt WebP artifact: no VP8, VP8L or VP8X header where the format puts it")


def _is_gray(arr: np.ndarray, rows: int = 64) -> bool:
    """Channels within one level of each other: the YUV->RGB rounding of a gray WebP.

    Checked a band of rows at a time (a colour image stops at its first band), so the test
    costs a few bytes per pixel of one band, not of the image (issue 12.4's memory bound).
    """
    for top in range(0, arr.shape[0], rows):
        a = arr[top : top + rows].astype(np.int16)
        if np.abs(a[..., 0] - a[..., 1]).max() > 1 or np.abs(a[..., 2] - a[..., 1]).max() > 1:
            return False
    return True


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
    # mct=1: the colour transform (RGB -> YCbCr) that Pillow leaves off by default; without it
    # RGB costs ~2.3x the bits at the same PSNR (measured on kodim05).
    lambda image, quality: _save(
        image, "JPEG2000", quality_mode="dB", quality_layers=[20.0 + quality / 4], irreversible=True,
        mct=int(image.shape[2] == 3),
    ),
    "JPEG 2000 (OpenJPEG via Pillow), 9/7 wavelet with colour transform, one layer at a target PSNR",
)
