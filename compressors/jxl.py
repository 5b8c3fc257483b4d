"""The ``jxl`` codec: JPEG XL through libjxl (``imagecodecs``), lossy or exact.

**Lossy** (the default): ``quality`` 1..100 (libjxl's quality scale, mapped to a
Butteraugli distance by ``JxlEncoderDistanceFromQuality``; 90 ~ distance 1, "visually
lossless") and ``effort`` 1..9 (libjxl's speed/size trade-off; 7 is libjxl's default).
The artifact is a bare JPEG XL codestream (``FF 0A``): any JPEG XL viewer opens it.
``target_psnr`` / ``target_ssim`` search the quality per image (:mod:`compressors.target`),
which also makes ``jxl`` a candidate of the ``auto`` codec; with ``lossless`` every
setting is exact, so a target there only costs encodes.

**Exact** (``lossless=True``): the artifact gives back the source exactly, by one of
three routes (the report's ``route`` column says which):

- ``transcode``: a JPEG source is re-packed by libjxl (its DCT coefficients entropy-coded
  again, plus the data to rebuild the file: ``jbrd``); :func:`restore` gives back the
  original JPEG byte for byte. Every transcode is restored once at encode time and
  compared with the source; one that does not come back identical is stored instead.
- ``lossless``: any other source whose pixels the pipeline holds exactly
  (:attr:`compressors.imageio.Decoded.pixel_exact`) is coded losslessly (JPEG XL
  modular); decoding gives back the pixels exactly.
- ``stored``: the source is kept as it is, under its own name (``Encoded.extension=""``),
  when libjxl cannot transcode it (CMYK, arithmetic coding, 12-bit, damaged but
  decodable), when the pipeline's pixels would not restore it (alpha, 16-bit, frames),
  or when the JPEG XL artifact would not be smaller. Nothing is ever dropped.

Exact artifacts are JPEG XL *containers* that end with one extra box, ``imck``
(unknown boxes are ignored by JPEG XL readers), holding a SHA-256: of the original file
for a transcode (checked by :func:`restore`), of the pixels for a lossless code (checked
by :func:`decode`). A mismatch raises ``ValueError``: never a silent wrong file.

Untrusted artifacts: the size, bit depth and channel count are read from the codestream
header (ISO/IEC 18181-1 SizeHeader and ImageMetadata, parsed here in pure Python) and
checked before libjxl is asked to allocate anything.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from compressors.imageio import DEFAULT_MAX_PIXELS, ImageError, decode_image
from compressors.registry import Codec, Encoded, Param, register

try:  # imagecodecs is a declared dependency; a broken install says so when the codec is used
    import imagecodecs
except ImportError as _exc:  # pragma: no cover
    imagecodecs = None
    _IMPORT_ERROR = _exc

MAX_PIXELS = DEFAULT_MAX_PIXELS  # the largest artifact a decoder accepts (tests lower it)
SIGNATURE_CODESTREAM = b"\xff\x0a"
SIGNATURE_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
CHECKSUM_BOX = b"imck"
CHECKSUM_VERSION = 1
KIND_FILE, KIND_PIXELS = 0, 1  # what the checksum covers: the original file, or the decoded pixels
JPEG_SOI = b"\xff\xd8\xff"


def _lib():
    if imagecodecs is None:  # pragma: no cover
        raise RuntimeError(f"the jxl codec needs imagecodecs (pip install imagecodecs): {_IMPORT_ERROR}")
    return imagecodecs


# ---------------------------------------------------------------- the container (ISO/IEC 18181-2)


def _boxes(data: bytes):
    """``(type, payload_start, payload_end)`` of each box of a JPEG XL container."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("corrupt JPEG XL artifact: a box header is cut off")
        size, kind = struct.unpack_from(">I4s", data, pos)
        start = pos + 8
        if size == 1:  # a 64-bit size follows
            if pos + 16 > len(data):
                raise ValueError("corrupt JPEG XL artifact: a box header is cut off")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            start = pos + 16
        elif size == 0:  # the last box runs to the end of the file
            size = len(data) - pos
        end = pos + size
        if end < start or end > len(data):
            raise ValueError(f"corrupt JPEG XL artifact: box {kind!r} claims {size} bytes")
        yield kind, start, end
        pos = end


