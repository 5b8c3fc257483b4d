"""The compiled inner loop of SSIM (numba): one pass over two uint8 images.

Imported on the first SSIM call (``import compressors`` stays free of numba), compiled
once per machine and cached next to this file (numba's ``cache=True``; where that folder
is read-only, numba falls back to a per-user cache).

Why compiled: SSIM needs four Gaussian-filtered planes per channel (below) and a dozen
arithmetic steps per pixel. Each NumPy operation is a separate pass over memory and
BLAS-blocked banded filters do 4-7x the necessary multiply-adds; one fused loop does each
of the 11 taps once, with the planes of only 11 image rows in cache at any time.

What it computes, per channel, with ``x`` and ``y`` shifted by an integer ``offset`` near
the channel mean (covariances do not change; the means are shifted back below):

- the four planes ``x``, ``y``, ``x*y``, ``(x-y)**2``, made once per image row into a
  ring of the last 11 rows (uint8 in, float32 exactly: every value is an integer < 2**17);
- the vertical 11-tap pass for one output row, using the taps' symmetry
  (``w5*r5 + w0*(r0+r10) + ... + w4*(r4+r6)``: 6 multiplies, 10 adds);
- the horizontal pass along the row, fused with the SSIM formula, from the four filtered
  values ``mx, my, sxy, sdd``:
  ``vx + vy = sdd - (mx-my)**2 + 2 vxy`` and ``ux**2 + uy**2 = 2 ux uy + (ux-uy)**2``,
  so no ``E[x**2] - E[x]**2`` cancellation appears in the sum of variances;
- each row's SSIM values are added into a float64 accumulator per column.

Only "valid" windows are computed (every tap inside the array): the caller crops the
5-pixel border as scikit-image does, or pads a short axis by reflection first.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import uint64 as _u

__all__ = ["ssim_column_sums"]


@nb.njit(inline="always", error_model="numpy", boundscheck=False, fastmath={"contract"})
def _taps_along_row(row, j, c, w0, w1, w2, w3, w4, w5):  # pragma: no cover (compiled)
    """The symmetric 11-tap filter along a row of interleaved channels (stride ``c``), output ``j``."""
    return (w5 * row[j + _u(5) * c] + w0 * (row[j] + row[j + _u(10) * c]) + w1 * (row[j + c] + row[j + _u(9) * c])
            + w2 * (row[j + _u(2) * c] + row[j + _u(8) * c]) + w3 * (row[j + _u(3) * c] + row[j + _u(7) * c])
            + w4 * (row[j + _u(4) * c] + row[j + _u(6) * c]))


@nb.njit(inline="always", error_model="numpy", boundscheck=False, fastmath={"contract"})
def _row_sums(v, out_n, c, offset, sums, w0, w1, w2, w3, w4, w5, c1, c2):  # pragma: no cover (compiled)
    """The horizontal pass of one output row's four vertical planes, fused with the SSIM formula."""
    vx, vy, vxy, vdd = v[0], v[1], v[2], v[3]
    two = np.float32(2.0)
    for j in range(out_n):
        mx = _taps_along_row(vx, j, c, w0, w1, w2, w3, w4, w5)
        my = _taps_along_row(vy, j, c, w0, w1, w2, w3, w4, w5)
        sxy = _taps_along_row(vxy, j, c, w0, w1, w2, w3, w4, w5)
        sdd = _taps_along_row(vdd, j, c, w0, w1, w2, w3, w4, w5)
        o = offset[j + _u(5) * c]
        dm2 = (mx - my) * (mx - my)  # (ux - uy)**2, offset-free
        mxy = mx * my
        a2 = two * (sxy - mxy) + c2  # 2 cov + C2
        b2 = sdd - dm2 + a2  # vx + vy + C2
        a1 = two * (mxy + o * (mx + my) + o * o) + c1  # 2 ux uy + C1, ux = mx + o, uy = my + o
        b1 = dm2 + a1  # ux**2 + uy**2 + C1
        sums[j] += np.float64((a1 * a2) / (b1 * b2))


