"""The ``.impl`` artifact: one losslessly coded image and everything needed to check it.

Layout (little-endian)::

    magic b"IMPL" 4 | codec id u8 (2 = lossless) | version u8 | model id 8 bytes
    H u32 | W u32 | C u8 | stripe u16 (rows per independently started stripe)
    CRC32 u32 of the decoded pixels (uint8 H x W x C, row-major)
    counts length u32 | words length u32
    counts: H LEB128 varints (16-bit words per row stream) | words: u16 each
    CRC32 u32 of everything before it

Everything (magic, ids, lengths, CRC32, shape limits, the counts summing to the words)
is checked before anything image-sized is allocated. The pixel CRC32 is checked after
decoding: a decoder whose arithmetic differed from the encoder's reports an error
instead of returning other pixels.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"IMPL"
CODEC_ID = 2
VERSION = 1
MAX_PIXELS = 100_000_000  # the pipeline's input limit
# The fewest bits one value can cost: the largest interval a coding table can give a value
# (every other value of the 8-bit range keeps at least 1 of 2**16). A payload too short to
# hold the claimed pixels even at that cost is refused before anything is allocated.
MIN_BITS_PER_VALUE = 0.0056
_HEADER = struct.Struct("<4sBB8sIIBHIII")
HEADER_SIZE = _HEADER.size
TRAILER_SIZE = 4


@dataclass(frozen=True)
class Header:
    model_id: str
    height: int
    width: int
    channels: int
    stripe: int
    pixels_crc: int


def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(data: bytes, n: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) != n or (n and ends[-1] != len(b) - 1):
        raise ValueError(f"lossless artifact: row table holds {len(ends)} entries, the header says {n}")
    starts = np.concatenate(([0], ends[:-1] + 1)) if n else ends
    if n and np.any(ends - starts > 2):
        raise ValueError("lossless artifact: a row length is out of range")
    value = np.zeros(n, dtype=np.int64)
    for k in range(3):  # at most 3 bytes: 21 bits
        has = starts + k <= ends
        value[has] |= (b[starts[has] + k].astype(np.int64) & 0x7F) << (7 * k)
    return value


def pack(header: Header, counts: np.ndarray, words: np.ndarray) -> bytes:
    table = _varints(counts)
    head = _HEADER.pack(MAGIC, CODEC_ID, VERSION, bytes.fromhex(header.model_id), header.height, header.width,
                        header.channels, header.stripe, header.pixels_crc, len(table), 2 * len(words))
    body = head + table + words.astype("<u2").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, np.ndarray, np.ndarray]:
    """Validate an artifact; ``(header, counts per row, words)``. ``ValueError`` says what is wrong."""
    if len(data) < HEADER_SIZE + TRAILER_SIZE:
        raise ValueError(f"lossless artifact truncated: {len(data)} bytes, the header alone needs "
                         f"{HEADER_SIZE + TRAILER_SIZE}")
    magic, codec_id, version, mid, h, w, c, stripe, pcrc, n_table, n_words = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a lossless artifact: wrong magic {magic!r} (expected {MAGIC!r})")
    if codec_id != CODEC_ID:
        raise ValueError(f"lossless artifact has codec id {codec_id}, expected {CODEC_ID}")
    if version != VERSION:
        raise ValueError(f"unsupported lossless artifact version {version} (this build reads {VERSION})")
    expected = HEADER_SIZE + n_table + n_words + TRAILER_SIZE
    if len(data) != expected:
        raise ValueError(f"lossless artifact is {len(data)} bytes, its header says {expected} (truncated or padded)")
    (crc,) = struct.unpack_from("<I", data, expected - TRAILER_SIZE)
    if zlib.crc32(data[: expected - TRAILER_SIZE]) != crc:
        raise ValueError("lossless artifact is corrupt: CRC32 checksum mismatch")
    if h < 1 or w < 1 or c not in (1, 3) or stripe < 1:
        raise ValueError(f"lossless artifact claims an invalid shape ({h}, {w}, {c}) or stripe {stripe}")
    if h * w > MAX_PIXELS:
        raise ValueError(f"lossless artifact claims {w}x{h} pixels, above the limit of {MAX_PIXELS:,}")
    if n_words % 2 or n_table < h or n_table > 3 * h:
        raise ValueError("lossless artifact: row table or payload length is inconsistent with its shape")
    if 16 * (n_words // 2) * 1.1 + 64 < h * w * c * MIN_BITS_PER_VALUE:
        raise ValueError(f"lossless artifact claims {w}x{h}x{c} values, more than its {n_words} payload bytes can hold")
    counts = _read_varints(data[HEADER_SIZE : HEADER_SIZE + n_table], h)
    if int(counts.sum()) != n_words // 2 or np.any(counts < 2) or np.any(counts > w * c + 2):
        raise ValueError("lossless artifact: row lengths do not add up to the payload")
    words = np.frombuffer(data, dtype="<u2", count=n_words // 2, offset=HEADER_SIZE + n_table)
    header = Header(mid.hex(), h, w, c, stripe, pcrc)
    return header, counts, words
