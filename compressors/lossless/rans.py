"""Row-parallel rANS (Duda 2013), vectorised over lanes with numpy.

Every lane (an image row) is its own rANS stream: 32-bit state, 16-bit words, 16-bit
probability precision, one renormalisation word at most per symbol. Encoding runs over
all lanes at once, symbol by symbol in reverse; decoding advances any subset of lanes by
one symbol per call (a wavefront step), so neither loops over pixels in Python.

A symbol is coded by its interval ``[start, start + freq)`` of ``2**16``. Lanes end in the
state ``L`` they started from and with every word read: the decoder checks both.
"""

from __future__ import annotations

import numpy as np

PRECISION = 16
L = 1 << 16  # states live in [L, 2**32)
MASK = (1 << PRECISION) - 1


def encode(starts: np.ndarray, freqs: np.ndarray) -> list[np.ndarray]:
    """``starts``, ``freqs``: (lanes, n) in decode order -> each lane's words (uint16), in decode order."""
    lanes, n = starts.shape
    x = np.full(lanes, L, dtype=np.uint64)
    out = np.zeros((lanes, n + 2), dtype=np.uint16)
    count = np.zeros(lanes, dtype=np.int64)
    rows = np.arange(lanes)
    st, fr = starts.astype(np.uint64), freqs.astype(np.uint64)
    for j in range(n - 1, -1, -1):
        f = fr[:, j]
        emit = x >= (f << np.uint64(16))
        if emit.any():
            r = rows[emit]
            out[r, count[r]] = (x[emit] & np.uint64(0xFFFF)).astype(np.uint16)
            count[r] += 1
            x[emit] >>= np.uint64(16)
        x = ((x // f) << np.uint64(PRECISION)) + (x % f) + st[:, j]
    out[rows, count] = (x & np.uint64(0xFFFF)).astype(np.uint16)
    out[rows, count + 1] = (x >> np.uint64(16)).astype(np.uint16)
    count += 2
    return [out[i, : count[i]][::-1] for i in range(lanes)]


class Decoder:
    """All lanes' streams, decoded a step (a symbol in each of some lanes) at a time."""

    def __init__(self, words: np.ndarray, counts: np.ndarray):
        self.words = words  # uint16, widened per read: a uint64 copy would cost 4x the payload
        self.end = np.cumsum(counts).astype(np.int64)
        self.ptr = self.end - counts
        if np.any(counts < 2):
            raise ValueError("lossless payload: a row stream is shorter than its state")
        self.state = (self.words[self.ptr].astype(np.uint64) << np.uint64(16)) | self.words[self.ptr + 1]
        self.ptr += 2
        self.overrun = False

    def slots(self, lanes: np.ndarray) -> np.ndarray:
        return (self.state[lanes] & np.uint64(MASK)).astype(np.int64)

    def advance(self, lanes: np.ndarray, slot: np.ndarray, start: np.ndarray, freq: np.ndarray) -> None:
        x = self.state[lanes]
        x = freq.astype(np.uint64) * (x >> np.uint64(PRECISION)) + (slot - start).astype(np.uint64)
        need = x < np.uint64(L)
        if need.any():
            r = lanes[need]
            p = self.ptr[r]
            ok = p < self.end[r]
            if not ok.all():
                self.overrun = True
            w = self.words[np.where(ok, p, 0)].astype(np.uint64)
            x[need] = (x[need] << np.uint64(16)) | np.where(ok, w, np.uint64(0))
            self.ptr[r] = p + ok
        self.state[lanes] = x

    def finished_cleanly(self) -> bool:
        return not self.overrun and bool(np.all(self.state == L)) and bool(np.all(self.ptr == self.end))
