"""The lossless codec: exact round trips, bit-exact decoding anywhere, checked containers, training."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from skimage import data as skdata
from threadpoolctl import threadpool_limits

from compressors import get_codec
from compressors.lossless import codec as lcodec
from compressors.lossless import container
from compressors.lossless.features import Gatherer, all_features, padded, to_planes
from compressors.lossless import default_model_id, get_model
from compressors.lossless.integer import IntegerNet

LOSSLESS = get_codec("lossless")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[100:164, 150:246])  # 64 x 96 RGB: keeps the suite fast


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return np.ascontiguousarray(skdata.camera()[200:264, 200:280, None])


def _recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_a_model_is_shipped_and_is_the_default():
    mid = default_model_id()
    assert len(mid) == 16 and LOSSLESS.params["model"].default == mid
    assert get_model(mid).kind == "lossless"


@pytest.mark.parametrize("stripe", [128, 8])
def test_rgb_and_gray_round_trip_exactly(astronaut, camera, stripe):
    for image in (astronaut, camera):
        data = LOSSLESS.encode(image, stripe=stripe)
        assert data[:4] == b"IMPL"
        assert np.array_equal(LOSSLESS.decode(data), image)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1, 1), (1, 50, 3), (50, 1, 1), (3, 4, 3), (17, 29, 1)])
def test_tiny_and_odd_shapes_round_trip_exactly(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(LOSSLESS.decode(LOSSLESS.encode(image)), image)


def test_extreme_values_round_trip_exactly():
    """Saturated and alternating pixels exercise the folded tails at 0 and 255."""
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[::2, :, 0] = 255
    image[:, ::3, 2] = 255
    image[5:9, 5:25] = 255
    assert np.array_equal(LOSSLESS.decode(LOSSLESS.encode(image)), image)


def test_a_natural_image_costs_fewer_bits_than_png(astronaut):
    ours = len(LOSSLESS.encode(astronaut))
    png = len(get_codec("png").encode(astronaut))
    assert ours < png


def test_the_coded_size_is_close_to_the_models_ideal_code_length(astronaut):
    lm = get_model(default_model_id())
    ideal_bytes = lcodec.code_length(lm.runtime, astronaut) / 8
    overhead = len(LOSSLESS.encode(astronaut)) - ideal_bytes
    assert 0 < overhead < container.HEADER_SIZE + 8 + 7 * astronaut.shape[0]  # header + per-row state and length


def test_bytes_and_pixels_do_not_depend_on_the_blas_thread_count(astronaut):
    with threadpool_limits(limits=1, user_api="blas"):
        one = lcodec.encode_with(get_model(default_model_id()).runtime, default_model_id(), astronaut)
    with threadpool_limits(limits=2, user_api="blas"):
        two = lcodec.encode_with(get_model(default_model_id()).runtime, default_model_id(), astronaut)
        header, counts, words = container.unpack(one)
        back = lcodec.decode_with(get_model(default_model_id()).runtime, header, counts, words)
    assert one == two and np.array_equal(back, astronaut)


def test_the_integer_network_gives_the_same_outputs_in_any_batch_split(astronaut):
    """Encoding runs the network on all pixels at once, decoding on wavefront steps: same integers."""
    net = get_model(default_model_id()).runtime
    planes = to_planes(astronaut)
    feats, base = all_features(planes, 128)
    whole = net.trunk(feats)
    pieces = np.concatenate([net.trunk(feats[i : i + 7]) for i in range(0, len(feats), 7)])
    assert np.array_equal(whole, pieces)
    # the decoder's gatherer sees exactly the encoder's context once the pixels are there
    gather = Gatherer(padded(planes), astronaut.shape[1], 128)
    ys, xs = np.divmod(np.arange(len(feats)), astronaut.shape[1])
    f2, b2 = gather(ys, xs)
    assert np.array_equal(f2, feats) and np.array_equal(b2, base)


def test_the_integer_network_sums_exactly_in_any_order():
    """12-bit weights times inputs of at most 1023: every partial sum is an integer far below 2**53."""
    net = get_model(default_model_id()).runtime
    rng = np.random.default_rng(3)
    feats = rng.integers(-255, 256, (4096, net.layers["t0"][0].shape[0])).astype(np.int16)
    a = net.trunk(feats)
    b = net.trunk(feats[::-1].copy())[::-1]
    assert np.array_equal(a, b)
    w = net.layers["t0"][0].astype(np.float64)
    assert np.all(w == np.round(w)) and np.abs(w).max() <= 2047
    assert 1023 * np.abs(w).sum(axis=0).max() < 2**40


def test_a_decoder_that_computes_differently_reports_an_error_not_wrong_pixels(astronaut, monkeypatch):
    data = LOSSLESS.encode(astronaut)
    net = get_model(default_model_id()).runtime
    original = IntegerNet.head

    def off_by_one_scale(self, plane, h, base, errors):
        table, b = original(self, plane, h, base, errors)
        return np.where(table >= 4, table - 4, table + 4), b  # one scale step away

    monkeypatch.setattr(IntegerNet, "head", off_by_one_scale)
    with pytest.raises(ValueError, match="lossless"):
        LOSSLESS.decode(data)
    monkeypatch.setattr(IntegerNet, "head", original)
    assert np.array_equal(LOSSLESS.decode(data), astronaut)
    assert net is get_model(default_model_id()).runtime


def test_a_wrong_pixel_checksum_is_an_error(astronaut):
    data = bytearray(LOSSLESS.encode(astronaut))
    data[27] ^= 0x01  # inside the pixels' CRC32 field (offset 25..28)
    with pytest.raises(ValueError, match="CRC32 differs"):
        LOSSLESS.decode(_recrc(data))


def test_an_unknown_model_and_other_codecs_artifacts_are_clear_errors(astronaut):
    data = bytearray(LOSSLESS.encode(astronaut))
    data[6:14] = bytes.fromhex("00112233445566ff")
    with pytest.raises(ValueError, match="unknown lossless model"):
        LOSSLESS.decode(_recrc(data))
    for other in ("jpeg", "png", "kmeans", "pca"):
        with pytest.raises(ValueError, match="not a lossless artifact"):
            LOSSLESS.decode(get_codec(other).encode(astronaut))


@pytest.mark.parametrize("field, value", [(14, 0xFFFFFFFF), (18, 100_000), (14, 0), (22, 2), (23, 0)])
def test_claims_are_checked_before_allocation(astronaut, field, value):
    data = bytearray(LOSSLESS.encode(astronaut))
    fmt = "<I" if field in (14, 18) else "<B"
    if field == 23:
        fmt = "<H"
    struct.pack_into(fmt, data, field, value)
    with pytest.raises(ValueError, match="lossless"):
        LOSSLESS.decode(_recrc(data))


def test_truncated_and_corrupted_payloads_are_refused(astronaut):
    data = LOSSLESS.encode(astronaut)
    with pytest.raises(ValueError, match="lossless"):
        LOSSLESS.decode(data[:-10])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0x40
    with pytest.raises(ValueError, match="CRC32"):
        LOSSLESS.decode(bytes(corrupt))
    with pytest.raises(ValueError, match="lossless"):  # same flip, container checksum made right again
        LOSSLESS.decode(_recrc(corrupt))


def test_training_a_few_steps_gives_a_model_that_codes_exactly(astronaut, camera):
    from compressors.lossless.train import fit

    crops = [astronaut, np.repeat(camera, 3, axis=2)]
    module, meta = fit(crops, options={"hidden": 16, "trunk2": 8, "head": 8, "batch": 512, "samples_per_image": 500},
                       minutes=0, max_steps=5, device="cpu", seed=0, init=None, log=lambda s: None)
    assert meta["kind"] == "lossless" and meta["training"]["steps"] == 5
    net = IntegerNet(module)
    for image in (astronaut, camera):
        data = lcodec.encode_with(net, "00" * 8, image)
        header, counts, words = container.unpack(data)
        assert np.array_equal(lcodec.decode_with(net, header, counts, words), image)
