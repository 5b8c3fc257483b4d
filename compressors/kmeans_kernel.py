"""The compiled inner loop of K-means (numba): nearest centre and the Lloyd sums, one pass.

Imported on the first K-means fit (``import compressors`` stays free of numba), compiled
once per machine and cached next to this file, like :mod:`compressors.ssim_kernel`.

Every Lloyd iteration and every final assignment asks, for each of an image's unique
colours (or a sample of its pixels), which of K <= 256 centres is nearest. NumPy's way (a
(colours x K) product of ``[x, 1]`` with ``[-2c, |c|^2]``, then ``argmin``) materialises
the whole matrix and its argmin runs row by row. Here colours are taken in blocks of 512
(their channels stored as planes, so the loops over a block vectorise): for each centre in
turn, the block's squared distances are formed in a small buffer and every colour keeps
the smaller one and its index. The buffers stay in L1; nothing of size (colours x K) is
ever made. The same call adds each colour's weight and weighted channels to its centre's
totals, which is all the Lloyd update needs.

Distances are float32 of float32 inputs (colours are integers < 256, so each difference
is exact); among centres at the same distance the first one keeps the colour.
(Tried and dropped: sorting centres by their projection on the principal axis and
walking outwards with a partial-distance bound evaluated ~6 centres per colour at
K = 64 but, branchy and scalar, was 4x slower than this dense loop.)
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["assign", "planes"]


_BLOCK = 512  # colours per block: the distance, best and index buffers stay in L1


@nb.njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def _assign(planes, weights, centres, out, mass, sums):  # pragma: no cover (compiled)
    c, n = planes.shape
    k = centres.shape[0]
    dist = np.empty(_BLOCK, np.float32)
    best = np.empty(_BLOCK, np.float32)
    index = np.empty(_BLOCK, np.int32)
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        best[:m] = np.inf
        for j in range(k):
            dist[:m] = 0
            for d in range(c):
                centre = centres[j, d]
                row = planes[d, start:start + m]
                for p in range(m):
                    t = row[p] - centre
                    dist[p] += t * t
            for p in range(m):
                if dist[p] < best[p]:
                    best[p] = dist[p]
                    index[p] = j
        for p in range(m):
            j = index[p]
            out[start + p] = j
            w = weights[start + p]
            mass[j] += w
            for d in range(c):
                sums[j, d] += w * planes[d, start + p]


def planes(values: np.ndarray) -> np.ndarray:
    """Colours (U, C) as the contiguous float32 channel planes (C, U) that :func:`assign` reads."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)


def assign(
    colour_planes: np.ndarray, weights: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest centre of every colour of ``colour_planes`` (C, U) (see :func:`planes`), with
    the weight and weighted sum per centre.

    Returns ``(assignment (U,) intp, mass (K,) float64, sums (K, C) float64)``.
    """
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    k, c = centres.shape
    out = np.empty(colour_planes.shape[1], dtype=np.intp)
    mass = np.zeros(k)
    sums = np.zeros((k, c))
    _assign(colour_planes, np.ascontiguousarray(weights, dtype=np.float64), centres, out, mass, sums)
    return out, mass, sums
