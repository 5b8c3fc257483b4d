"""Turn any image file's bytes into the codec boundary's array, on purpose.

The rules, applied in this order (each applied rule is named in ``Decoded.conversion``
so reports say what happened to every image):

- the pixel count claimed by the header is checked against ``max_pixels`` *before*
  any pixel is decoded (decompression bombs become a clear error);
- multi-frame files (animated GIF/WebP/APNG, multi-page TIFF) keep their first frame;
- EXIF orientation is applied, so the array is the image as a viewer shows it;
- 16-bit and 32-bit integer samples are scaled to 8 bits (``round(v / 257)``; 16-bit
  RGB(A) PNGs are narrowed by Pillow itself, which keeps the high byte: within one level);
- palette images are expanded to RGB (or RGBA when they carry transparency);
- CMYK and YCbCr are converted to RGB;
- alpha is composited over white: codecs and metrics work on what a viewer shows,
  and classical formats without alpha (JPEG) stay comparable with the others;
- grayscale stays one channel (``C == 1``); everything else is RGB (``C == 3``).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb limit is ~89 Mpx with a warning below 2x; we decide explicitly.
DEFAULT_MAX_PIXELS = 100_000_000


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest file worth reading for an image of at most ``max_pixels``.

    8 bytes a pixel is an uncompressed 16-bit RGBA image, the largest common layout;
    64 MiB more covers metadata (EXIF, ICC profiles, thumbnails). A bigger file is
    refused before it is read, so a huge (or endless) file cannot exhaust a worker.
    """
    return 8 * max_pixels + 64 * 2**20


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray  # uint8 (H, W, C), C in {1, 3}
    source_format: str  # "PNG", "JPEG", ...
    source_mode: str  # Pillow mode before conversion, e.g. "I;16", "CMYK"
    conversion: str  # ";"-joined rules applied, "" when none

    @property
    def pixel_exact(self) -> bool:
        """Whether ``image`` holds every sample of the source as a viewer shows it.

        True when no rule was applied or only rules that change the layout, not a value
        (a palette expanded, equal RGB channels kept once, an all-opaque alpha dropped,
        bilevel as 0/255 gray): a lossless code of ``image`` then restores the source's
        pixels exactly. False after alpha compositing, 16-bit narrowing, EXIF rotation,
        colour conversion or taking one frame of many.
        """
        return all(step in PIXEL_PRESERVING for step in self.conversion.split(";") if step)


# The rules below that keep every sample value (see Decoded.pixel_exact).
PIXEL_PRESERVING = frozenset(
    {"palette expanded", "equal RGB channels stored as grayscale", "opaque alpha dropped", "bilevel to grayscale"}
)


