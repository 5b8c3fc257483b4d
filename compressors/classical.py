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
_PILLOW_FORMATS = {"JPEG": "JPEG", "WebP": "WEBP", "AVIF": "AVIF", "JPEG 2000": "JPEG2000", "PNG": "PNG"}


def pillow_decode(
    data: bytes, *, signature: tuple[bytes, ...], offset: int, name: str, lossless: bool = False
) -> np.ndarray:
    """Decode a standard-format artifact back to the codec boundary (same C as encoded).

    Artifacts are untrusted: only the expected format's parser is tried, and the size the
    header claims is checked against :data:`MAX_PIXELS` before any pixel is allocated.
    ``lossless``: a WebP whose three channels are exactly equal is gray (lossy WebP's YUV
    rounding leaves them within one level, which must not turn a lossless RGB image gray).
    WebP and AVIF decode straight into the output array through libwebp / libavif
    (``imagecodecs``): the same pixels as Pillow's readers, without their whole-image
    RGBA copies (issue 12.4: 15-18 and 9.3 bytes per pixel beyond the image through Pillow).
    """
    _expect(data, signature, offset, name)
    if name == "WebP":  # checked from the header, before libwebp allocates anything
        w, h = _webp_size(data)
        if w < 1 or h < 1 or w * h > MAX_PIXELS:
            raise ValueError(f"WebP artifact header claims {w}x{h} pixels (limit {MAX_PIXELS:,})")
        if data[12:16] == b"VP8X" and data[20] & 0x02:  # the animation flag of the extended header
            raise ValueError("WebP artifact is an animation: an imgpress artifact is one still image")
    try:
        arr = _webp_pixels(data, w, h) if name == "WebP" else _pillow_pixels(data, name)
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
    if arr.ndim == 3 and name == "WebP" and _is_gray(arr, 0 if lossless else 1):
        arr = arr[:, :, 1]  # WebP has no grayscale mode: gray comes back as R ~ G ~ B (YUV rounding)
    return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)


def _pillow_pixels(data: bytes, name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, explicitly
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[name]]) as im:
            w, h = im.size
            if w < 1 or h < 1 or w * h > MAX_PIXELS:
                raise _Refused(f"{name} artifact header claims {w}x{h} pixels (limit {MAX_PIXELS:,})")
            if name == "AVIF" and im.mode in ("L", "RGB", "RGBA"):
                arr = _avif_pixels(data, (h, w) if im.mode == "L" else (h, w, len(im.mode)))
                if arr is not None:
                    return arr[:, :, :3] if arr.ndim == 3 else arr
            im.load()
            mode = im.mode
            return np.asarray(
                im if mode in ("L", "RGB") else im.convert("L" if mode in ("I;16", "I", "LA") else "RGB")
            )


def _webp_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """libwebp's RGB output written into the (checked) output array; alpha is dropped, as Pillow's
    ``convert("RGB")`` did. A bitstream of another size than its header claims is refused."""
    import imagecodecs  # noqa: PLC0415  (a runtime dependency, loaded on the first WebP decode)

    return imagecodecs.webp_decode(data, hasalpha=False, out=np.empty((height, width, 3), np.uint8))


