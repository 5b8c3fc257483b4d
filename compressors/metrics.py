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

    The MSE is taken over all pixels and channels in float64. Identical images give
    ``inf``.
    """
    ref, tst = _check_pair(reference, test)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
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
    return _ssim_float64(ref, tst, float(data_range))


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


def _crop(s: np.ndarray) -> np.ndarray:
    """Drop the window's reach along each axis long enough to have an interior."""
    index = tuple(
        slice(_RADIUS, n - _RADIUS) if n >= 2 * _RADIUS + 1 else slice(None) for n in s.shape[:2]
    )
    return s[index]