# Indices are unsigned on purpose: with signed ones numba must allow for negative
# (wrap-around) indices, which turns the strided loads into gathers and stops the loops
# from vectorising (measured 2.5x slower). fastmath "contract" only lets multiply-adds
# fuse into FMA instructions (one rounding instead of two); no reassociation.
@nb.njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, fastmath={"contract"})
def ssim_column_sums(ref, tst, channels, offset, taps, c1, c2):  # pragma: no cover (compiled)
    """Sums over output rows of the SSIM map of ``ref`` and ``tst``.

    ``ref``, ``tst``: (H, W*C) uint8, H >= 11 and W >= 11 (rows of interleaved channels);
    ``offset``: (W*C,) float32, each sample's channel offset; ``taps``: the 11 float32
    Gaussian weights; ``c1``, ``c2``: float32 stabilisers. Returns ((W-10)*C,) float64:
    column j holds the sum of the SSIM map's column j // C, channel j % C, over the
    H - 10 output rows.

    Output rows are made two at a time where they can be: rows ``t`` and ``t + 1`` share 10
    of their 12 input rows, so one sweep over the ring loads each of the 12 once for both
    vertical passes (12 loads for two outputs instead of 22).
    """
    h, n_ = ref.shape
    n = _u(n_)
    c = _u(channels)
    out_n = n - _u(10) * c
    ring = np.empty((48, n_), dtype=np.float32)  # 12 rows x 4 planes
    v = np.empty((4, n_), dtype=np.float32)  # the vertical pass of output row t
    u = np.empty((4, n_), dtype=np.float32)  # ... and of row t + 1
    sums = np.zeros(out_n, dtype=np.float64)
    w0, w1, w2, w3, w4, w5 = taps[0], taps[1], taps[2], taps[3], taps[4], taps[5]
    t = _u(0)  # the next output row; its input rows are t .. t + 10
    for r_ in range(h):
        r = _u(r_)
        b = (r % _u(12)) * _u(4)
        for j in range(n):
            x = np.float32(ref[r, j]) - offset[j]
            y = np.float32(tst[r, j]) - offset[j]
            d = x - y
            ring[b, j] = x
            ring[b + _u(1), j] = y
            ring[b + _u(2), j] = x * y
            ring[b + _u(3), j] = d * d
        if r_ < 10:
            continue
        pair = t + _u(11) == r  # rows t .. t + 11 are in: outputs t and t + 1 together
        if not pair and r_ != h - 1:
            continue  # wait for row t + 11, unless this was the last row (t alone remains)
        k0 = (t % _u(12)) * _u(4)
        k1 = ((t + _u(1)) % _u(12)) * _u(4)
        k2 = ((t + _u(2)) % _u(12)) * _u(4)
        k3 = ((t + _u(3)) % _u(12)) * _u(4)
        k4 = ((t + _u(4)) % _u(12)) * _u(4)
        k5 = ((t + _u(5)) % _u(12)) * _u(4)
        k6 = ((t + _u(6)) % _u(12)) * _u(4)
        k7 = ((t + _u(7)) % _u(12)) * _u(4)
        k8 = ((t + _u(8)) % _u(12)) * _u(4)
        k9 = ((t + _u(9)) % _u(12)) * _u(4)
        k10 = ((t + _u(10)) % _u(12)) * _u(4)
        # Without a pair (the last output row alone), row t + 11 does not exist: any ring row
        # stands in for it, and only the first output is used.
        k11 = ((t + _u(11)) % _u(12)) * _u(4) if pair else k10
        for p in range(_u(4)):
            for j in range(n):
                r0 = ring[k0 + p, j]
                r1 = ring[k1 + p, j]
                r2 = ring[k2 + p, j]
                r3 = ring[k3 + p, j]
                r4 = ring[k4 + p, j]
                r5 = ring[k5 + p, j]
                r6 = ring[k6 + p, j]
                r7 = ring[k7 + p, j]
                r8 = ring[k8 + p, j]
                r9 = ring[k9 + p, j]
                r10 = ring[k10 + p, j]
                r11 = ring[k11 + p, j]
                v[p, j] = (w5 * r5 + w0 * (r0 + r10) + w1 * (r1 + r9) + w2 * (r2 + r8)
                           + w3 * (r3 + r7) + w4 * (r4 + r6))
                u[p, j] = (w5 * r6 + w0 * (r1 + r11) + w1 * (r2 + r10) + w2 * (r3 + r9)
                           + w3 * (r4 + r8) + w4 * (r5 + r7))
        _row_sums(v, out_n, c, offset, sums, w0, w1, w2, w3, w4, w5, c1, c2)
        if pair:
            _row_sums(u, out_n, c, offset, sums, w0, w1, w2, w3, w4, w5, c1, c2)
            t += _u(2)
        else:
            t += _u(1)
    return sums
