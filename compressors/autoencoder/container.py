"""The ``.imp`` artifact: a self-describing container for one autoencoder bitstream.

Layout (little-endian), version 2 (written now)::

    magic  b"IMPA"  4    codec id   u8 (1 = autoencoder)   version u8 (2)
    model id        8 bytes (16 hex digits)
    H u32, W u32, C u8, quality u8, pad_bottom u16, pad_right u16
    latent checksum 8 bytes (BLAKE2b-64 of the decoded latent: symbols, table indices, means)
    payload length u32, payload (ANS words), CRC32 u32 of everything before it

Version 1 (the first format) is the same without the latent checksum; it is still read,
and its payload decodes through the version-1 tables (:class:`.entropy.LegacyTables`).
Everything is validated (magic, version, codec id, lengths, checksum, shape limits,
padding) before the decoder allocates anything image-sized.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"IMPA"
VERSION = 2  # what pack() writes by default
CODEC_ID = 1
MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; bounds the memory a claimed shape can ask for
STRIDE = 64
_PREFIX = struct.Struct("<4sBB")
_HEADERS = {1: struct.Struct("<4sBB8sIIBBHHI"), 2: struct.Struct("<4sBB8sIIBBHH8sI")}
HEADER_SIZE = _HEADERS[VERSION].size
TRAILER_SIZE = 4
CHECKSUM_SIZE = 8


@dataclass(frozen=True)
class Header:
    model_id: str
    height: int
    width: int
    channels: int
    quality: int
    pad_bottom: int
    pad_right: int
    version: int = VERSION
    latent_checksum: bytes = bytes(CHECKSUM_SIZE)  # version 2 only


def padding_for(height: int, width: int) -> tuple[int, int]:
    return (-height) % STRIDE, (-width) % STRIDE


def pack(header: Header, payload: bytes) -> bytes:
    mid = bytes.fromhex(header.model_id)
    fields = [MAGIC, CODEC_ID, header.version, mid, header.height, header.width, header.channels,
              header.quality, header.pad_bottom, header.pad_right]
    if header.version >= 2:
        if len(header.latent_checksum) != CHECKSUM_SIZE:
            raise ValueError(f"latent checksum must be {CHECKSUM_SIZE} bytes")
        fields.append(header.latent_checksum)
    body = _HEADERS[header.version].pack(*fields, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Validate an artifact and return its header and payload; ``ValueError`` says what is wrong."""
    if len(data) < _PREFIX.size:
        raise ValueError(f"autoencoder artifact truncated: {len(data)} bytes, the header alone needs "
                         f"{HEADER_SIZE + TRAILER_SIZE}")
    magic, codec_id, version = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not an autoencoder artifact: wrong magic {magic!r} (expected {MAGIC!r})")
    if codec_id != CODEC_ID:
        raise ValueError(f"autoencoder artifact has codec id {codec_id}, expected {CODEC_ID}")
    if version not in _HEADERS:
        raise ValueError(f"unsupported autoencoder artifact version {version} (this build reads "
                         f"{', '.join(map(str, sorted(_HEADERS)))})")
    layout = _HEADERS[version]
    if len(data) < layout.size + TRAILER_SIZE:
        raise ValueError(f"autoencoder artifact truncated: {len(data)} bytes, the header alone needs "
                         f"{layout.size + TRAILER_SIZE}")
    fields = layout.unpack_from(data)
    _, _, _, mid, h, w, c, q, pb, pr = fields[:10]
    checksum = fields[10] if version >= 2 else bytes(CHECKSUM_SIZE)
    n = fields[-1]
    expected = layout.size + n + TRAILER_SIZE
    if len(data) < expected:
        raise ValueError(f"autoencoder artifact truncated: {len(data)} bytes, header says {expected}")
    if len(data) > expected:
        raise ValueError(f"autoencoder artifact has {len(data) - expected} trailing bytes")
    (crc,) = struct.unpack_from("<I", data, layout.size + n)
    if zlib.crc32(data[: layout.size + n]) != crc:
        raise ValueError("autoencoder artifact is corrupt: CRC32 checksum mismatch")
    if h < 1 or w < 1 or c not in (1, 3):
        raise ValueError(f"autoencoder artifact claims an invalid shape ({h}, {w}, {c})")
    if h * w > MAX_PIXELS:
        raise ValueError(f"autoencoder artifact claims {h}x{w} pixels, above the limit of {MAX_PIXELS}")
    if (pb, pr) != padding_for(h, w):
        raise ValueError(f"autoencoder artifact padding ({pb}, {pr}) does not match its shape {h}x{w}")
    header = Header(model_id=mid.hex(), height=h, width=w, channels=c, quality=q, pad_bottom=pb, pad_right=pr,
                    version=version, latent_checksum=checksum)
    return header, data[layout.size : layout.size + n]
