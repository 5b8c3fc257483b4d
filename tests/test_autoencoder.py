"""The learned ``autoencoder`` codec: bitstreams, container, model files, training.

Runs on CPU with a tiny random-init model built here (no ../shared needed); the shipped
model's PSNR band is checked only when a shipped model exists.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

import compressors.autoencoder as ae
from compressors.autoencoder import container, store
from compressors.autoencoder.model import MeanScaleHyperprior
from compressors.autoencoder.train import TrainConfig, train
from compressors.registry import CODECS, get_codec


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def tiny():
    """A tiny random-init model registered in the store: ``(model_id, blob, meta_json)``."""
    torch.manual_seed(0)
    model = MeanScaleHyperprior(N=16, M=16, qualities=3).eval()
    mid, blob, meta = store.serialize(model, {"lambdas": [0.005, 0.01, 0.02]})
    assert ae.load_model(blob, meta) == mid
    return mid, blob, meta


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:196, 150:278])  # 96 x 128 x 3


def test_autoencoder_is_registered_with_quality_and_model_params():
    codec = get_codec("autoencoder")
    assert CODECS["autoencoder"] is codec and codec.extension == ".imp"
    assert set(codec.params) == {"quality", "model", "target_psnr", "target_ssim"}
    assert codec.params["model"].kind is str
    assert codec.params["quality"].lo == 1


def test_round_trip_gives_bytes_of_the_input_shape(tiny, image):
    codec = get_codec("autoencoder")
    data = codec.encode(image, quality=2, model=tiny[0])
    assert isinstance(data, bytes) and data[:4] == container.MAGIC
    out = codec.decode(data)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_bitstream_and_decode_are_deterministic(tiny, image):
    codec = get_codec("autoencoder")
    a = codec.encode(image, quality=3, model=tiny[0])
    b = codec.encode(image, quality=3, model=tiny[0])
    assert a == b
    np.testing.assert_array_equal(codec.decode(a), codec.decode(b))


def test_batch_helpers_match_single_image_coding(tiny, image):
    images = [image, np.ascontiguousarray(image[::-1]), np.ascontiguousarray(image[:, ::-1])]
    batch = ae.encode_batch(images, quality=1, model=tiny[0])
    decoded = ae.decode_batch(batch)
    for im, data, dec in zip(images, batch, decoded):
        assert data == ae.encode(im, quality=1, model=tiny[0])
        np.testing.assert_array_equal(dec, ae.decode(data))


@pytest.mark.parametrize("shape", [(37, 53, 3), (37, 53, 1), (1, 1, 3), (65, 130, 1)])
def test_any_size_and_grayscale_round_trip(tiny, shape):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = ae.decode(ae.encode(img, quality=2, model=tiny[0]))
    assert out.shape == shape and out.dtype == np.uint8
    if shape[2] == 1:
        hd, _ = container.unpack(ae.encode(img, quality=2, model=tiny[0]))
        assert hd.channels == 1


def test_quality_outside_the_models_levels_is_refused(tiny, image):
    with pytest.raises(ValueError, match="quality"):
        ae.encode(image, quality=4, model=tiny[0])


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def artifact(tiny, image) -> bytes:
    return ae.encode(image, quality=2, model=tiny[0])


@pytest.mark.parametrize("cut", [0, 5, container.HEADER_SIZE, -1, -7])
def test_truncated_artifact_is_a_clear_error(artifact, cut):
    with pytest.raises(ValueError, match="truncated"):
        ae.decode(artifact[:cut])


def test_wrong_magic_is_a_clear_error(artifact):
    with pytest.raises(ValueError, match="magic"):
        ae.decode(b"JUNK" + artifact[4:])


def test_flipped_byte_fails_the_checksum(artifact):
    for pos in (20, container.HEADER_SIZE + 1, len(artifact) - 1):
        bad = bytearray(artifact)
        bad[pos] ^= 0x10
        with pytest.raises(ValueError, match="checksum|CRC"):
            ae.decode(bytes(bad))


def test_unknown_model_id_is_a_clear_error(artifact):
    body = bytearray(artifact[:-4])
    body[6:14] = bytes.fromhex("00112233deadbeef")
    with pytest.raises(ValueError, match="unknown autoencoder model id '00112233deadbeef'"):
        ae.decode(_recrc(bytes(body)))
    with pytest.raises(ValueError, match="unknown autoencoder model id"):
        ae.encode(np.zeros((8, 8, 3), np.uint8), quality=1, model="00112233deadbeef")


def test_oversized_claimed_shape_is_refused_before_allocation(artifact):
    body = bytearray(artifact[:-4])
    struct.pack_into("<II", body, 14, 100_000, 100_000)
    with pytest.raises(ValueError, match="limit"):
        ae.decode(_recrc(bytes(body)))


def test_model_files_are_safetensors_only(tiny, monkeypatch):
    _, blob, meta = tiny

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be used for model files")

    monkeypatch.setattr(torch, "load", no_pickle)
    assert store.build_model(blob, meta)[1]["model_id"] == tiny[0]
    pickled = pickle.dumps({"g_a.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a safetensors file"):
        ae.load_model(pickled, meta)


def test_metadata_shapes_are_checked_against_the_weights(tiny):
    _, blob, meta = tiny
    m = json.loads(meta)
    m["tensors"]["g_a.0.weight"] = [1, 2, 3, 4]
    with pytest.raises(ValueError, match="shapes"):
        ae.load_model(blob, json.dumps(m))


def test_a_few_training_steps_lower_the_loss_and_resume_from_a_checkpoint(tmp_path, image):
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    cfg = TrainConfig(N=16, M=16, lambdas=[0.01, 0.02], crop=64, batch=4, lr=1e-3, steps=40, log_every=5)
    model, meta = train(photos, cfg, device="cpu", seed=0, log=lambda s: None)
    hist = meta["training"]["history"]
    assert meta["training"]["steps"] == 40 and meta["training"]["device"].startswith("cpu")
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]

    mid, blob, meta_json = store.serialize(model, meta)
    ckpt = tmp_path / "ckpt.safetensors"
    cfg2 = TrainConfig(crop=64, batch=2, steps=2, log_every=1)
    tuned, tmeta = train(photos, cfg2, device="cpu", seed=1, init_state=(blob, meta_json), checkpoint_path=ckpt)
    assert tmeta["training"]["finetuned_from"] == mid and ckpt.exists()
    assert tuned.N == 16 and tmeta["lambdas"] == [0.01, 0.02]
    cfg3 = TrainConfig(crop=64, batch=2, steps=3, log_every=1)
    logs: list[str] = []
    _, rmeta = train(photos, cfg3, device="cpu", seed=1, init_state=(blob, meta_json), checkpoint_path=ckpt, log=logs.append)
    assert rmeta["training"]["steps"] == 3 and any("resumed" in s and "step 2" in s for s in logs)


@pytest.mark.skipif(not ae.default_model_id(), reason="no shipped model")
def test_shipped_model_reaches_its_psnr_band(image):
    codec = get_codec("autoencoder")
    levels = codec.params["quality"].hi
    lo = codec.decode(codec.encode(image, quality=1))
    hi_data = codec.encode(image, quality=int(levels))
    hi = codec.decode(hi_data)
    assert 22.0 < _psnr(image, lo) < _psnr(image, hi)
    assert _psnr(image, hi) > 28.0
    assert len(hi_data) * 8 / (image.shape[0] * image.shape[1]) < 4.0


@pytest.mark.parametrize("n, rows, cols, h, w, strip, band_bytes", [
    (1, 1, 1, 16, 16, 64, 1 << 19),  # one latent element
    (2, 9, 13, 140, 200, 64, 1 << 19),  # a batch of 2, padded rows and columns
    (1, 5, 7, 71, 99, 2, 1),  # strips of 2 latent columns, bands of 2 rows
    (1, 1, 21, 9, 331, 4, 3000),  # one latent row, odd width, 6 strips
    (1, 17, 3, 270, 41, 64, 50_000),  # tall and narrow
], ids=["1x1", "batch", "tiny-bands", "one-row", "tall"])
def test_streaming_synthesis_gives_the_whole_latents_pixels(n, rows, cols, h, w, strip, band_bytes):
    """Issue 12.4: g_s runs layer by layer over bands of rows and strips of columns, each band from
    exactly the rows it reads; the pixels are those of g_s on the whole latent (float summation
    order aside: measured identical on these and on 1024/2048-px artifacts)."""
    from compressors.autoencoder.codec import synthesize

    g_s = store.get_model(store.default_model_id()).model.g_s
    y = torch.randn(n, g_s[0].in_channels, rows, cols, generator=torch.Generator().manual_seed(rows * cols)) * 3
    with torch.inference_mode():
        whole = g_s(y.contiguous(memory_format=torch.channels_last))[:, :, :h, :w].clamp(0, 1)
        whole = whole.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        streamed = synthesize(g_s, y, h, w, strip=strip, band_bytes=band_bytes)
        gray = synthesize(g_s, y, h, w, out=np.zeros((n, h, w, 1), np.uint8), strip=strip, band_bytes=band_bytes)
    assert streamed.shape == (n, h, w, 3)
    diff = np.abs(whole.astype(int) - streamed)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())
    np.testing.assert_array_equal(gray[..., 0], streamed[..., 0])  # a 1-channel output takes the first channel


def test_the_integer_h_s_in_bands_gives_the_whole_latents_tables_and_means(monkeypatch):
    """Issue 12.4: the decoder runs the integer h_s layer by layer over bands of rows and strips of
    columns, so its int64 activations never exist for the whole image, however wide; integers,
    so exactly the same values."""
    from compressors import exact
    from compressors.autoencoder import entropy

    lm = store.get_model(store.default_model_id())
    tables, rng = lm.tables, np.random.default_rng(5)
    for spread in (4, entropy.Z_TAIL):  # typical symbols, and the extremes (clamped activations)
        z = rng.integers(-spread, spread + 1, (1, lm.model.N, 11, 9), dtype=np.int32)
        whole = tables.h_s(z)  # (1, 2M, 44, 36): the network on all rows at once
        m = whole.shape[1] // 2
        for elements, rows, strip in ((1, 1, 1), (16 * 5 * 256 * 3, 3, 7), (1 << 22, 64, 10), (1 << 22, 64, 64)):
            monkeypatch.setattr(entropy, "H_S_BAND_ELEMENTS", elements)  # 2-row bands .. one band
            monkeypatch.setattr(entropy, "H_S_ROWS", rows)
            monkeypatch.setattr(entropy, "H_S_STRIP", strip)  # 1-column strips .. one strip
            idx, mean_q = tables.y_params(z)
            np.testing.assert_array_equal(idx, exact.table_index(whole[:, :m], tables.thresholds))
            np.testing.assert_array_equal(mean_q, whole[:, m:])
            assert idx.dtype == np.uint8 and mean_q.dtype == np.int32