class ImageError(ValueError):
    """The bytes are not an image this pipeline can use; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode an image file's bytes to a uint8 (H, W, C) array following the rules above."""
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: we check ourselves
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageError(f"image header claims an empty size {w}x{h}")
            if w * h > max_pixels:
                raise ImageError(
                    f"image header claims {w}x{h} = {w * h:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb)"
                )
            steps: list[str] = []
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)
                steps.append(f"first frame of {frames}")
            fmt, mode = im.format or "unknown", im.mode
            if any(";16" in str(getattr(t, "args", "")) for t in getattr(im, "tile", ()) or ()) \
                    and mode in ("RGB", "RGBA"):
                steps.append("16-bit to 8-bit")  # Pillow narrows 16-bit RGB(A) PNG samples as it loads
            im.load()
            rotated = ImageOps.exif_transpose(im)
            if rotated is not im and rotated.size != im.size or _orientation(im) not in (0, 1):
                steps.append(f"exif orientation {_orientation(im)} applied")
            im = rotated
            image = _to_array(im, steps)
    except ImageError:
        raise
    except UnidentifiedImageError:
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg_beyond_pillow(data, max_pixels)
        raise ImageError(f"not an image in a format this pipeline reads (starts with {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        # Raised inside Image.open, before we see the size, past Pillow's hard limit.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        n = int(claimed.group(1)) if claimed else None
        limit = max_pixels if n is None or n > max_pixels else Image.MAX_IMAGE_PIXELS * 2  # Pillow's hard stop
        raise ImageError(
            f"image header claims {f'{n:,}' if n else 'too many'} pixels, over the limit of {limit:,} "
            "(possible decompression bomb)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt files as OSError/SyntaxError/ValueError.
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001  (a plugin tripping on a hostile file: IndexError, struct.error ...)
        raise ImageError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    return Decoded(image=image, source_format=fmt, source_mode=mode, conversion=";".join(steps))


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int, int]:
    """``(marker, precision, height, width, components)`` of a JPEG's frame header (SOFn)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError("corrupt JPEG: a marker was expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF and pos + 10 <= len(data):
            p, h, w, n = data[pos + 4], *struct.unpack(">HH", data[pos + 5 : pos + 9]), data[pos + 9]
            return marker, p, h, w, n
        if marker in (0xD9, 0xDA) or length < 2:
            break
        pos += 2 + length
    raise ImageError("corrupt JPEG: no frame header before the scan")


def _jpeg_beyond_pillow(data: bytes, max_pixels: int) -> Decoded:
    """12-bit and lossless JPEGs, which Pillow does not read: libjpeg-turbo through imagecodecs.

    The frame header's size is checked before decoding; samples above 8 bits are scaled to
    8 bits (``round(v * 255 / (2**bits - 1))``), named in the conversion like 16-bit PNGs.
    """
    marker, bits, h, w, components = _jpeg_frame(data)
    kind = f"{bits}-bit {'lossless ' if marker in (0xC3, 0xC7, 0xCB, 0xCF) else ''}JPEG"
    if w < 1 or h < 1:
        raise ImageError(f"{kind} header claims an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            f"image header claims {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb)"
        )
    if components not in (1, 3):
        raise ImageError(f"{kind} with {components} components: not an image this pipeline reads")
    try:
        import imagecodecs  # noqa: PLC0415  (a runtime dependency; only these rare files need it here)

        arr = np.asarray(imagecodecs.jpeg8_decode(data))
    except MemoryError:
        raise ImageError("not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001  (libjpeg's errors: a corrupt or unsupported stream)
        raise ImageError(f"corrupt or unsupported {kind}: {exc}") from None
    steps = []
    if arr.dtype != np.uint8:
        top = (1 << bits) - 1
        arr = ((arr.astype(np.uint32).clip(0, top) * 255 + top // 2) // top).astype(np.uint8)
        steps.append(f"{bits}-bit to 8-bit")
    image = arr[:, :, None] if arr.ndim == 2 else _gray_if_equal(arr, steps)
    return Decoded(image=np.ascontiguousarray(image), source_format="JPEG", source_mode=kind,
                   conversion=";".join(steps))


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not a broken image
        return 1


def _to_array(im: Image.Image, steps: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im)
        hi = 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        # uint32 is wide enough for v + 128 and half the memory of int64 on a 100 Mpx image
        arr = arr.clip(0, 65535).astype(np.uint32)
        if hi == 65535:
            arr = (arr + 128) // 257
            steps.append("16-bit to 8-bit")
        return arr.clip(0, 255).astype(np.uint8)[:, :, None]
    if mode == "F":
        steps.append("float samples clipped to 0..255")
        return np.asarray(im).clip(0, 255).round().astype(np.uint8)[:, :, None]
    if mode == "1":
        steps.append("bilevel to grayscale")
        return np.asarray(im.convert("L"))[:, :, None]
    if mode == "P":
        has_alpha = "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"
        im = im.convert("RGBA" if has_alpha else "RGB")
        steps.append("palette expanded")
        mode = im.mode
    if mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
        steps.append("palette expanded")
    if mode in ("LA", "La"):
        return _over_white(np.asarray(im.convert("LA")), steps)
    if mode in ("RGBA", "RGBa"):
        return _over_white(np.asarray(im.convert("RGBA")), steps)
    if mode == "L":
        return np.asarray(im)[:, :, None]
    if mode == "RGB":
        return _gray_if_equal(np.asarray(im), steps)
    # CMYK, YCbCr, LAB, HSV, RGBX ...: Pillow's conversion to RGB.
    steps.append(f"{mode} to RGB")
    return _gray_if_equal(np.asarray(im.convert("RGB")), steps)


def _gray_if_equal(rgb: np.ndarray, steps: list[str]) -> np.ndarray:
    """RGB whose three channels are identical is grayscale: one channel, no loss."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        steps.append("equal RGB channels stored as grayscale")
        return np.ascontiguousarray(rgb[..., :1])
    return rgb


def _over_white(arr: np.ndarray, steps: list[str]) -> np.ndarray:
    color, alpha = arr[..., :-1].astype(np.uint32), arr[..., -1:].astype(np.uint32)
    if alpha.min() == 255:
        steps.append("opaque alpha dropped")
        out = np.ascontiguousarray(arr[..., :-1])
    else:
        steps.append("alpha composited over white")
        out = ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return _gray_if_equal(out, steps) if out.shape[2] == 3 else out


def encode_png(image: np.ndarray, *, compress_level: int = 3) -> bytes:
    """A lossless PNG of a codec-boundary array (used for decompressed outputs).

    zlib level 3, not Pillow's 6: on 20 photos of ../shared/data/train, 42.5 against 79.6 ms
    CPU per image for +0.55 % bytes (level 1: 33 ms, +2.8 %), and PNG writing is most of
    what ``decompress`` spends per image.
    """
    buf = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()
