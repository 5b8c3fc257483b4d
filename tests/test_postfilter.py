"""The decoder-side post-filter: the model, its training, the shipped `jpeg` filter, the pipeline.

No ../shared: training and test images come from scikit-image's sample photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data

from compressors import get_codec, models
from compressors import postfilter as pf
from compressors.metrics import psnr, ssim
from compressors.postfilter import model as pf_model
from compressors.postfilter.train import fit, parse_range
from compressors.roundtrip import measure
from tasks.plan import prepare_run
from tasks.report import read_reports
from tasks.shard import compress_shard, decompress_shard, png_name

JPEG = get_codec("jpeg")
# The shipped `jpeg` filter (compressors/postfilter/models): tests of it run once it is there.
shipped_filter = pytest.mark.skipif("jpeg" not in models.shipped_names("postfilter"), reason="no shipped jpeg filter yet")


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return JPEG.decode(JPEG.encode(image, quality=quality))


@pytest.fixture(scope="module")
def tiny_filter():
    """A small filter trained for a few steps, loaded into the store: (id, metadata)."""
    images = [data.astronaut(), data.coffee()]
    module, meta = fit(images, options={"channels": 8, "layers": 3, "patch": 32, "batch": 2, "lr": 1e-3,
                                        "precision": "fp32"}, max_steps=6, seed=1, log=lambda s: None)
    mid, blob, js = models.serialize(module, meta)
    assert models.load_model(blob, js, kind="postfilter") == mid
    return mid, json.loads(js)


def test_an_untrained_filter_is_the_identity():
    image = data.chelsea()[:70, :93]  # odd sizes: padded to the unshuffle factor, cropped back
    assert np.array_equal(pf_model.filter_image(pf_model.PostFilter(8, 3).eval(), image), image)


def test_a_trained_filter_keeps_shape_and_dtype_gray_included(tiny_filter):
    mid, meta = tiny_filter
    assert meta["kind"] == "postfilter" and meta["postfilter"] == {"for": "jpeg", "parameter": "quality", "range": [30, 90]}
    assert meta["training"]["steps"] == 6
    rgb = jpeg(data.astronaut()[:64, :80], 40)
    gray = jpeg(data.camera()[:50, :61, None], 40)
    for image in (rgb, gray):
        out = pf.apply(image, mid)
        assert out.dtype == np.uint8 and out.shape == image.shape


def test_tiles_give_the_whole_image_result(tiny_filter, monkeypatch):
    mid, _ = tiny_filter
    image = jpeg(data.coffee()[:150, :170], 35)
    whole = pf.apply(image, mid)
    monkeypatch.setattr(pf_model, "TILE", 48)  # 4x4 tiles with 32-px halos instead of one
    assert np.abs(pf.apply(image, mid).astype(int) - whole).max() <= 1  # float rounding only


def test_quality_ranges_are_checked():
    assert parse_range("30-90") == (30, 90) and parse_range("50") == (50, 50)
    with pytest.raises(ValueError, match="backwards"):
        parse_range("90-30")
    with pytest.raises(ValueError, match="outside"):
        fit([data.astronaut()], options={"quality_range": "0-50"}, max_steps=1, log=lambda s: None)
    with pytest.raises(ValueError, match="quality-like"):
        fit([data.astronaut()], options={"for": "digits"}, max_steps=1, log=lambda s: None)


def test_training_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "pf.ckpt"
    opts = {"channels": 4, "layers": 2, "patch": 32, "batch": 1, "precision": "fp32"}
    fit([data.astronaut()], options=opts, max_steps=2, checkpoint=ckpt, log=lambda s: None)
    logs: list[str] = []
    _, meta = fit([data.astronaut()], options=opts, max_steps=4, checkpoint=ckpt, log=logs.append)
    assert any("resumed" in line and "step 2" in line for line in logs)
    assert meta["training"]["steps"] == 4


@shipped_filter
@pytest.mark.parametrize("quality", [30, 50, 75])
def test_the_shipped_jpeg_filter_raises_psnr_on_photos_it_never_saw(quality):
    """scikit-image's photos are not in the training set (../shared/data/train)."""
    image = data.astronaut()
    coded = jpeg(image, quality)
    filtered = pf.apply(coded, "jpeg")
    assert psnr(image, filtered) > psnr(image, coded) + 0.2
    assert ssim(image, filtered) >= ssim(image, coded)


def test_measure_describes_the_filtered_image(tiny_filter):
    mid, _ = tiny_filter
    image = data.astronaut()[:64, :64]
    plain = measure(JPEG, image, {"quality": 40})
    filtered = measure(JPEG, image, {"quality": 40}, postfilter=mid)
    assert filtered.encoded.data == plain.encoded.data  # the artifact is the codec's, untouched
    assert np.array_equal(filtered.decoded, pf.apply(plain.decoded, mid))
    assert filtered.psnr == psnr(image, filtered.decoded)
    fields = filtered.fields(1000)
    assert fields["postfilter"] == mid and fields["postfilter_ms"] > 0
    assert "postfilter" not in plain.fields(1000)


@pytest.fixture
def photos(tmp_path):
    from PIL import Image

    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(data.astronaut()[:96, :96]).save(root / "a.png")
    Image.fromarray(data.camera()[:80, :64]).save(root / "gray.png")
    return str(root)


@shipped_filter
def test_a_shard_with_a_postfilter_records_it_and_is_a_run_of_its_own(photos, tmp_path):
    dest = str(tmp_path / "out")
    plain = prepare_run(photos, dest, "jpeg", {"quality": 40})
    filtered = prepare_run(photos, dest, "jpeg", {"quality": 40}, postfilter="jpeg")
    assert plain.run_id != filtered.run_id  # other metrics, so another run (its artifacts are the same bytes)
    for plan in (plain, filtered):
        for spec in plan.specs:
            compress_shard(spec)
    table = read_reports(dest).to_pylist()
    rows = {(r["run_id"], r["source"]): r for r in table}
    for src in ("a.png", "gray.png"):
        before, after = rows[(plain.run_id, src)], rows[(filtered.run_id, src)]
        assert before["postfilter"] is None and after["postfilter"] == pf.describe("jpeg")
        assert after["postfilter"].startswith("jpeg@")
        assert after["artifact_bytes"] == before["artifact_bytes"] and after["psnr"] > before["psnr"]
    out = tmp_path / "decoded"
    result = decompress_shard(f"{dest}/artifacts/{plain.run_id}", str(out), (("a.png.jpg", 0),), postfilter="jpeg")
    assert result["ok"] == 1
    from PIL import Image

    decoded = np.asarray(Image.open(out / png_name("a.png.jpg", JPEG.extension)))
    coded = JPEG.decode(open(f"{dest}/artifacts/{plain.run_id}/a.png.jpg", "rb").read())
    assert np.array_equal(decoded, pf.apply(coded, "jpeg"))
