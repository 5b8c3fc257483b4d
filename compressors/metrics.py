"""Image quality metrics: PSNR and SSIM with an explicit ``data_range``.

SSIM follows Wang et al. 2004 (Gaussian window, sigma 1.5, 11 taps, population
covariance, K1=0.01, K2=0.03), averaged over channels, and gives the same values as
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``.

Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment:
from error visibility to structural similarity", IEEE TIP 13(4), 600-612, 2004.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

__all__ = ["psnr", "ssim"]

_SIGMA = 1.5
_TRUNCATE = 3.5  # gives the 11-tap window of Wang et al.
_RADIUS = int(_TRUNCATE * _SIGMA + 0.5)  # 5, as scipy.ndimage computes it
_K1, _K2 = 0.01, 0.03


def _as_hwc(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got {image.shape}")
    return image


def _check_pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, tst = np.asarray(reference), np.asarray(test)
    if ref.shape != tst.shape:
        raise ValueError(f"images must have the same shape, got {ref.shape} and {tst.shape}")
    return _as_hwc(ref, "reference"), _as_hwc(tst, "test")


def psnr(reference: np.ndarray, test: np.ndarray, *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE)``.

    The MSE is taken over all pixels and channels (exactly, for uint8 inputs). Identical
    images give ``inf``.
    """
    ref, tst = _check_pair(reference, test)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if ref.dtype == np.uint8 and tst.dtype == np.uint8:
        # Exact integer arithmetic: an int32 dot product of 2**15 squared differences
        # stays below 2**15 * 255**2 < 2**31; the chunk sums add up in Python ints.
        diff = np.subtract(ref, tst, dtype=np.int16).ravel().astype(np.int32)
        total = sum(int(np.dot(chunk, chunk)) for chunk in np.split(diff, range(1 << 15, diff.size, 1 << 15)))
        mse = total / diff.size
    else:
        diff = ref.astype(np.float64) - tst.astype(np.float64)
        mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(float(data_range) ** 2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, *, data_range: float = 255.0) -> float:
    """Mean structural similarity (Wang et al. 2004), averaged over channels.

    Images are ``(H, W, C)`` (or ``(H, W)``). Local statistics use a Gaussian window
    (sigma 1.5, 11 taps) with half-sample symmetric ("reflect") boundaries, and the SSIM
    map is averaged after cropping the 5-pixel border the window reaches past, exactly as
    scikit-image does.

    Small images: scikit-image refuses images with a side shorter than the 11-tap
    window. Here the statistics are computed the same way (the reflected boundary is
    well defined for any size), and the border crop is applied only along axes that
    have at least 11 pixels; along a shorter axis the map is averaged over all of it.
    So every image of at least 1x1 gets a value, identical images give 1.0, and the
    result equals scikit-image's wherever scikit-image gives one.
    """
    ref, tst = _check_pair(reference, test)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return _ssim_fast(ref, tst, float(data_range))


# The fast path. Per channel, SSIM needs four local (Gaussian-weighted) statistics:
# the means of x and y, of x*y and of (x-y)^2; everything else follows:
#     vx + vy = E[(x-y)^2] - (mx-my)^2 + 2 vxy,   ux^2 + uy^2 = 2 ux uy + (ux-uy)^2.
# Filtering (x-y)^2 instead of x^2 and y^2 saves a fifth of the work and avoids the
# cancellation in E[x^2] - E[x]^2 for the sum of variances. The one remaining
# difference, E[xy] - mx my, is kept small by shifting x and y by an integer offset near
# the channel mean first (covariances are shift invariant; the means are shifted back),
# so float32 suffices (agreement with the float64 path ~1e-6).
#
# The separable Gaussian pass with its reflected boundary is a banded matrix; its
# diagonal blocks turn each pass into a few BLAS matrix products. The image is processed
# in strips of _STRIP output rows, so the statistics of a strip stay in cache while the
# SSIM map is formed and summed, and memory stays O(strip) for any image size.
_STRIP = 32
_COLUMN_BLOCK = 64


