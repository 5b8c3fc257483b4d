"""The codec contract, checked for every codec in the registry (new codecs are covered on arrival)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

import compressors
from compressors import CODECS, get_codec
from compressors.metrics import psnr

ALL = sorted(CODECS)
ANY_SHAPE = sorted(n for n, c in CODECS.items() if c.shape is None)  # digits codes 28x28 gray only


def _rgb(h=96, w=128):
    return np.ascontiguousarray(data.astronaut()[100 : 100 + h, 150 : 150 + w])


@pytest.mark.parametrize("name", ANY_SHAPE)
def test_round_trip_keeps_shape_and_dtype(name):
    codec = get_codec(name)
    image = _rgb()
    blob = codec.encode(image)
    assert isinstance(blob, bytes) and len(blob) > 0
    decoded = codec.decode(blob)
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    assert psnr(image, decoded) > 20


@pytest.mark.parametrize("name", ANY_SHAPE)
def test_grayscale_stays_one_channel(name):
    codec = get_codec(name)
    gray = np.ascontiguousarray(data.camera()[:64, :80, None])
    decoded = codec.decode(codec.encode(gray))
    assert decoded.shape == gray.shape


@pytest.mark.parametrize("name", ANY_SHAPE)
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 37, 3), (33, 1, 1), (17, 29, 3)])
def test_odd_and_tiny_sizes_round_trip(name, shape):
    codec = get_codec(name)
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert codec.decode(codec.encode(image)).shape == shape


@pytest.mark.parametrize("name", sorted(set(ALL) - set(ANY_SHAPE)))
def test_a_codec_of_one_shape_codes_it_and_refuses_others_clearly(name):
    codec = get_codec(name)
    h, w, c = codec.shape
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    decoded = codec.decode(codec.encode(image))
    assert decoded.dtype == np.uint8 and decoded.shape == codec.shape
    with pytest.raises(ValueError, match=f"{h}x{w}"):
        codec.encode(_rgb())


@pytest.mark.parametrize("name", ALL)
def test_decoder_rejects_empty_and_foreign_bytes_with_value_error(name):
    codec = get_codec(name)
    with pytest.raises(ValueError):
        codec.decode(b"")
    with pytest.raises(ValueError):
        codec.decode(b"this is not an artifact of any codec" * 4)


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif", "jpeg2000", "jxl"])
def test_higher_quality_costs_more_bytes_and_gains_psnr(name):
    codec = get_codec(name)
    image = _rgb(128, 128)
    lo, hi = codec.encode(image, quality=20), codec.encode(image, quality=90)
    assert len(hi) > len(lo)
    assert psnr(image, codec.decode(hi)) > psnr(image, codec.decode(lo))


@pytest.mark.parametrize(
    "name, blob_start, offset",
    [("jpeg", b"\xff\xd8\xff", 0), ("webp", b"WEBP", 8), ("avif", b"ftypavi", 4), ("jpeg2000", b"\x00\x00\x00\x0cjP", 0),
     ("jxl", b"\xff\x0a", 0)],
)
def test_classical_artifacts_are_standard_files(name, blob_start, offset):
    blob = get_codec(name).encode(_rgb())
    assert blob[offset : offset + len(blob_start)] == blob_start


def test_params_are_validated_with_the_parameter_named():
    jpeg = get_codec("jpeg")
    with pytest.raises(ValueError, match="quality"):
        jpeg.canonical_params({"quality": 101})
    with pytest.raises(ValueError, match="colors"):
        jpeg.canonical_params({"colors": 16})
    assert jpeg.canonical_params({}) == jpeg.canonical_params({"quality": jpeg.params["quality"].default})


def test_registry_is_the_one_list_and_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        compressors.register(CODECS["jpeg"])
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("gif")


def test_codec_boundary_rejects_wrong_dtype_and_shape():
    jpeg = get_codec("jpeg")
    with pytest.raises(TypeError):
        jpeg.encode(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        jpeg.encode(np.zeros((8, 8, 4), dtype=np.uint8))