def _codestream_head(data: bytes, n: int = 64) -> bytes:
    """The first ``n`` bytes (or fewer) of the codestream, from a bare codestream or a container."""
    if data.startswith(SIGNATURE_CODESTREAM):
        return data[:n]
    if not data.startswith(SIGNATURE_CONTAINER):
        raise ValueError("not a JPEG XL artifact (bad signature)")
    head = b""
    for kind, start, end in _boxes(data):
        if kind == b"jxlc":
            return data[start : min(end, start + n)]
        if kind == b"jxlp":  # a part of the codestream, after a 4-byte index
            head += data[start + 4 : end]
            if len(head) >= n:
                break
    if not head:
        raise ValueError("corrupt JPEG XL artifact: the container holds no codestream")
    return head[:n]


def _has_box(data: bytes, wanted: bytes) -> bool:
    return data.startswith(SIGNATURE_CONTAINER) and any(kind == wanted for kind, _, _ in _boxes(data))


def _checksum(data: bytes) -> tuple[int, bytes] | None:
    """``(kind, sha256 digest)`` from this artifact's ``imck`` box, if it has one."""
    if not data.startswith(SIGNATURE_CONTAINER):
        return None
    for kind, start, end in _boxes(data):
        if kind == CHECKSUM_BOX:
            body = data[start:end]
            if len(body) != 34 or body[0] != CHECKSUM_VERSION or body[1] not in (KIND_FILE, KIND_PIXELS):
                raise ValueError("corrupt JPEG XL artifact: unreadable imgpress checksum box")
            return body[1], body[2:]
    return None


def _with_checksum(container: bytes, kind: int, digest: bytes) -> bytes:
    if not container.startswith(SIGNATURE_CONTAINER):
        raise ValueError("a checksum box needs the JPEG XL container")
    return container + struct.pack(">I4sBB", 8 + 34, CHECKSUM_BOX, CHECKSUM_VERSION, kind) + digest


def pixel_digest(image: np.ndarray) -> bytes:
    """SHA-256 of a codec-boundary image: its shape, then its samples in C order."""
    h, w, c = image.shape
    return hashlib.sha256(struct.pack("<III", h, w, c) + np.ascontiguousarray(image).tobytes()).digest()


# ---------------------------------------------------------------- the codestream header (ISO/IEC 18181-1)