def _gaussian_taps() -> np.ndarray:
    k = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / _SIGMA) ** 2)
    return w / w.sum()


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage's mode="reflect" (d c b a | a b c d | d c b a), any n >= 1."""
    m = np.mod(index, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


@functools.lru_cache(maxsize=64)
def _filter_blocks(n: int, block: int) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The 1-D Gaussian filter of length n as diagonal blocks of its banded matrix.

    Each block is (r0, r1, c0, c1, G[r0:r1, c0:c1]) with
    ``filtered[r0:r1] = G[r0:r1, c0:c1] @ x[c0:c1]``; c0..c1 covers every input those
    rows reach, reflections included.
    """
    taps = _gaussian_taps()
    offsets = np.arange(-_RADIUS, _RADIUS + 1)
    blocks = []
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        rows = np.arange(r0, r1)
        cols = _reflect(rows[:, None] + offsets[None, :], n)
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        g = np.zeros((r1 - r0, c1 - c0), dtype=np.float64)
        np.add.at(g, (np.broadcast_to(rows[:, None] - r0, cols.shape), cols - c0), taps[None, :])
        g = g.astype(np.float32)
        g.setflags(write=False)
        blocks.append((r0, r1, c0, c1, g))
    return tuple(blocks)


def _ssim_fast(ref: np.ndarray, tst: np.ndarray, data_range: float) -> float:
    # One BLAS thread: the products are small and many, and a metric runs once per image
    # inside an already parallel pipeline; multi-threaded OpenBLAS on a busy machine
    # was measured 10x slower here, not faster.
    with threadpool_limits(limits=1, user_api="blas"):
        return _ssim_strips(ref, tst, data_range)


def _ssim_strips(ref: np.ndarray, tst: np.ndarray, data_range: float) -> float:
    h, w, c = ref.shape
    c1 = np.float32((_K1 * data_range) ** 2)
    c2 = np.float32((_K2 * data_range) ** 2)
    # Integer offsets keep the shifted values exact in float32.
    # Any offset near the mean will do: a sparse sample is enough.
    step = max(1, int(np.sqrt(h * w / 4096)))
    sample = np.concatenate([ref[::step, ::step].reshape(-1, c), tst[::step, ::step].reshape(-1, c)])
    offset = np.round(sample.mean(axis=0, dtype=np.float64)).astype(np.float32)[None, :, None]
    keep_rows, keep_cols = _crop_slices(h, w)
    row_lo, row_hi, _ = keep_rows.indices(h)
    column_blocks = _filter_blocks(w, _COLUMN_BLOCK)
    total = np.zeros(c, dtype=np.float64)
    for r0, r1, i0, i1, g in _filter_blocks(h, _STRIP):
        k0, k1 = max(r0, row_lo), min(r1, row_hi)
        if k0 >= k1:
            continue
        g = g[k0 - r0 : k1 - r0]
        n_in, n_out = i1 - i0, k1 - k0
        # Planes, each (rows, C, W): x, y, x*y, (x-y)^2, with x and y shifted.
        stack = np.empty((n_in, 4 * c, w), dtype=np.float32)
        x, y, xy, dd = (stack[:, i * c : (i + 1) * c] for i in range(4))
        np.subtract(ref[i0:i1].transpose(0, 2, 1), offset, out=x, dtype=np.float32)
        np.subtract(tst[i0:i1].transpose(0, 2, 1), offset, out=y, dtype=np.float32)
        np.multiply(x, y, out=xy)
        np.subtract(x, y, out=dd)
        dd *= dd
        vertical = g @ stack.reshape(n_in, 4 * c * w)
        vertical = vertical.reshape(n_out * 4 * c, w)
        blurred = np.empty((n_out * 4 * c, w), dtype=np.float32)
        for j0, j1, l0, l1, gc in column_blocks:
            np.matmul(vertical[:, l0:l1], gc.T, out=blurred[:, j0:j1])
        blurred = blurred.reshape(n_out, 4 * c, w)[:, :, keep_cols]
        mx, my, sxy, sdd = (blurred[:, i * c : (i + 1) * c] for i in range(4))
        dm2 = mx - my
        dm2 *= dm2
        p = mx * my
        a2 = sxy - p
        a2 *= 2
        a2 += c2
        b2 = sdd - dm2
        b2 += a2
        # 2 ux uy + C1 with ux = mx + o, uy = my + o.
        a1 = mx + my
        a1 *= offset
        a1 += p
        a1 += offset * offset
        a1 *= 2
        a1 += c1
        b1 = dm2
        b1 += a1
        a1 *= a2
        b1 *= b2
        a1 /= b1
        total += a1.sum(axis=2).sum(axis=0, dtype=np.float64)  # pairwise float32 along rows
    n_pixels = (row_hi - row_lo) * len(range(*keep_cols.indices(w)))
    return float((total / n_pixels).mean())


def _ssim_float64(ref: np.ndarray, tst: np.ndarray, data_range: float) -> float:
    """Straightforward float64 SSIM through scipy.ndimage (the algorithm skimage uses)."""
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=_SIGMA, truncate=_TRUNCATE, mode="reflect")

    values = []
    for c in range(ref.shape[2]):
        x = ref[:, :, c].astype(np.float64)
        y = tst[:, :, c].astype(np.float64)
        ux, uy = blur(x), blur(y)
        vx = blur(x * x) - ux * ux
        vy = blur(y * y) - uy * uy
        vxy = blur(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        values.append(_crop(s).mean(dtype=np.float64))
    return float(np.mean(values))


def _crop_slices(h: int, w: int) -> tuple[slice, slice]:
    """Drop the window's reach along each axis long enough to have an interior."""
    return tuple(slice(_RADIUS, n - _RADIUS) if n >= 2 * _RADIUS + 1 else slice(None) for n in (h, w))


def _crop(s: np.ndarray) -> np.ndarray:
    return s[_crop_slices(*s.shape[:2])]
