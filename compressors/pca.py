"""The ``pca`` codec: per-channel row PCA, quantised and entropy-coded.

Each colour channel is a matrix whose rows are the samples (Karhunen-Loeve transform of
image rows, as in the method this product was designed from). scikit-learn's PCA keeps
the components that explain a ``variance`` fraction of the channel's row variance, or a
fixed number of ``components``. Per channel the artifact stores the row mean (rounded to
8 bits), the kept components and each row's scores, both uniformly quantised, then LZMA
over the little-endian integers (components and scores column by column): the bytes are
real, nothing is estimated.

Quantisation steps are derived from the truncation error: the scores' step puts the
quantisation noise at a quarter of the mean squared error the dropped components leave
(``step = sqrt(12 * 0.25 * mse)``, at least 0.25 level), the components' step does the
same for their share, given the rows' energy. A PCA reconstruction smears rows; JPEG beats
it by a wide margin (the README's BD-rate table says by how much).

Artifact (little-endian)::

    magic b"IMPC" | codec id u8 (3) | version u8 | 8 reserved bytes | H u32 | W u32 | C u8
    per channel: k u16, score step f32, component step f32, integer width u8 (2 or 4)
    payload length u32 | LZMA payload | CRC32 u32 of everything before it

Decoding validates every field and the checksum before it allocates; the payload then
decompresses a field at a time straight into that field's array (never whole) and must hold
exactly the bytes the header implies. Floats exist for one channel's components and one band
of rows. A channel's integers (components and scores) take at most ``_INT_BYTES_PER_PIXEL`` = 4
bytes per pixel: 16-bit ones always do (k <= min(H, W)), and with 32-bit ones the encoder keeps
at most ``max_components(H, W, 4)`` components (n / 2 for an n x n image: already as many numbers
as pixels) and the decoder refuses an artifact claiming more. Channels are decoded one after the
other, each channel's integers freed before the next's are read: at most 4 bytes per pixel plus
~2 MB (float strips, bands, the LZMA window) beyond the image (issue 12.4).
"""

from __future__ import annotations

import lzma
import math
import struct
import zlib

import numpy as np
from threadpoolctl import threadpool_limits

from compressors.imageio import DEFAULT_MAX_PIXELS
from compressors.registry import Codec, Encoded, Param, register

MAGIC = b"IMPC"
CODEC_ID = 3
VERSION = 1
MAX_PIXELS = DEFAULT_MAX_PIXELS
MAX_COMPONENTS = 4096
_HEAD = struct.Struct("<4sBB8sIIB")
_CHAN = struct.Struct("<HffB")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 20}]  # 1 MiB window: bounded memory both ways
_ROWS = 64  # rows reconstructed at a time: float temporaries stay a small band, not the image
_CHUNK = 1 << 18  # bytes at a time: of components made floats (a strip of columns), of payload decompressed
_PIECE = 1 << 16  # compressed bytes handed to the decompressor at a time
_INT_BYTES_PER_PIXEL = 4  # a channel's components + scores, bytes per pixel, at most