class _Bits:
    """Reads the codestream's fields: little-endian bit order, the spec's U32 distributions."""

    def __init__(self, data: bytes):
        self.value = int.from_bytes(data, "little")
        self.size = 8 * len(data)
        self.pos = 0

    def bits(self, n: int) -> int:
        if self.pos + n > self.size:
            raise ValueError("corrupt JPEG XL artifact: the header is cut off")
        out = (self.value >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return out

    def u32(self, *dist: tuple[int, int]) -> int:
        """``dist``: four ``(bits, offset)``; ``(0, v)`` is the constant ``v``."""
        n, offset = dist[self.bits(2)]
        return offset + (self.bits(n) if n else 0)


_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
_SIZE = ((9, 1), (13, 1), (18, 1), (30, 1))
_PREVIEW_DIV8 = ((0, 16), (0, 32), (5, 1), (9, 33))
_PREVIEW = ((6, 1), (8, 65), (10, 321), (12, 1345))


def _size(r: _Bits, small: tuple, large: tuple, div8_is_u32: bool) -> tuple[int, int]:
    div8 = r.bits(1)
    if div8:
        h = 8 * (r.u32(*small) if div8_is_u32 else r.bits(5) + 1)
    else:
        h = r.u32(*large)
    ratio = r.bits(3)
    if ratio:
        num, den = _RATIOS[ratio]
        return h * num // den, h
    if div8:
        return 8 * (r.u32(*small) if div8_is_u32 else r.bits(5) + 1), h
    return r.u32(*large), h


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    bits_per_sample: int
    float_samples: bool
    extra_channels: int


def read_header(data: bytes) -> Header:
    """Image size, sample format and extra-channel count from the codestream's first bytes."""
    head = _codestream_head(data)
    if not head.startswith(SIGNATURE_CODESTREAM):
        raise ValueError("corrupt JPEG XL artifact: the codestream does not start with FF 0A")
    r = _Bits(head[2:])
    width, height = _size(r, (), _SIZE, div8_is_u32=False)
    if not r.bits(1):  # not all_default
        if r.bits(1):  # extra_fields
            r.bits(3)  # orientation - 1
            if r.bits(1):  # intrinsic size
                _size(r, (), _SIZE, div8_is_u32=False)
            if r.bits(1):  # preview
                _size(r, _PREVIEW_DIV8, _PREVIEW, div8_is_u32=True)
            if r.bits(1):  # animation
                r.u32((0, 100), (0, 1000), (10, 1), (30, 1))
                r.u32((0, 1), (0, 1001), (8, 1), (10, 1))
                r.u32((0, 0), (3, 0), (16, 0), (32, 0))
                r.bits(1)
        float_samples = bool(r.bits(1))
        if float_samples:
            bits = r.u32((0, 32), (0, 16), (0, 24), (6, 1))
            r.bits(4)
        else:
            bits = r.u32((0, 8), (0, 10), (0, 12), (6, 1))
        r.bits(1)  # modular_16_bit_buffer_sufficient
        extra = r.u32((0, 0), (0, 1), (4, 2), (12, 1))
    else:
        bits, float_samples, extra = 8, False, 0
    return Header(width, height, bits, float_samples, extra)


def check_header(data: bytes) -> Header:
    """Refuse, before libjxl allocates, what this codec never writes or a worker cannot hold."""
    h = read_header(data)
    if h.width < 1 or h.height < 1 or h.width * h.height > MAX_PIXELS:
        raise ValueError(f"JPEG XL artifact header claims {h.width}x{h.height} pixels (limit {MAX_PIXELS:,})")
    if h.float_samples or h.bits_per_sample > 8:
        raise ValueError(f"JPEG XL artifact header claims {h.bits_per_sample}-bit samples; this codec writes 8-bit")
    if h.extra_channels > 1:
        raise ValueError(f"JPEG XL artifact header claims {h.extra_channels} extra channels; this codec writes none")
    return h


# ---------------------------------------------------------------- decode, restore


def _libjxl_error(what: str, exc: Exception) -> ValueError:
    return ValueError(f"corrupt JPEG XL artifact: libjxl could not {what}: {type(exc).__name__}: {exc}")


def decode(data: bytes) -> np.ndarray:
    """The artifact's pixels, uint8 (H, W, 1|3); a pixel checksum, if present, must match."""
    check_header(data)
    checksum = _checksum(data)
    try:
        image = _lib().jpegxl_decode(data, index=0, numthreads=1)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (libjxl reports every bad stream as an exception)
        raise _libjxl_error("decode it", exc) from None
    if image.dtype != np.uint8:
        raise ValueError(f"JPEG XL artifact decodes to {image.dtype}; this codec writes 8-bit")
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"JPEG XL artifact decodes to shape {image.shape}; this codec writes gray or RGB")
    image = np.ascontiguousarray(image)
    if checksum is not None and checksum[0] == KIND_PIXELS and pixel_digest(image) != checksum[1]:
        raise ValueError("JPEG XL artifact: the decoded pixels do not match the checksum it carries")
    return image


def restore(data: bytes) -> bytes | None:
    """The original JPEG's bytes from a transcoded artifact (checked); ``None`` for a pixel artifact."""
    check_header(data)
    if not _has_box(data, b"jbrd"):
        return None
    checksum = _checksum(data)
    try:
        original = bytes(_lib().jpegxl_decode_jpeg(data, numthreads=1))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _libjxl_error("rebuild the JPEG", exc) from None
    if checksum is not None and checksum[0] == KIND_FILE and hashlib.sha256(original).digest() != checksum[1]:
        raise ValueError("JPEG XL artifact: the rebuilt JPEG does not match the original's checksum")
    return original


# ---------------------------------------------------------------- encode


