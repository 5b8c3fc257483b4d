"""The ``lossless`` codec: uint8 image in, ``.impl`` bytes out, and back, bit for bit.

Encoding knows every pixel, so it computes every context, runs the integer network over
all pixels in chunks and codes each row as its own rANS lane (:mod:`.rans`), symbols in
raster order, planes G, R, B within a pixel. Decoding runs a wavefront: pixel ``(y, x)``
of a stripe can be decoded at step ``t = x + 2 * (y - stripe top)`` (its context reaches
one pixel up-right and two pixels two rows up, :mod:`.features`), so every step decodes
one pixel in every active row at once — ``W + 2 * stripe`` network passes per image,
never a Python loop per pixel. Stripes (rows ``k * stripe ..``) start afresh, as if at
the image's top, which is what lets them all run side by side.
"""

from __future__ import annotations

import zlib

import numpy as np

from . import container, rans
from .features import LEFT, PAD, PLANES, RIGHT, TOP, Gatherer, all_features, from_planes, to_planes
from .integer import RMAX, SYMBOLS, IntegerNet

DEFAULT_STRIPE = 128
CHUNK = 65536  # pixels per network call when encoding


def _intervals(net: IntegerNet, table: np.ndarray, b: np.ndarray, value: np.ndarray):
    """Each value's ``(start, freq)`` under its table, tails folded onto 0 and 255."""
    r = value - b
    at = table * (SYMBOLS + 1) + r + RMAX
    start = np.where(r == -b, 0, net.cdf[at])
    end = np.where(r == 255 - b, 1 << rans.PRECISION, net.cdf[at + 1])
    return start, end - start


def _all_intervals(net: IntegerNet, planes: np.ndarray, channels: int, stripe: int):
    """``(start, freq)`` of every value, (H*W, channels), raster order."""
    feats, base = all_features(planes, stripe)
    values = planes.reshape(-1, PLANES)
    n = len(values)
    starts = np.empty((n, channels), dtype=np.int64)
    freqs = np.empty((n, channels), dtype=np.int64)
    for lo in range(0, n, CHUNK):
        sl = slice(lo, lo + CHUNK)
        h = net.trunk(feats[sl].astype(np.float64))
        errors: list[np.ndarray] = []
        for p in range(channels):
            table, b = net.head(p, h, base[sl, p].astype(np.float64), errors)
            value = values[sl, p].astype(np.int64)
            starts[sl, p], freqs[sl, p] = _intervals(net, table, b, value)
            errors.append((value - base[sl, p]).astype(np.float64))
    return starts, freqs


def code_length(net: IntegerNet, image: np.ndarray, stripe: int = DEFAULT_STRIPE) -> float:
    """Ideal code length in bits of ``image`` under the integer model (no container, no rANS overhead)."""
    _, freqs = _all_intervals(net, to_planes(image), image.shape[2], stripe)
    return float(np.sum(rans.PRECISION - np.log2(freqs)))


def image_code_length(module, image: np.ndarray) -> float:
    """Ideal code length in bits of ``image`` under a frozen :class:`.model.LosslessMLP`."""
    return code_length(IntegerNet(module), image)


def encode_with(net: IntegerNet, model_id: str, image: np.ndarray, stripe: int = DEFAULT_STRIPE) -> bytes:
    h, w, c = image.shape
    if h * w > container.MAX_PIXELS:
        raise ValueError(f"lossless: {w}x{h} pixels is above the limit of {container.MAX_PIXELS:,}")
    stripe = max(1, min(int(stripe), h, 0xFFFF))
    starts, freqs = _all_intervals(net, to_planes(image), c, stripe)
    lanes = rans.encode(starts.reshape(h, w * c), freqs.reshape(h, w * c))
    counts = np.array([len(x) for x in lanes], dtype=np.int64)
    header = container.Header(model_id, h, w, c, stripe, zlib.crc32(np.ascontiguousarray(image).tobytes()))
    return container.pack(header, counts, np.concatenate(lanes))


def decode_with(net: IntegerNet, header: container.Header, counts: np.ndarray, words: np.ndarray) -> np.ndarray:
    h, w, c, stripe = header.height, header.width, header.channels, header.stripe
    pad = np.full((h + TOP, w + LEFT + RIGHT, PLANES), PAD, dtype=np.uint8)  # uint8: 3 bytes a pixel
    gather = Gatherer(pad, w, stripe)
    flat = gather.flat
    decoder = rans.Decoder(words, counts)
    tops = np.arange(0, h, stripe)
    rows_in = min(stripe, h)
    for t in range(w + 2 * (rows_in - 1)):
        r_lo, r_hi = max(0, (t - w + 2) // 2), min(rows_in - 1, t // 2)
        ys = (tops[:, None] + np.arange(r_lo, r_hi + 1)[None, :]).ravel()
        ys = ys[ys < h]
        if not len(ys):
            continue
        xs = t - 2 * (ys % stripe)
        feats, base = gather(ys, xs)
        hidden = net.trunk(feats)
        at = gather.index(ys, xs)
        errors: list[np.ndarray] = []
        for p in range(c):
            base_p = base[:, p].astype(np.float64)
            table, b = net.head(p, hidden, base_p, errors)
            slot = decoder.slots(ys)
            r = np.clip(net.inverse[(table << rans.PRECISION) + slot].astype(np.int64) - RMAX, -b, 255 - b)
            value = b + r
            start, freq = _intervals(net, table, b, value)
            decoder.advance(ys, slot, start, freq)
            if c == 1:
                flat[at] = value[:, None]  # gray: the three planes are the one plane
            else:
                flat[at, p] = value
            errors.append(value - base_p)
    if not decoder.finished_cleanly():
        raise ValueError("lossless payload does not decode: the row streams did not end where they should "
                         "(corrupt data or a different model)")
    image = from_planes(pad[TOP:, LEFT : LEFT + w], c)
    if zlib.crc32(image.tobytes()) != header.pixels_crc:
        raise ValueError("lossless artifact decoded to pixels whose CRC32 differs from the encoder's: this "
                         "decoder's arithmetic does not match the encoder's")
    return image