def max_components(h: int, w: int, width: int) -> int:
    """The most components a channel may keep with ``width``-byte integers: its components and
    scores (``width * k * (h + w)`` bytes) stay within ``_INT_BYTES_PER_PIXEL`` bytes per pixel."""
    return min(h, w, MAX_COMPONENTS, _INT_BYTES_PER_PIXEL * h * w // (width * (h + w)))


def _fit(channel: np.ndarray, variance: float, components: int | None):
    """(mean float64 (W,), components (k, W), scores (H, k), per-pixel truncation MSE)."""
    from sklearn.decomposition import PCA

    h, w = channel.shape
    x = channel.astype(np.float64)
    limit = min(h, w)
    if limit < 2:  # a single row or column: the mean row (or the scores) is the image
        mean = x.mean(axis=0)
        return mean, np.zeros((0, w)), np.zeros((h, 0)), float(((x - mean) ** 2).mean())
    n = min(components, limit) if components else variance
    pca = PCA(n_components=n, svd_solver="full").fit(x)
    scores = pca.transform(x)
    total = float(((x - pca.mean_) ** 2).sum())
    kept = float((scores**2).sum())
    return pca.mean_, pca.components_, scores, max(total - kept, 0.0) / (h * w)


def _quantise(values: np.ndarray, step: float) -> tuple[np.ndarray, int]:
    q = np.rint(values / step).astype(np.int64)
    width = 2 if q.size == 0 or np.abs(q).max() < 2**15 else 4
    return q, width


def encode(image: np.ndarray, *, variance: float = 0.95, components: int | None = None) -> Encoded:
    """uint8 (H, W, C) -> ``.pca`` bytes, and the components kept per channel."""
    h, w, c = image.shape
    heads, payload, kept = [], [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for ch in range(c):
            mean, comp, scores, mse = _fit(image[:, :, ch], variance, components)
            k = comp.shape[0]
            s_step = max(math.sqrt(3.0 * mse), 0.25)
            energy = float((scores**2).sum(axis=1).mean()) if k else 0.0
            v_step = max(math.sqrt(3.0 * mse / energy), 1e-4) if energy > 0 else 1.0
            qs, ws = _quantise(scores.T, s_step)  # component by component
            qv, wv = _quantise(comp, v_step)
            width = max(ws, wv)
            most = max_components(h, w, width)
            if k > most:  # only 32-bit integers and nearly every component
                k, qv, qs = most, qv[:most], qs[:most]
            dtype = "<i2" if width == 2 else "<i4"
            payload += [np.clip(np.rint(mean), 0, 255).astype(np.uint8).tobytes(),
                        qv.astype(dtype).tobytes(), qs.astype(dtype).tobytes()]
            heads.append((k, s_step, v_step, width))
            kept.append(k)
    return Encoded(pack(h, w, heads, b"".join(payload)), {"components": kept})


def pack(h: int, w: int, channels: list[tuple[int, float, float, int]], payload: bytes) -> bytes:
    """The container around a payload: ``channels`` = (k, score step, component step, integer
    width) per channel; the payload LZMA-compressed, the CRC32 appended."""
    body = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    data = (_HEAD.pack(MAGIC, CODEC_ID, VERSION, bytes(8), h, w, len(channels))
            + b"".join(_CHAN.pack(*ch) for ch in channels) + struct.pack("<I", len(body)) + body)
    return data + struct.pack("<I", zlib.crc32(data))


def decode(data: bytes) -> np.ndarray:
    """``.pca`` bytes -> uint8 (H, W, C); ``ValueError`` on anything that is not a valid artifact."""
    if len(data) < _HEAD.size + 8:
        raise ValueError(f"pca artifact truncated: {len(data)} bytes")
    magic, codec_id, version, _, h, w, c = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a pca artifact: wrong magic {magic!r} (expected {MAGIC!r})")
    if codec_id != CODEC_ID or version != VERSION:
        raise ValueError(f"pca artifact has codec id {codec_id} version {version}, expected {CODEC_ID} {VERSION}")
    if h < 1 or w < 1 or c not in (1, 3):
        raise ValueError(f"pca artifact claims an invalid shape ({h}, {w}, {c})")
    if h * w > MAX_PIXELS:
        raise ValueError(f"pca artifact header claims {w}x{h} pixels (limit {MAX_PIXELS:,})")
    pos = _HEAD.size
    if len(data) < pos + c * _CHAN.size + 8:
        raise ValueError("pca artifact truncated in its channel table")
    chans = []
    for _ in range(c):
        k, s_step, v_step, width = _CHAN.unpack_from(data, pos)
        pos += _CHAN.size
        if width not in (2, 4) or k > max_components(h, w, width):
            raise ValueError(f"pca artifact claims {k} components of width {width} for a {w}x{h} image")
        if not (math.isfinite(s_step) and math.isfinite(v_step) and s_step > 0 and v_step > 0):
            raise ValueError("pca artifact has invalid quantisation steps")
        chans.append((k, s_step, v_step, width))
    (n_body,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if len(data) != pos + n_body + 4:
        raise ValueError(f"pca artifact is {len(data)} bytes, its header says {pos + n_body + 4}")
    (crc,) = struct.unpack_from("<I", data, pos + n_body)
    if zlib.crc32(data[: pos + n_body]) != crc:
        raise ValueError("pca artifact is corrupt: CRC32 checksum mismatch")
    expected = sum(w + width * k * (w + h) for k, _, _, width in chans)
    payload = _Payload(memoryview(data)[pos : pos + n_body], expected)
    out = np.empty((h, w, c), dtype=np.uint8)
    with threadpool_limits(limits=1, user_api="blas"):
        for ch, (k, s_step, v_step, width) in enumerate(chans):
            dtype = np.dtype("<i2" if width == 2 else "<i4")
            ftype = np.result_type(dtype, np.float32)  # float32 for 16-bit integers, float64 for 32-bit
            mean = payload.array(np.uint8, (w,)).astype(np.float32)
            # Components and scores stay integers (2 or 4 bytes, half their floats); a strip of
            # columns of the components becomes floats at a time, then every band of rows of it.
            comp, scores = payload.array(dtype, (k, w)), payload.array(dtype, (k, h))
            cols = max(1, _CHUNK // (ftype.itemsize * max(k, 1)))
            for c0 in range(0, w, cols):
                strip = comp[:, c0 : c0 + cols] * ftype.type(v_step)
                for r0 in range(0, h, _ROWS):
                    band = (scores[:, r0 : r0 + _ROWS] * ftype.type(s_step)).T
                    out[r0 : r0 + _ROWS, c0 : c0 + cols, ch] = np.clip(
                        np.rint(band @ strip + mean[c0 : c0 + cols]), 0, 255).astype(np.uint8)
            del comp, scores, strip, band  # before the next channel's integers are read
    payload.finish()
    return out


class _Payload:
    """The LZMA payload read in order into each field's own array: the compressed bytes are fed
    a piece at a time and the decompressed payload never exists whole (issue 12.4's bound)."""

    def __init__(self, body: memoryview, expected: int):
        self._lzma = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        self._body, self._at, self._expected, self._read = body, 0, expected, 0

    def array(self, dtype, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, dtype)
        if self._fill(out.reshape(-1).view(np.uint8)) != out.nbytes:
            raise ValueError(f"pca artifact payload holds {self._read} bytes, "
                             f"its header implies {self._expected}")
        return out

    def finish(self) -> None:
        if self._fill(np.empty(1, np.uint8)) or self._read != self._expected:
            raise ValueError(f"pca artifact payload holds more than the {self._expected} bytes "
                             "its header implies")

    def _fill(self, dest: np.ndarray) -> int:
        filled = 0
        while filled < dest.size and not self._lzma.eof:
            piece = b""
            if self._lzma.needs_input:
                piece = self._body[self._at : self._at + _PIECE]
                self._at += len(piece)
                if not piece:
                    break  # the payload ends before its fields do
            try:
                part = self._lzma.decompress(piece, max_length=min(dest.size - filled, _CHUNK))
            except lzma.LZMAError as exc:
                raise ValueError(f"pca artifact payload does not decompress: {exc}") from None
            dest[filled : filled + len(part)] = np.frombuffer(part, np.uint8)
            filled += len(part)
            self._read += len(part)
        return filled


PCA_CODEC = register(
    Codec(
        name="pca",
        extension=".pca",
        encode_fn=encode,
        decode_fn=decode,
        params={
            "variance": Param(0.95, 0.5, 0.999, "fraction of each channel's row variance the kept components "
                              "explain", kind=float),
            "components": Param(None, 1, MAX_COMPONENTS, "a fixed number of components per channel "
                                "(instead of variance)"),
        },
        description="per-channel row PCA (scikit-learn), quantised mean/components/scores, LZMA-coded",
    )
)
