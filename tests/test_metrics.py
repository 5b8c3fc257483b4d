"""PSNR and SSIM: equal to scikit-image's reference call and to values derived by hand."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from compressors.metrics import _ssim_float64, psnr, ssim

TOLERANCE = 1e-6  # DESIGN.md asks for scikit-image's values; measured agreement is ~1e-7


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The call DESIGN.md names as the definition of SSIM."""
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
    )


def as_hwc(image: np.ndarray) -> np.ndarray:
    return image[:, :, None] if image.ndim == 2 else image


def noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def jpeg_degraded(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[2] == 1 else image).save(buffer, "JPEG", quality=quality)
    return as_hwc(np.asarray(Image.open(buffer)))


SAMPLES = {
    "astronaut": lambda: skdata.astronaut(),
    "coffee": lambda: skdata.coffee(),
    "camera": lambda: as_hwc(skdata.camera()),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("degrade", ["noise", "jpeg", "odd_crop"])
def test_ssim_and_psnr_equal_scikit_image_on_degraded_sample_images(name: str, degrade: str) -> None:
    reference = SAMPLES[name]()
    if degrade == "noise":
        test = noisy(reference, 12.0, seed=1)
    elif degrade == "jpeg":
        test = jpeg_degraded(reference, quality=15)
    else:  # odd sizes, off the 32-row strips and 64-column blocks of the fast path
        reference = np.ascontiguousarray(reference[3:104, 7:84])
        test = noisy(reference, 5.0, seed=2)
    assert ssim(reference, test) == pytest.approx(reference_ssim(reference, test), abs=TOLERANCE)
    assert psnr(reference, test) == pytest.approx(
        peak_signal_noise_ratio(reference, test, data_range=255), abs=1e-9
    )


def test_ssim_agrees_with_scikit_image_to_a_millionth_on_a_photo() -> None:
    reference = skdata.astronaut()
    test = noisy(reference, 3.0, seed=3)
    assert abs(ssim(reference, test) - reference_ssim(reference, test)) < 1e-6


def test_float_images_take_the_float64_path_and_agree_with_the_uint8_kernel() -> None:
    reference = skdata.coffee()[:80, :90]
    test = jpeg_degraded(reference, quality=30)
    assert ssim(reference.astype(np.float64), test.astype(np.float64)) == pytest.approx(
        ssim(reference, test), abs=1e-6
    )


# One SSIM call in a new interpreter; prints the value and the compiled kernel's cache use.
_SSIM_IN_A_FRESH_PROCESS = """
import json, numpy as np
from skimage import data
from compressors.metrics import ssim
from compressors.ssim_kernel import ssim_column_sums
image = data.astronaut()[:64, :64]
value = ssim(image, image // 2)
stats = ssim_column_sums.stats
print(json.dumps({"value": value, "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def _kernel_use() -> dict:
    from compressors.ssim_kernel import ssim_column_sums  # noqa: PLC0415

    image = skdata.astronaut()[:64, :64]
    stats = ssim_column_sums.stats
    return {"value": ssim(image, image // 2), "pid": os.getpid(), "hits": sum(stats.cache_hits.values())}


def test_the_compiled_kernel_is_cached_for_new_processes_and_dask_workers(tmp_path, monkeypatch) -> None:
    # A clean clone: nothing compiled yet. The first process compiles and writes the cache;
    # a second interpreter and a Dask worker process load it instead of compiling again.
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", _SSIM_IN_A_FRESH_PROCESS], check=True,
                                  capture_output=True, text=True, timeout=300).stdout)
        for _ in range(2)
    ]
    assert (runs[0]["misses"], runs[0]["hits"]) == (1, 0)
    assert (runs[1]["misses"], runs[1]["hits"]) == (0, 1)
    assert any((tmp_path / "numba-cache").rglob("*.nbc"))

    from distributed import Client, LocalCluster  # noqa: PLC0415

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            worker = client.submit(_kernel_use, pure=False).result(timeout=300)
    assert worker["pid"] != os.getpid() and worker["hits"] == 1
    assert worker["value"] == runs[0]["value"] == runs[1]["value"] == ssim(
        skdata.astronaut()[:64, :64], skdata.astronaut()[:64, :64] // 2
    )


def test_grayscale_as_hw1_equals_hw_and_scikit_image_on_2d() -> None:
    reference = skdata.camera()
    test = noisy(as_hwc(reference), 8.0, seed=4)
    expected = structural_similarity(
        reference,
        test[:, :, 0],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(as_hwc(reference), test) == pytest.approx(expected, abs=TOLERANCE)
    assert ssim(reference, test[:, :, 0]) == ssim(as_hwc(reference), test)


def test_identical_images_give_psnr_inf_and_ssim_one() -> None:
    image = skdata.astronaut()
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-7)


def test_psnr_of_a_uniform_error_is_the_closed_form() -> None:
    # Every pixel off by 5: MSE = 25, PSNR = 20 log10(255 / 5) = 34.15140352195873 dB.
    image = np.full((17, 23, 3), 100, dtype=np.uint8)
    assert psnr(image, image + 5) == pytest.approx(34.15140352195873, abs=1e-12)
    assert psnr(image, image + 5, data_range=1.0) == pytest.approx(20 * math.log10(1 / 5), abs=1e-12)


def test_psnr_of_maximal_errors_on_a_large_image_does_not_overflow() -> None:
    black = np.zeros((1024, 1024, 3), dtype=np.uint8)
    assert psnr(black, black + 255) == pytest.approx(0.0, abs=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term_of_wang_2004() -> None:
    # Flat images have zero variance and covariance, so SSIM (Wang et al. 2004, eq. 13)
    # reduces to (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2 = 6.5025:
    # a=100, b=110 -> 22006.5025 / 22106.5025 = 0.99547638... (computed by hand).
    a = np.full((20, 30, 3), 100, dtype=np.uint8)
    b = np.full((20, 30, 3), 110, dtype=np.uint8)
    assert ssim(a, b) == pytest.approx(22006.5025 / 22106.5025, abs=1e-7)


def brute_force_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window, independent of any filter code.

    11x11 Gaussian weights (sigma 1.5) normalised to 1, population statistics, the
    mean taken over the pixels whose window lies inside the image.
    """
    k = np.arange(-5, 6)
    g = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    values = []
    for i in range(5, x.shape[0] - 5):
        for j in range(5, x.shape[1] - 5):
            wx, wy = x[i - 5 : i + 6, j - 5 : j + 6], y[i - 5 : i + 6, j - 5 : j + 6]
            mx, my = (g * wx).sum(), (g * wy).sum()
            vx, vy = (g * (wx - mx) ** 2).sum(), (g * (wy - my) ** 2).sum()
            cxy = (g * (wx - mx) * (wy - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_equals_a_window_by_window_computation_from_the_paper() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (19, 23, 1), dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    assert ssim(x, y) == pytest.approx(brute_force_ssim(x[:, :, 0], y[:, :, 0]), abs=1e-6)


@pytest.mark.parametrize(
    "shape", [(1, 1, 3), (1, 20, 3), (5, 5, 1), (10, 40, 3), (11, 11, 1), (12, 7, 3), (40, 3, 1)]
)
def test_images_smaller_than_the_window_are_averaged_over_the_short_axis(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    value = ssim(x, y)
    assert -1.0 <= value <= 1.0
    assert value == pytest.approx(_ssim_float64(x, y, 255.0), abs=1e-6)  # the scipy.ndimage path
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-7)
    if min(shape[:2]) >= 11:
        assert value == pytest.approx(reference_ssim(x, y), abs=TOLERANCE)
    else:
        with pytest.raises(ValueError):
            reference_ssim(x, y)  # scikit-image refuses; we document our rule instead


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metrics_check_shapes_first_and_take_data_range_by_keyword(metric) -> None:
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        metric(a, np.zeros((16, 17, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="data_range"):
        metric(a, a + 1, data_range=0)
    with pytest.raises(TypeError):
        metric(a, a, 255)  # data_range is keyword-only
    assert type(metric(a, a + 1)) is float


def test_ssim_data_range_matches_scikit_image_for_a_non_default_range() -> None:
    reference = skdata.astronaut()[:64, :64]
    test = noisy(reference, 10.0, seed=7)
    expected = structural_similarity(
        reference,
        test,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=100,
        channel_axis=-1,
    )
    assert ssim(reference, test, data_range=100) == pytest.approx(expected, abs=TOLERANCE)
