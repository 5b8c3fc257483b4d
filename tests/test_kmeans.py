"""The kmeans codec: a K-means palette stored as a standard indexed PNG."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from compressors.kmeans import AUTO_TARGET_PSNR, KMEANS, decode, palette_png, quantize

encode = KMEANS.encode  # bytes; the module-level encode also returns the K it chose
from compressors.metrics import psnr
from compressors.registry import get_codec


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[96:352, 128:384])  # 256x256 RGB: keeps the suite fast


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return np.ascontiguousarray(skdata.camera()[::2, ::2, None])  # 256x256 grayscale, C=1


def colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, image.shape[2]), axis=0))


def ihdr(png: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from the PNG header."""
    assert png[12:16] == b"IHDR"
    return png[24], png[25]


def test_kmeans_is_registered_with_its_parameters() -> None:
    codec = get_codec("kmeans")
    assert codec is KMEANS and codec.extension == ".png"
    assert set(codec.params) == {"colors", "target_psnr", "target_ssim", "seed"}


@pytest.mark.parametrize("k", [2, 16, 64])
def test_rgb_round_trip_has_at_most_k_colours_and_is_what_quantize_computed(
    astronaut: np.ndarray, k: int
) -> None:
    artifact = KMEANS.encode(astronaut, colors=k)
    decoded = KMEANS.decode(artifact)
    assert isinstance(artifact, bytes)
    assert decoded.shape == astronaut.shape and decoded.dtype == np.uint8
    assert colours(decoded) <= k
    q = quantize(astronaut, colors=k)
    assert np.array_equal(decoded, q.image)
    assert psnr(astronaut, decoded) == pytest.approx(q.psnr, abs=1e-9)
    assert psnr(astronaut, decoded) > {2: 14, 16: 26, 64: 32}[k]


def test_artifact_is_a_standard_indexed_png_that_pillow_reads_the_same(astronaut: np.ndarray) -> None:
    artifact = encode(astronaut, colors=16)
    with Image.open(io.BytesIO(artifact)) as im:
        assert im.format == "PNG" and im.mode == "P"
        viewer = np.asarray(im.convert("RGB"))
    assert ihdr(artifact) == (4, 3)  # 16 colours: 4 bits per pixel, colour type 3 (palette)
    assert np.array_equal(viewer, decode(artifact))
    assert ihdr(encode(astronaut, colors=64))[0] == 8