def encode(image: np.ndarray, *, quality: int, effort: int, lossless: bool, source: bytes | None) -> Encoded:
    if not lossless:
        return Encoded(bytes(_lib().jpegxl_encode(_plane(image), level=quality, effort=effort, numthreads=1)))
    if source is not None and source.startswith(JPEG_SOI):
        return _transcode(source)
    if source is not None:
        why = _not_pixel_exact(source)
        if why:
            return _stored(source, why)
    data = _lib().jpegxl_encode(_plane(image), lossless=True, effort=effort, usecontainer=True, numthreads=1)
    artifact = _with_checksum(bytes(data), KIND_PIXELS, pixel_digest(image))
    if source is not None and len(artifact) >= len(source):
        return _stored(source, f"lossless JPEG XL ({len(artifact):,} bytes) is not smaller than the source")
    return Encoded(artifact, route="lossless")


def _plane(image: np.ndarray) -> np.ndarray:
    return image[:, :, 0] if image.shape[2] == 1 else image


def _transcode(source: bytes) -> Encoded:
    lib = _lib()
    try:
        data = bytes(lib.jpegxl_encode_jpeg(source, usecontainer=True, numthreads=1))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  (CMYK, arithmetic coding, 12-bit, damaged: JXL_ENC_ERR_GENERIC)
        return _stored(source, f"libjxl cannot transcode this JPEG ({exc})")
    artifact = _with_checksum(data, KIND_FILE, hashlib.sha256(source).digest())
    try:
        same = restore(artifact) == source
    except ValueError:
        same = False
    if not same:
        return _stored(source, "libjxl's transcode did not rebuild the JPEG byte for byte")
    if len(artifact) >= len(source):
        return _stored(source, f"the transcode ({len(artifact):,} bytes) is not smaller than the JPEG")
    return Encoded(artifact, route="transcode")


def _stored(source: bytes, why: str) -> Encoded:
    return Encoded(source, decision={"stored_because": why}, route="stored", extension="")


def _not_pixel_exact(source: bytes) -> str:
    """Why the pipeline's pixels would not restore this (non-JPEG) source, or "" when they would."""
    try:
        decoded = decode_image(source)
    except ImageError as exc:  # the shard decoded it already; a second opinion differing is odd, but safe
        return f"the source does not decode the same way twice ({exc})"
    if decoded.pixel_exact:
        return ""
    return f"the pipeline's pixels are not the source's ({decoded.conversion})"


# Where a quality-target search starts (compressors/target.py): median PSNR and SSIM-dB per
# quality over 30 images of ../shared/data/train scaled by 0.7 (never Kodak), effort 7, measured
# by `python bench/target.py --priors --train-images 30 --codecs jxl`.
TARGET_PRIORS = {
    "psnr": ((10, 24.55), (20, 26.45), (30, 27.73), (40, 28.3), (50, 29.1), (60, 30.24), (70, 31.71), (75, 32.66),
             (80, 33.77), (85, 35.16), (90, 36.97), (95, 40.08), (100, 58.28)),
    "ssim": ((10, 4.68), (20, 6.42), (30, 7.49), (40, 8.07), (50, 8.69), (60, 9.5), (70, 10.8), (75, 11.76),
             (80, 12.86), (85, 14.31), (90, 16.1), (95, 18.93), (100, 32.71)),
}

JXL = register(
    Codec(
        name="jxl",
        extension=".jxl",
        encode_fn=encode,
        decode_fn=decode,
        restore_fn=restore,
        takes_source=True,
        signatures=((0, SIGNATURE_CODESTREAM), (0, SIGNATURE_CONTAINER)),
        target_search="quality",
        target_priors=TARGET_PRIORS,
        params={
            "quality": Param(75, 1, 100, "lossy quality: 1 (smallest) .. 100 (best); 90 ~ visually lossless"),
            "effort": Param(7, 1, 9, "encoder effort: 1 (fastest) .. 9 (smallest); 7 is libjxl's default"),
            "lossless": Param(
                False, help="exact: JPEGs transcoded (restorable byte for byte), others lossless, "
                "the rest kept as they are; quality is then unused", kind=bool,
            ),
        },
        description="JPEG XL (libjxl via imagecodecs): lossy, or exact (JPEG transcoding, lossless modular)",
    )
)
