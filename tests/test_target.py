"""Quality targets for every codec and the `auto` codec: the one search, the codecs, a real run."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from skimage import data

from compressors import CODECS, get_codec
from compressors.metrics import psnr, ssim
from compressors.target import Target, smallest_passing, ssim_db

QUALITY_CODECS = sorted(n for n, c in CODECS.items() if c.target_search)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[120:216, 160:288])  # 96 x 128: a face, hair, background


# --------------------------------------------------------------------------- the search


def counting(fn):
    calls = []

    def measure(q):
        calls.append(q)
        return fn(q)

    return measure, calls


@pytest.mark.parametrize("threshold", [1, 2, 17, 50, 73, 99, 100])
@pytest.mark.parametrize("start", [1, 40, 100])
def test_search_finds_the_smallest_passing_setting_of_a_monotone_curve(threshold, start):
    curve = lambda q: 20 + 0.25 * q + 0.002 * q * q  # noqa: E731  (PSNR-like: convex in q)
    target = curve(threshold) - 1e-9
    measure, calls = counting(lambda q: curve(q) - target)
    q, margin, evaluations = smallest_passing(measure, 1, 100, start=start, slope=0.3)
    assert q == threshold and margin >= 0 and evaluations == len(set(calls))
    assert threshold == 1 or curve(q - 1) < target


def test_search_needs_few_evaluations_with_a_good_prior():
    curve = lambda q: 25 + 0.15 * q  # noqa: E731
    for threshold in range(5, 100, 7):
        measure, calls = counting(lambda q, t=threshold: curve(q) - curve(t) + 1e-9)
        q, _, n = smallest_passing(measure, 1, 100, start=threshold + 6, slope=0.12)
        assert q == threshold and n <= 4, (threshold, calls)


def test_search_without_a_slope_still_converges_by_bisection():
    measure, calls = counting(lambda q: -1.0 if q < 61 else 1.0)  # a step: no slope to use
    assert smallest_passing(measure, 1, 100, start=50)[0] == 61
    assert len(calls) <= 9


def test_an_unreachable_target_gives_the_best_setting_and_a_negative_margin():
    q, margin, n = smallest_passing(lambda q: q / 10 - 20, 1, 100, start=50, slope=0.1)
    assert (q, margin) == (100, -10) and n <= 3


def test_log_search_interpolates_in_log_q():
    curve = lambda k: 2.5 * math.log2(k)  # noqa: E731  (dB per doubling of a palette)
    measure, calls = counting(lambda k: curve(k) - curve(37) + 1e-9)
    assert smallest_passing(measure, 1, 256, start=256, slope=2.5, log=True)[0] == 37
    assert len(calls) <= 5


def test_the_margin_is_in_db_and_the_harder_target_binds(photo):
    noisy = np.clip(photo.astype(int) + np.random.default_rng(0).normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
    p, s = psnr(photo, noisy), ssim(photo, noisy)
    assert Target(psnr=p - 1).margin(photo, noisy) == pytest.approx(1)
    assert Target(ssim=s).margin(photo, noisy) == pytest.approx(0, abs=1e-9)
    assert Target(psnr=p - 1, ssim=s).margin(photo, noisy) == pytest.approx(0, abs=1e-9)
    assert ssim_db(0.99) == pytest.approx(20) and ssim_db(1.0) == math.inf


# --------------------------------------------------------------------------- every codec


def test_every_lossy_codec_takes_both_targets():
    for name in [*QUALITY_CODECS, "kmeans", "auto"]:
        assert {"target_psnr", "target_ssim"} <= set(get_codec(name).params), name
    assert set(QUALITY_CODECS) >= {"jpeg", "webp", "avif", "jpeg2000", "autoencoder"}


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif", "jpeg2000", "jxl"])
@pytest.mark.parametrize("target", [{"target_psnr": 34.0}, {"target_ssim": 0.95}])
def test_a_target_gives_the_lowest_quality_that_reaches_it(name, target, photo):
    codec = get_codec(name)
    goal = Target.from_params(target)
    encoded = codec.compress(photo, **target)
    q = encoded.decision["quality"]
    assert set(encoded.decision) == {"quality"}  # met: no "target_met": false
    assert goal.margin(photo, codec.decode(encoded.data)) >= 0
    assert encoded.data == codec.encode(photo, quality=q)  # the artifact is that quality's
    below = codec.decode(codec.encode(photo, quality=q - 1))
    assert goal.margin(photo, below) < 0  # one step lower misses: the lowest


def test_quality_with_a_target_bounds_the_search_and_the_miss_is_recorded(photo):
    jpeg = get_codec("jpeg")
    assert jpeg.canonical_params({"target_psnr": 35})["quality"] is None  # the target chooses it
    assert jpeg.canonical_params({"target_psnr": 35, "quality": 40})["quality"] == 40
    encoded = jpeg.compress(photo, target_psnr=60.0, quality=40)
    assert encoded.decision == {"quality": 40, "target_met": False}


def test_the_autoencoder_searches_its_levels(photo):
    codec = get_codec("autoencoder")
    levels = [psnr(photo, codec.decode(codec.encode(photo, quality=q))) for q in (1, 2)]
    encoded = codec.compress(photo, target_psnr=(levels[0] + levels[1]) / 2)
    assert encoded.decision == {"quality": 2}


def test_kmeans_takes_an_ssim_target_too(photo):
    kmeans = get_codec("kmeans")
    encoded = kmeans.compress(photo, target_ssim=0.9)
    k = encoded.decision["colors"]
    assert ssim(photo, kmeans.decode(encoded.data)) >= 0.9 and 2 <= k < 256
    assert ssim(photo, kmeans.decode(kmeans.encode(photo, colors=max(2, int(k * 0.8))))) < 0.9
    missed = kmeans.compress(photo, target_ssim=0.9999, colors=8)
    assert missed.decision == {"colors": 8, "target_met": False}


# --------------------------------------------------------------------------- auto


def test_auto_keeps_the_smallest_artifact_that_meets_the_target(photo):
    auto = get_codec("auto")
    encoded = auto.compress(photo, target_psnr=33.0, candidates="jpeg,webp,kmeans")
    sizes = {n: len(get_codec(n).compress(photo, target_psnr=33.0).data) for n in ("jpeg", "webp", "kmeans")}
    chosen = encoded.decision["codec"]
    assert sizes[chosen] == min(sizes.values()) == len(encoded.data)
    assert encoded.extension == get_codec(chosen).extension
    assert psnr(photo, auto.decode(encoded.data)) >= 33.0  # decoded by its signature
    assert get_codec(chosen).decode(encoded.data).shape == photo.shape  # a standard file of that codec


def test_auto_decodes_each_candidates_artifact_as_that_candidate_does(photo):
    """A kmeans palette PNG also starts like a png artifact: auto decodes it as kmeans does
    (a gray image stays one channel)."""
    gray = np.ascontiguousarray(photo[..., :1])
    for image in (photo, gray):
        for name in ("jpeg", "webp", "kmeans"):
            data = get_codec(name).compress(image, target_psnr=30.0).data
            decoded, own = get_codec("auto").decode(data), get_codec(name).decode(data)
            assert decoded.shape == own.shape and np.array_equal(decoded, own), name


def test_auto_with_no_candidate_reaching_the_target_keeps_the_closest(photo):
    encoded = get_codec("auto").compress(photo, target_psnr=70.0, candidates="jpeg,kmeans")
    assert encoded.decision["target_met"] is False and encoded.decision["codec"] in ("jpeg", "kmeans")


def test_auto_refuses_unknown_or_unsuitable_candidates():
    auto = get_codec("auto")
    assert auto.canonical_params({"candidates": " webp,jpeg,webp"})["candidates"] == "jpeg,webp"
    for bad in ("gif", "auto", ""):
        with pytest.raises(ValueError):
            auto.canonical_params({"candidates": bad})


def test_auto_runs_as_a_flow_and_its_artifacts_decompress(prefect_server, dask_address, tmp_path, photo):
    from PIL import Image

    from flows.compress import compress_collection
    from flows.decompress import decompress_collection
    from flows.params import CompressRequest, DecompressRequest
    from flows.runner import dask_runner
    from tasks.report import read_reports

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(photo).save(src / "photo.png")
    colours = np.array([(255, 255, 255), (200, 40, 40), (20, 20, 120)], np.uint8)
    graphic = colours[np.random.default_rng(0).integers(0, 3, (64, 64))]  # 3 colours, sharp: a palette wins
    Image.fromarray(graphic).save(src / "graphic.png")
    runner = dask_runner(dask_address)
    request = CompressRequest(source=str(src), dest=str(tmp_path / "out"), codec="auto", target_psnr=34.0,
                              candidates="jpeg,webp,kmeans")
    summary = compress_collection.with_options(task_runner=runner)(request)
    assert summary["ok"] == 2
    rows = {r["source"]: r for r in read_reports(request.dest).to_pylist()}
    decisions = {k: json.loads(r["decision"]) for k, r in rows.items()}
    assert decisions["graphic.png"]["codec"] == "kmeans"
    for source, row in rows.items():
        chosen = get_codec(decisions[source]["codec"])
        assert row["artifact"].endswith(source + chosen.extension) and os.path.exists(row["artifact"])
        assert row["psnr"] >= 34.0 and row["codec"] == "auto"
    decoded = decompress_collection.with_options(task_runner=runner)(
        DecompressRequest(source=os.path.join(request.dest, "artifacts"), dest=str(tmp_path / "png"))
    )
    assert decoded["ok"] == 2 and decoded["errors"] == 0