def _avif_pixels(data: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """libavif's 8-bit output written into an array of the shape Pillow read from the header.

    None when libavif's path does not take the file (10/12-bit samples: Pillow reduces them to
    8 bits itself, so those still go through Pillow, pixels unchanged); the verdict on a
    corrupt file stays Pillow's too.
    """
    import imagecodecs  # noqa: PLC0415

    try:
        return imagecodecs.avif_decode(data, out=np.empty(shape, np.uint8))
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001  (AvifError, or another depth/shape than the header's)
        return None


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


def _is_gray(arr: np.ndarray, tolerance: int = 1, rows: int = 64) -> bool:
    """Channels within ``tolerance`` levels of each other (1: the YUV->RGB rounding of a gray WebP).

    Checked a band of rows at a time (a colour image stops at its first band), so the test
    costs a few bytes per pixel of one band, not of the image (issue 12.4's memory bound).
    """
    for top in range(0, arr.shape[0], rows):
        a = arr[top : top + rows].astype(np.int16)
        if np.abs(a[..., 0] - a[..., 1]).max() > tolerance or np.abs(a[..., 2] - a[..., 1]).max() > tolerance:
            return False
    return True


def _codec(name: str, extension: str, fmt: str, signature, offset, params, encode, description,
           lossless: bool = False) -> Codec:
    return register(
        Codec(
            name=name,
            extension=extension,
            encode_fn=encode,
            decode_fn=lambda data: pillow_decode(data, signature=signature, offset=offset, name=fmt,
                                                 lossless=lossless),
            params=params,
            description=description,
            signatures=tuple((offset, sig) for sig in signature),
            target_search="quality" if "quality" in params else None,  # the lossless baselines have none
            target_priors=TARGET_PRIORS.get(name, {}),
            target_tolerance=TARGET_TOLERANCE,
        )
    )


# Where a quality-target search starts (compressors/target.py): the median PSNR and SSIM
# (as -10 log10(1 - SSIM)) per quality over 30 images of ../shared/data/train scaled by 0.7
# (never Kodak), measured by `python bench/target.py --priors --train-images 30`.
TARGET_PRIORS: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {  # noqa: E501
    'jpeg': {
        'psnr': ((10, 25.19), (20, 27.3), (30, 28.49), (40, 29.31), (50, 30.01), (60, 30.84), (70, 32.02), (75, 32.77), (80, 33.72), (85, 34.94), (90, 36.79), (95, 40.03), (100, 45.18)),
        'ssim': ((10, 5.69), (20, 7.39), (30, 8.33), (40, 9.04), (50, 9.76), (60, 10.49), (70, 11.44), (75, 11.98), (80, 12.69), (85, 13.69), (90, 15.35), (95, 18.05), (100, 23.2)),
    },
    'webp': {
        'psnr': ((10, 27.01), (20, 28.34), (30, 29.46), (40, 30.63), (50, 31.56), (60, 32.37), (70, 33.22), (75, 33.67), (80, 35.21), (85, 36.81), (90, 39.03), (95, 41.69), (100, 43.19)),
        'ssim': ((10, 6.73), (20, 7.79), (30, 8.71), (40, 9.64), (50, 10.48), (60, 11.22), (70, 12.11), (75, 12.56), (80, 13.8), (85, 15.22), (90, 16.93), (95, 19.06), (100, 20.4)),
    },
    'avif': {
        'psnr': ((10, 24.43), (20, 25.73), (30, 27.25), (40, 29.06), (50, 31.43), (60, 33.69), (70, 36.36), (75, 37.36), (80, 38.56), (85, 39.46), (90, 41.04), (95, 42.46), (100, 44.4)),
        'ssim': ((10, 4.63), (20, 5.84), (30, 7.11), (40, 8.5), (50, 10.4), (60, 12.4), (70, 14.65), (75, 15.65), (80, 16.71), (85, 17.28), (90, 18.79), (95, 20.37), (100, 23.38)),
    },
    'jpeg2000': {
        'psnr': ((10, 22.43), (20, 24.87), (30, 27.38), (40, 29.88), (50, 32.36), (60, 34.89), (70, 37.32), (75, 38.55), (80, 39.79), (85, 40.92), (90, 42.05), (95, 43.18), (100, 44.31)),
        'ssim': ((10, 3.7), (20, 5.04), (30, 6.69), (40, 8.76), (50, 10.79), (60, 12.65), (70, 14.58), (75, 15.64), (80, 16.64), (85, 17.49), (90, 18.28), (95, 19.2), (100, 20.29)),
    },
}
TARGET_TOLERANCE = 0.0


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

# Lossless baselines. Their extensions are compound so that ``decompress``'s longest-suffix
# lookup tells them from kmeans's ``.png`` and lossy WebP's ``.webp``; the files stay
# standard PNG / WebP that any viewer opens.
PNG = _codec(
    "png", ".lossless.png", "PNG", (b"\x89PNG\r\n\x1a\n",), 0, {},
    lambda image: _save(image, "PNG", optimize=True),
    "PNG (zlib via Pillow, optimize=True): lossless baseline",
    lossless=True,
)
WEBP_LOSSLESS = _codec(
    "webp-lossless", ".lossless.webp", "WebP", (b"WEBP",), 8, {},
    lambda image: _save(image, "WEBP", lossless=True, quality=90, method=6),
    "WebP lossless (libwebp via Pillow), method 6, effort 90: lossless baseline",
    lossless=True,
)
