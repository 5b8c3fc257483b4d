"""The ``.imp`` artifact: a self-describing container for one autoencoder bitstream.

Layout (little-endian)::

    magic  b"IMPA"  4    codec id   u8 (1 = autoencoder)   version u8
    model id        8 bytes (16 hex digits)
    H u32, W u32, C u8, quality u8, pad_bottom u16, pad_right u16
    payload length u32, payload (ANS words), CRC32 u32 of everything before it

Everything is validated (magic, version, codec id, lengths, checksum, shape limits,
padding) before the decoder allocates anything image-sized.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"IMPA"
VERSION = 1
CODEC_ID = 1
MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; bounds the memory a claimed shape can ask for
STRIDE = 64
_HEADER = struct.Struct("<4sBB8sIIBBHHI")
HEADER_SIZE = _HEADER.size
TRAILER_SIZE = 4


@dataclass(frozen=True)
class Header:
    model_id: str
    height: int
    width: int
    channels: int
    quality: int
    pad_bottom: int
    pad_right: int


def padding_for(height: int, width: int) -> tuple[int, int]:
    return (-height) % STRIDE, (-width) % STRIDE


def pack(header: Header, payload: bytes) -> bytes:
    mid = bytes.fromhex(header.model_id)
    head = _HEADER.pack(MAGIC, CODEC_ID, VERSION, mid, header.height, header.width, header.channels,
                        header.quality, header.pad_bottom, header.pad_right, len(payload))
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Validate an artifact and return its header and payload; ``ValueError`` says what is wrong."""
    if len(data) < HEADER_SIZE + TRAILER_SIZE:
        raise ValueError(f"autoencoder artifact truncated: {len(data)} bytes, the header alone needs {HEADER_SIZE + TRAILER_SIZE}")
    magic, codec_id, version, mid, h, w, c, q, pb, pr, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not an autoencoder artifact: wrong magic {magic!r} (expected {MAGIC!r})")
    if codec_id != CODEC_ID:
        raise ValueError(f"autoencoder artifact has codec id {codec_id}, expected {CODEC_ID}")
    if version != VERSION:
        raise ValueError(f"unsupported autoencoder artifact version {version} (this build reads {VERSION})")
    expected = HEADER_SIZE + n + TRAILER_SIZE
    if len(data) < expected:
        raise ValueError(f"autoencoder artifact truncated: {len(data)} bytes, header says {expected}")
    if len(data) > expected:
        raise ValueError(f"autoencoder artifact has {len(data) - expected} trailing bytes")
    (crc,) = struct.unpack_from("<I", data, HEADER_SIZE + n)
    if zlib.crc32(data[: HEADER_SIZE + n]) != crc:
        raise ValueError("autoencoder artifact is corrupt: CRC32 checksum mismatch")
    if h < 1 or w < 1 or c not in (1, 3):
        raise ValueError(f"autoencoder artifact claims an invalid shape ({h}, {w}, {c})")
    if h * w > MAX_PIXELS:
        raise ValueError(f"autoencoder artifact claims {h}x{w} pixels, above the limit of {MAX_PIXELS}")
    if (pb, pr) != padding_for(h, w):
        raise ValueError(f"autoencoder artifact padding ({pb}, {pr}) does not match its shape {h}x{w}")
    header = Header(model_id=mid.hex(), height=h, width=w, channels=c, quality=q, pad_bottom=pb, pad_right=pr)
    return header, data[HEADER_SIZE : HEADER_SIZE + n]
