"""Image quality metrics: PSNR and SSIM with an explicit ``data_range``.

SSIM follows Wang et al. 2004 (Gaussian window, sigma 1.5, 11 taps, population
covariance, K1=0.01, K2=0.03), averaged over channels, and gives the same values as
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``.

Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment:
from error visibility to structural similarity", IEEE TIP 13(4), 600-612, 2004.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


# The fast path (uint8 images, every image this project measures) is one compiled loop,
# compressors/ssim_kernel.py: four filtered planes per channel in float32 from integer
# values, x and y shifted by an integer offset near the channel mean so that the one
# remaining difference, E[xy] - mx my, stays small (agreement with scikit-image's float64
# ~1e-8 on Kodak). It filters only windows that lie inside the array: an axis of at least
# 11 pixels is cropped by the window's reach anyway, a shorter one is first padded by the
# same reflection scipy.ndimage uses, so every output position of that axis is kept.
def _gaussian_taps() -> np.ndarray:
    k = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / _SIGMA) ** 2)
    return w / w.sum()


_TAPS32 = _gaussian_taps().astype(np.float32)


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage's mode="reflect" (d c b a | a b c d | d c b a), any n >= 1."""
    m = np.mod(index, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _ssim_fast(ref: np.ndarray, tst: np.ndarray, data_range: float) -> float:
    if ref.dtype != np.uint8 or tst.dtype != np.uint8:
        return _ssim_float64(ref, tst, data_range)
    from compressors.ssim_kernel import ssim_column_sums  # noqa: PLC0415  (numba on first use)

    h, w, c = ref.shape
    step = max(1, int(np.sqrt(h * w / 4096)))  # any offset near the mean will do: a sparse sample
    sample = np.concatenate([ref[::step, ::step].reshape(-1, c), tst[::step, ::step].reshape(-1, c)])
    # The channel means as one product (exact: integer sums far below 2**53); NumPy's
    # mean(axis=0) over this (n, 3) array took 0.6 ms, a tenth of the whole SSIM.
    offset = np.round(np.ones(len(sample)) @ sample.astype(np.float64) / len(sample)).astype(np.float32)
    for axis, n in ((0, h), (1, w)):
        if n < 2 * _RADIUS + 1:  # too short to crop: pad it so that every position gets a window
            index = _reflect(np.arange(-_RADIUS, n + _RADIUS), n)
            ref, tst = np.take(ref, index, axis=axis), np.take(tst, index, axis=axis)
    out_h, out_w = ref.shape[0] - 2 * _RADIUS, ref.shape[1] - 2 * _RADIUS
    sums = ssim_column_sums(
        _readonly_rows(ref), _readonly_rows(tst), c, np.tile(offset, ref.shape[1]), _TAPS32,
        np.float32((_K1 * data_range) ** 2), np.float32((_K2 * data_range) ** 2),
    )
    per_channel = sums.reshape(out_w, c).sum(axis=0)
    return float((per_channel / (out_h * out_w)).mean())


def _readonly_rows(image: np.ndarray) -> np.ndarray:
    """(H, W*C) contiguous and read-only: one compiled signature for every caller's array."""
    rows = np.ascontiguousarray(image).reshape(image.shape[0], -1).view()
    rows.flags.writeable = False
    return rows


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
