"""The ``jxl`` codec: lossy JPEG XL, and exact recompression (transcode / lossless / stored).

The JPEG variety is made here with Pillow (baseline, progressive, optimised, 4:4:4 and
4:2:0, grayscale, CMYK, EXIF and ICC segments, restart markers) plus one arithmetic-coded
JPEG (made once with libjpeg-turbo's ``jpegtran -arithmetic``, 258 bytes, embedded below),
so nothing here needs ../shared.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms
from skimage import data

from compressors import get_codec, jxl
from compressors.imageio import decode_image
from compressors.metrics import psnr

JXL = get_codec("jxl")
# jpegtran -arithmetic of a 24x16 Pillow JPEG: SOF9 + DAC, which libjxl cannot transcode.
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8t"
    "MC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/yQARCA"
    "AQABgDASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/ANGom/Tpv7JjnYg6K0i7rHPv1bqDHzW6Mewx/DZv5/MFmaUMhODIjxw0"
    "VKbZp8QvB8z5wP/Z"
)


def photo(h: int = 120, w: int = 160) -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[60 : 60 + h, 140 : 140 + w])


def save(image, fmt: str = "JPEG", **options) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def exact(source: bytes, **params):
    """Compress ``source`` the way a shard does: decode it, then hand the codec pixels and bytes."""
    return JXL.compress(decode_image(source).image, source=source, lossless=True, effort=3, **params)


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "imgpress test camera"
    exif[0x0132] = "2024:01:01 12:00:00"
    return exif.tobytes()


ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
TRANSCODABLE = {
    "baseline 4:2:0": dict(quality=85, subsampling="4:2:0"),
    "baseline 4:4:4": dict(quality=92, subsampling="4:4:4"),
    "baseline 4:2:2": dict(quality=90, subsampling="4:2:2"),
    "progressive": dict(quality=85, progressive=True),
    "optimised huffman": dict(quality=85, optimize=True),
    "progressive optimised": dict(quality=75, progressive=True, optimize=True),
    "exif segment": dict(quality=90, exif=_exif()),
    "icc segment": dict(quality=90, icc_profile=ICC),
    "restart markers every 4 blocks": dict(quality=85, restart_marker_blocks=4),
    "restart markers every row": dict(quality=85, restart_marker_rows=1),
    "comment segment": dict(quality=85, comment=b"imgpress"),
}


# ---------------------------------------------------------------- lossy


def test_lossy_quality_trades_bytes_for_psnr_and_effort_is_a_parameter():
    image = photo()
    lo, hi = JXL.encode(image, quality=20), JXL.encode(image, quality=90)
    assert hi.startswith(jxl.SIGNATURE_CODESTREAM) and len(hi) > len(lo)
    assert psnr(image, JXL.decode(hi)) > psnr(image, JXL.decode(lo)) > 25
    fast, slow = JXL.encode(image, quality=60, effort=1), JXL.encode(image, quality=60, effort=9)
    assert fast != slow
    with pytest.raises(ValueError, match="effort"):
        JXL.canonical_params({"effort": 10})


def test_lossy_never_takes_an_exact_route():
    out = JXL.compress(photo(), source=save(photo()), quality=50)
    assert out.route is None and out.extension is None and out.data.startswith(jxl.SIGNATURE_CODESTREAM)


def test_jxl_is_a_candidate_of_auto_and_a_target_keeps_the_exact_route():
    image = photo()
    chosen = get_codec("auto").compress(image, candidates="jxl", target_psnr=36.0)
    assert chosen.decision["codec"] == "jxl" and chosen.extension == ".jxl"
    assert psnr(image, JXL.decode(chosen.data)) >= 36.0
    cmyk = save(Image.fromarray(image).convert("CMYK"), quality=90)
    kept = JXL.compress(decode_image(cmyk).image, source=cmyk, lossless=True, target_psnr=40.0)
    assert kept.route == "stored" and kept.extension == "" and kept.data == cmyk  # the search keeps the route


def test_lossless_is_a_bool_parameter_with_its_usual_spellings():
    assert JXL.canonical_params({})["lossless"] is False
    for spelling in (True, 1, "true", "yes", "on", "1"):
        assert JXL.canonical_params({"lossless": spelling})["lossless"] is True
    for spelling in (False, 0, "false", "no", "off", "0"):
        assert JXL.canonical_params({"lossless": spelling})["lossless"] is False
    with pytest.raises(ValueError, match="lossless"):
        JXL.canonical_params({"lossless": "maybe"})
    with pytest.raises(ValueError, match="lossless"):
        JXL.canonical_params({"lossless": 2})


# ---------------------------------------------------------------- the header read before allocating


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 1), (16, 24, 3), (96, 128, 3), (257, 31, 1), (90, 120, 3)])
def test_the_header_parser_reads_the_size_libjxl_wrote(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for params in ({"quality": 50}, {"lossless": True, "effort": 1}):
        artifact = JXL.encode(image, **params)
        header = jxl.read_header(artifact)
        assert (header.height, header.width, header.bits_per_sample, header.extra_channels) == (*shape[:2], 8, 0)


def test_a_header_over_the_pixel_limit_is_refused_before_libjxl_runs(monkeypatch):
    artifact = JXL.encode(photo(), quality=50)
    monkeypatch.setattr(jxl, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ValueError, match="claims 160x120"):
        JXL.decode(artifact)


def test_foreign_bytes_are_value_errors_for_decode_and_restore():
    for blob in (b"\xff\x0a", b"\xff\x0a\xff", jxl.SIGNATURE_CONTAINER, save(photo()), b"not a jxl at all"):
        with pytest.raises(ValueError):
            JXL.decode(blob)
        with pytest.raises(ValueError):
            JXL.restore(blob)


# ---------------------------------------------------------------- exact: transcode


@pytest.mark.parametrize("kind", sorted(TRANSCODABLE))
def test_a_transcodable_jpeg_is_restored_byte_for_byte_and_smaller(kind):
    source = save(photo(), **TRANSCODABLE[kind])
    out = exact(source)
    assert out.route == "transcode", dict(out.decision)
    assert out.extension is None and out.data.startswith(jxl.SIGNATURE_CONTAINER)
    assert len(out.data) < len(source)
    assert JXL.restore(out.data) == source
    assert JXL.decode(out.data).shape == decode_image(source).image.shape  # any viewer sees the picture


def test_a_grayscale_jpeg_is_transcoded_too():
    source = save(photo()[:, :, 0], quality=88)
    out = exact(source)
    assert out.route == "transcode" and JXL.restore(out.data) == source
    assert JXL.decode(out.data).shape == (120, 160, 1)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("cmyk", lambda: save(Image.fromarray(photo()).convert("CMYK"), quality=90)),
        ("arithmetic coded", lambda: ARITHMETIC_JPEG),
    ],
)
def test_a_jpeg_libjxl_cannot_transcode_is_kept_as_it_is(kind, make):
    source = make()
    out = exact(source)
    assert out.route == "stored" and out.extension == "" and out.data == source
    assert "libjxl cannot transcode" in out.decision["stored_because"]


def test_a_damaged_jpeg_that_still_decodes_is_kept_as_it_is():
    good = save(photo(), quality=85)
    scan = good.index(b"\xff\xda")
    damaged = good[: scan + 40] + b"\xff\xd0" * 3 + good[scan + 46 :]  # stray restart markers in the scan
    decode_image(damaged)  # Pillow still decodes it (with a warning)
    out = exact(damaged)
    assert out.data == damaged and out.route in ("stored", "transcode")
    if out.route == "transcode":
        assert JXL.restore(out.data) == damaged


def test_a_jpeg_without_a_source_file_is_coded_from_its_pixels():
    out = JXL.compress(photo(), source=None, lossless=True, effort=1)
    assert out.route == "lossless" and np.array_equal(JXL.decode(out.data), photo())


# ---------------------------------------------------------------- exact: lossless, stored


@pytest.mark.parametrize(
    "kind, image",
    [
        ("rgb png", Image.fromarray(photo())),
        ("gray png", Image.fromarray(photo()[:, :, 0])),
        ("opaque rgba png", Image.fromarray(photo()).convert("RGBA")),
        ("palette png", Image.fromarray(photo()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)),
    ],
)
def test_a_non_jpeg_source_is_coded_pixel_exactly(kind, image):
    source = save(image, "PNG")
    decoded = decode_image(source)
    out = exact(source)
    assert out.route == "lossless" and out.data.startswith(jxl.SIGNATURE_CONTAINER)
    assert np.array_equal(JXL.decode(out.data), decoded.image)
    assert JXL.restore(out.data) is None  # pixels, not a file: decompress writes a PNG


@pytest.mark.parametrize(
    "kind, make, reason",
    [
        ("transparent rgba", lambda: save(Image.fromarray(np.dstack([photo(), np.full((120, 160), 100, np.uint8)])), "PNG"),
         "alpha composited"),
        ("16-bit gray", lambda: save(Image.fromarray((photo()[:, :, 0].astype(np.uint16) * 257)), "PNG"), "16-bit"),
    ],
)
def test_a_source_whose_pixels_the_pipeline_narrows_is_kept_as_it_is(kind, make, reason):
    source = make()
    out = exact(source)
    assert out.route == "stored" and out.data == source and reason in out.decision["stored_because"]


def test_a_source_the_artifact_would_not_shrink_is_kept_as_it_is():
    source = save(np.full((4, 4, 3), 7, np.uint8), "PNG", optimize=True)  # ~70 bytes: nothing to gain
    out = exact(source)
    assert out.route == "stored" and out.data == source and "not smaller" in out.decision["stored_because"]


# ---------------------------------------------------------------- checksums: never a silent wrong file


def _flip_in_box(artifact: bytes, box: bytes, offset: int) -> bytes:
    start = next(s for kind, s, _ in jxl._boxes(artifact) if kind == box)
    out = bytearray(artifact)
    out[start + offset] ^= 0x01
    return bytes(out)


def test_a_transcode_whose_checksum_does_not_match_is_an_error():
    source = save(photo(), quality=85)
    artifact = exact(source).data
    assert jxl._checksum(artifact) == (jxl.KIND_FILE, hashlib.sha256(source).digest())
    with pytest.raises(ValueError, match="does not match"):
        JXL.restore(_flip_in_box(artifact, jxl.CHECKSUM_BOX, 10))


def test_lossless_pixels_whose_checksum_does_not_match_are_an_error():
    artifact = exact(save(photo(), "PNG")).data
    with pytest.raises(ValueError, match="do not match"):
        JXL.decode(_flip_in_box(artifact, jxl.CHECKSUM_BOX, 5))
    with pytest.raises(ValueError, match="checksum box"):
        JXL.decode(artifact[:-34] + struct.pack(">BB", 9, 0) + artifact[-32:])  # an unknown checksum version
