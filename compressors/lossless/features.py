"""Causal context of every pixel, in integers: what the decoder already has when it decodes it.

The same function serves training (all pixels of a crop at once), encoding (all pixels of
the image at once) and decoding (one wavefront step: a set of ``(y, x)`` positions), so
the three cannot drift apart. Everything here is exact integer arithmetic.

Planes are coded in the order G, R, B (gray: the one plane). For each pixel the context is
the 12 causal neighbours below of all three planes (rows above and pixels to the left;
see :data:`OFFSETS`), expressed relative to each plane's MED (LOCO-I) prediction at that
pixel, plus each plane's MED prediction itself and six flags for the image/stripe borders.
Out-of-image neighbours read :data:`PAD`. Every neighbour ``(dy, dx)`` satisfies
``dx <= -2 * dy + ...``: a pixel ``(y, x)`` only needs pixels decoded at wavefront steps
before ``t = x + 2 * (y - stripe_top)``, which is what makes row-parallel decoding possible.
"""

from __future__ import annotations

import numpy as np

# (dy, dx) of the causal neighbours: W, WW, WWW, NWW, NW, N, NE, NNWW, NNW, NN, NNE, NNEE.
OFFSETS = ((0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1),
           (-2, -2), (-2, -1), (-2, 0), (-2, 1), (-2, 2))
W_, NW_, N_ = 0, 4, 5  # indices of W, NW and N in OFFSETS (the MED predictor's inputs)
TOP, LEFT, RIGHT = 2, 3, 2  # padding each side needs
PAD = 128
PLANES = 3  # G, R, B
N_FLAGS = 6
N_FEATURES = len(OFFSETS) * PLANES + PLANES + N_FLAGS
FLAG_VALUE = 64  # a flag's feature value when set (same order of magnitude as the others)
CODING_ORDER = (1, 0, 2)  # image channel of coded plane 0, 1, 2: G, R, B


def to_planes(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1|3) -> int16 (H, W, 3) planes in coding order (gray: replicated)."""
    if image.shape[2] == 1:
        return np.repeat(image.astype(np.int16), PLANES, axis=2)
    return image[:, :, CODING_ORDER].astype(np.int16)


def from_planes(planes: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return np.ascontiguousarray(planes[:, :, :1].astype(np.uint8))
    out = np.empty(planes.shape, dtype=np.uint8)
    out[:, :, list(CODING_ORDER)] = planes
    return out


def padded(planes: np.ndarray) -> np.ndarray:
    """(H + TOP, W + LEFT + RIGHT, 3) int16 array, ``PAD`` around the image."""
    h, w, _ = planes.shape
    out = np.full((h + TOP, w + LEFT + RIGHT, PLANES), PAD, dtype=np.int16)
    out[TOP:, LEFT : LEFT + w] = planes
    return out


def med(w: np.ndarray, n: np.ndarray, nw: np.ndarray) -> np.ndarray:
    """The median edge detector of LOCO-I / JPEG-LS (Weinberger et al. 2000)."""
    lo, hi = np.minimum(w, n), np.maximum(w, n)
    return np.where(nw >= hi, lo, np.where(nw <= lo, hi, w + n - nw))


def _assemble(window: np.ndarray, row_in_stripe: np.ndarray, x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """window int16 (n, len(OFFSETS), 3) -> (features int16 (n, N_FEATURES), med int16 (n, 3))."""
    for k, (dy, _) in enumerate(OFFSETS):  # rows above the stripe's top were not decoded yet
        if dy < 0:
            window[row_in_stripe < -dy, k, :] = PAD
    base = med(window[:, W_], window[:, N_], window[:, NW_])
    n = window.shape[0]
    feats = np.empty((n, N_FEATURES), dtype=np.int16)
    k = len(OFFSETS) * PLANES
    feats[:, :k] = (window - base[:, None, :]).reshape(n, k)
    feats[:, k : k + PLANES] = base - PAD
    feats[:, k + PLANES : k + PLANES + 2] = _row_flags(row_in_stripe)
    feats[:, k + PLANES + 2 :] = _x_flags(x, width)
    return feats, base


def all_features(planes: np.ndarray, stripe: int) -> tuple[np.ndarray, np.ndarray]:
    """Context of every pixel, raster order: features (H*W, N_FEATURES), med (H*W, 3)."""
    h, w, _ = planes.shape
    p = padded(planes)
    window = np.empty((h, w, len(OFFSETS), PLANES), dtype=np.int16)
    for k, (dy, dx) in enumerate(OFFSETS):
        window[:, :, k] = p[TOP + dy : TOP + dy + h, LEFT + dx : LEFT + dx + w]
    rows = np.repeat(np.arange(h) % stripe, w)
    xs = np.tile(np.arange(w), h)
    return _assemble(window.reshape(h * w, len(OFFSETS), PLANES), rows, xs, w)


def _row_flags(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows == 0, rows == 1], 1) * FLAG_VALUE


def _x_flags(x: np.ndarray, width: int) -> np.ndarray:
    return np.stack([x == 0, x == 1, x == width - 1, x == width - 2], 1) * FLAG_VALUE


class Gatherer:
    """Context of arbitrary positions of a padded plane array that fills in as decoding goes.

    Gives exactly what :func:`all_features` gives for the same pixels (float64 features),
    with the stripe-top masking done by pointing hidden neighbours at a padding cell.
    """

    def __init__(self, pad: np.ndarray, width: int, stripe: int):
        self.flat = pad.reshape(-1, PLANES)
        self.stride = pad.shape[1]
        self.width, self.stripe = width, stripe
        self.offsets = np.array([dy * self.stride + dx for dy, dx in OFFSETS], dtype=np.int64)
        # row-in-stripe 0, 1, >=2: which neighbours lie above the stripe's top (read PAD at flat[0])
        self.hidden = np.array([[dy < -r for dy, _ in OFFSETS] for r in range(3)])
        self.row_flags = _row_flags(np.arange(3)).astype(np.float64)
        self.x_flags = _x_flags(np.arange(width), width).astype(np.float64)
        assert self.flat[0, 0] == PAD  # the top-left padding cell is never written

    def index(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return (ys + TOP) * self.stride + xs + LEFT

    def __call__(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.minimum(ys % self.stripe, 2)
        idx = self.index(ys, xs)[:, None] + self.offsets[None, :]
        idx[self.hidden[rows]] = 0
        window = self.flat[idx].astype(np.int16)
        base = med(window[:, W_], window[:, N_], window[:, NW_])
        n, k = len(ys), len(OFFSETS) * PLANES
        feats = np.empty((n, N_FEATURES), dtype=np.float64)
        feats[:, :k] = (window - base[:, None, :]).reshape(n, k)
        feats[:, k : k + PLANES] = base - PAD
        feats[:, k + PLANES : k + PLANES + 2] = self.row_flags[rows]
        feats[:, k + PLANES + 2 :] = self.x_flags[xs]
        return feats, base