def test_bit_depth_follows_the_palette_size() -> None:
    indices = np.arange(40 * 7).reshape(40, 7) % 3
    for k, bits in ((2, 1), (4, 2), (16, 4), (17, 8)):
        palette = np.stack([np.arange(k) * (255 // k)] * 3, axis=1).astype(np.uint8)
        png = palette_png((indices % k).astype(np.uint8), palette)
        assert ihdr(png) == (bits, 3)
        with Image.open(io.BytesIO(png)) as im:
            assert np.array_equal(np.asarray(im), indices % k)


def test_grayscale_gives_a_gray_palette_png_and_decodes_to_one_channel(camera: np.ndarray) -> None:
    artifact = encode(camera, colors=8)
    decoded = decode(artifact)
    assert decoded.shape == camera.shape
    assert colours(decoded) <= 8
    with Image.open(io.BytesIO(artifact)) as im:
        assert im.mode == "P"
        palette = np.asarray(im.getpalette()[: 3 * colours(decoded)]).reshape(-1, 3)
    assert np.all(palette == palette[:, :1])
    assert psnr(camera, decoded) > 28


def test_rgb_image_that_is_gray_still_decodes_to_three_channels(camera: np.ndarray) -> None:
    rgb = np.repeat(camera, 3, axis=2)
    decoded = decode(encode(rgb, colors=8))
    assert decoded.shape == rgb.shape
    assert np.array_equal(decoded, np.repeat(decode(encode(camera, colors=8)), 3, axis=2))


def test_same_seed_gives_the_same_bytes(astronaut: np.ndarray) -> None:
    assert encode(astronaut, colors=32, seed=7) == encode(astronaut, colors=32, seed=7)
    assert encode(astronaut, colors=32, seed=7) != encode(astronaut, colors=32, seed=8)


def test_target_psnr_is_reached_with_a_smaller_palette_than_the_maximum(astronaut: np.ndarray) -> None:
    q = quantize(astronaut, target_psnr=30.0)
    assert q.psnr >= 30.0
    assert psnr(astronaut, decode(encode(astronaut, target_psnr=30.0))) >= 30.0
    assert 2 < len(q.palette) < 256
    # "smallest": a palette a fifth smaller does not get there
    assert quantize(astronaut, colors=max(2, int(len(q.palette) * 0.8))).psnr < 30.0


def test_colors_bounds_the_target_search(astronaut: np.ndarray) -> None:
    q = quantize(astronaut, target_psnr=60.0, colors=12)  # unreachable: best effort at 12
    assert len(q.palette) <= 12
    assert q.psnr == pytest.approx(quantize(astronaut, colors=12).psnr)


def test_default_is_the_auto_target_or_256_colours(astronaut: np.ndarray) -> None:
    q = quantize(astronaut)
    assert q.psnr >= AUTO_TARGET_PSNR or len(q.palette) == 256
    assert q.psnr >= AUTO_TARGET_PSNR - 6  # a 256-colour palette on a photo is not far off


def test_an_image_with_few_colours_is_stored_losslessly() -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    image = palette[rng.integers(0, 5, (33, 47))]
    for params in ({}, {"colors": 8}, {"target_psnr": 70.0}):
        decoded = decode(encode(image, **params))
        assert np.array_equal(decoded, image), params
    assert colours(decode(encode(image, colors=4))) == 4


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 20, 3), (20, 1, 3), (1, 1, 1), (3, 2, 1)])
def test_tiny_images_round_trip(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for params in ({"colors": 2}, {}, {"target_psnr": 20.0}):
        decoded = KMEANS.decode(KMEANS.encode(image, **params))
        assert decoded.shape == shape
        assert colours(decoded) <= params.get("colors", 256)
    assert np.array_equal(KMEANS.decode(KMEANS.encode(image)), image)  # <= 256 colours: lossless by default


@pytest.mark.parametrize(
    "params, message",
    [
        ({"colors": 1}, "colors"),
        ({"colors": 257}, "colors"),
        ({"colors": "many"}, "colors"),
        ({"target_psnr": 5.0}, "target_psnr"),
        ({"seed": -1}, "seed"),
        ({"quality": 50}, "does not take quality"),
    ],
)
def test_invalid_parameters_are_refused_by_name(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KMEANS.encode(np.zeros((4, 4, 3), dtype=np.uint8), **params)


def test_quantize_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="colors"):
        quantize(np.zeros((4, 4, 3), dtype=np.uint8), colors=1)
    with pytest.raises(ValueError, match="uint8"):
        quantize(np.zeros((4, 4, 3), dtype=np.float32), colors=4)


def test_decode_refuses_what_is_not_a_png_and_truncated_pngs(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="signature"):
        decode(b"GIF89a not a png")
    artifact = encode(astronaut, colors=16)
    with pytest.raises(ValueError):
        decode(artifact[: len(artifact) // 2])


def test_decode_refuses_an_index_outside_the_palette() -> None:
    png = palette_png(np.array([[0, 1, 2]], dtype=np.uint8), np.zeros((3, 3), dtype=np.uint8))
    # rewrite PLTE to hold 2 entries while the pixels use index 2
    start = png.index(b"PLTE") - 4
    bad_plte = (6).to_bytes(4, "big") + b"PLTE" + bytes(6)
    bad_plte += zlib.crc32(b"PLTE" + bytes(6)).to_bytes(4, "big")
    with pytest.raises(ValueError):
        decode(png[:start] + bad_plte + png[start + 4 + 4 + 9 + 4 :])


def test_decode_reads_any_png(astronaut: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "PNG")
    assert np.array_equal(decode(buffer.getvalue()), astronaut)


def test_the_k_a_target_led_to_is_the_images_decision(astronaut):
    encoded = KMEANS.compress(astronaut, target_psnr=30.0)
    used = len(np.unique(KMEANS.decode(encoded.data).reshape(-1, 3), axis=0))
    assert encoded.decision == {"colors": used} and 2 <= used <= 256


def _clusters(n: int, seed: int = 0) -> np.ndarray:
    """A 96x96 image of ``n`` well-separated colours plus a little noise: its elbow is at K = n."""
    rng = np.random.default_rng(seed)
    centres = rng.permutation(np.array([[r, g, b] for r in (20, 120, 230) for g in (20, 120, 230)
                                        for b in (20, 230)]))[:n]
    labels = rng.integers(0, n, (96, 96))
    noisy = centres[labels] + rng.normal(0, 3, (96, 96, 3))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("n", [4, 8])
def test_elbow_finds_the_number_of_clusters_and_records_it(n: int) -> None:
    image = _clusters(n)
    encoded = KMEANS.compress(image, colors="elbow")
    assert encoded.decision == {"colors": n}
    assert colours(KMEANS.decode(encoded.data)) == n


def test_elbow_is_a_keyword_of_colors_and_other_words_are_refused() -> None:
    assert KMEANS.canonical_params({"colors": "Elbow"})["colors"] == "elbow"
    assert KMEANS.canonical_params({"colors": "64"})["colors"] == 64
    with pytest.raises(ValueError, match="colors must be int or 'elbow'"):
        KMEANS.canonical_params({"colors": "knee"})


def test_elbow_on_a_photo_is_a_small_palette_and_target_psnr_can_cap_it(astronaut: np.ndarray) -> None:
    from compressors.kmeans import elbow_k

    k = elbow_k(astronaut)
    assert 4 <= k <= 64  # photos: the inertia curve bends early (Kodak: 16-24)
    assert KMEANS.compress(astronaut, colors="elbow").decision == {"colors": k}
    capped = KMEANS.compress(astronaut, colors="elbow", target_psnr=20.0)
    assert capped.decision["colors"] <= k
