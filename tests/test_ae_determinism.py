"""Every autoencoder artifact decodes to its encoder's latent under any configuration (issue 14).

Encode with one configuration and decode with others -- another thread count, bf16
autocast for the float transforms, another process with single-threaded BLAS, float noise
on the parameter path's input -- and the decoder reads exactly the symbols, table indices
and means the encoder wrote; the pixels differ only by the float synthesis' rounding, within
the tolerances below. A latent that still differs (other tables, an altered payload) is a
clear ``ValueError``, never silently wrong pixels. No GPU is lent to this project, so the
GPU <-> CPU cross-decode is not exercised here.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch

import compressors.autoencoder as ae
from compressors.autoencoder import codec, container, entropy, store
from compressors.autoencoder.model import MeanScaleHyperprior

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pixels of one artifact decoded under two configurations (float32 g_s both times): at most
# one 8-bit level apart; with bf16 autocast on one side: close in PSNR terms.
FLOAT32_MAX_LEVELS = 1
BF16_MIN_PSNR = 40.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _assert_same_latent(a: entropy.Latent, b: entropy.Latent) -> None:
    for name in ("z", "y", "index", "mean_q"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def model_id() -> str:
    """The shipped default model (real value ranges); a tiny random one when none is shipped."""
    mid = ae.default_model_id()
    if mid:
        return mid
    torch.manual_seed(0)
    _, blob, meta = store.serialize(MeanScaleHyperprior(N=16, M=16, qualities=3).eval(), {"lambdas": [1, 2, 3]})
    return ae.load_model(blob, meta)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    from skimage import data

    return [np.ascontiguousarray(data.astronaut()[64:192, 96:288]),  # 128 x 192
            np.ascontiguousarray(data.coffee()[100:180, 200:330])]  # 80 x 130: padded


@pytest.fixture(scope="module")
def top(model_id) -> int:
    return ae.get_model(model_id).qualities


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_other_thread_counts_read_the_encoders_latent(model_id, images, top, threads):
    for quality in (1, top):
        for enc_threads, dec_threads in ((2, 1), (1, 2)):
            threads(enc_threads)
            _, encoded = codec.analyse(images[:1], quality=quality, model=model_id, autocast=codec.encoder_autocast())
            data = ae.encode(images[0], quality=quality, model=model_id)
            ref = ae.decode(data)
            threads(dec_threads)
            _assert_same_latent(codec.decode_latent(data)[1], encoded[0])
            assert np.abs(ae.decode(data).astype(int) - ref).max() <= FLOAT32_MAX_LEVELS


def test_bf16_autocast_on_either_side_reads_the_same_latent(model_id, images, top):
    for image in images:
        f32 = ae.encode_batch([image], quality=top, model=model_id)[0]
        bf16 = ae.encode_batch([image], quality=top, model=model_id, autocast=torch.bfloat16)[0]
        _, lat_bf16 = codec.analyse([image], quality=top, model=model_id, autocast=torch.bfloat16)
        _assert_same_latent(codec.decode_latent(bf16)[1], lat_bf16[0])  # a bf16 encoder's stream parses exactly
        ref = ae.decode(f32)
        low = ae.decode_batch([f32], autocast=torch.bfloat16)[0]  # a bf16 synthesis: the same latent, close pixels
        assert _psnr(ref, low) >= BF16_MIN_PSNR
        assert _psnr(image, ae.decode(bf16)) > _psnr(image, ref) - 1.0  # a bf16 encoder costs little quality


def test_the_parameter_path_sees_integers_only(model_id, images, top):
    """Float noise of a few ulps on the parameter path's input (what another device's h_a
    would hand over) moves the float-evaluated h_s outputs, never the integer ones."""
    lm = ae.get_model(model_id)
    _, lat = codec.analyse(images[:1], quality=top, model=model_id)
    z = lat[0].z[None].astype(np.float32)
    rng = np.random.default_rng(0)
    noisy = z.copy()
    for _ in range(3):  # up to 3 ulps in either direction
        step = np.where(rng.random(z.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
        noisy = np.where(rng.random(z.shape) < 0.7, np.nextafter(noisy, step), noisy)
    assert np.any(noisy != z)
    z_sym = entropy.z_symbols(noisy)
    np.testing.assert_array_equal(z_sym, lat[0].z[None])
    idx, mean_q = lm.tables.y_params(z_sym)
    np.testing.assert_array_equal(idx[0], lat[0].index)
    np.testing.assert_array_equal(mean_q[0], lat[0].mean_q)
    with torch.inference_mode():  # the float path does see the noise
        f_clean = lm.model.h_s(torch.from_numpy(z))
        f_noisy = lm.model.h_s(torch.from_numpy(noisy))
    assert not torch.equal(f_clean, f_noisy)


CHILD = textwrap.dedent("""
    import json, sys, numpy as np, torch
    torch.set_num_threads(1)
    import compressors.autoencoder as ae
    from compressors.autoencoder import codec
    model, paths, image_path = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    out = {"checksums": [], "images": []}
    for p in paths:
        data = open(p, "rb").read()
        out["checksums"].append(codec.decode_latent(data)[1].checksum().hex())
        np.save(p + ".child.npy", ae.decode(data))
    image = np.load(image_path)
    open(image_path + ".imp", "wb").write(ae.encode(image, quality=1, model=model))
    print(json.dumps(out))
""")


def test_another_process_with_single_threaded_blas_decodes_identically(model_id, images, top, tmp_path):
    if model_id not in store.shipped_ids():
        pytest.skip("the child process can only load shipped models")
    paths = []
    for i, image in enumerate(images):
        for quality in (1, top):
            p = tmp_path / f"{i}-{quality}.imp"
            p.write_bytes(ae.encode(image, quality=quality, model=model_id))
            paths.append(p)
    np.save(tmp_path / "image.npy", images[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": PROJECT_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHILD, model_id, *map(str, paths), str(tmp_path / "image.npy")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    for p, checksum in zip(paths, child["checksums"]):
        data = p.read_bytes()
        assert checksum == codec.decode_latent(data)[1].checksum().hex() == container.unpack(data)[0].latent_checksum.hex()
        theirs = np.load(str(p) + ".child.npy")
        assert np.abs(theirs.astype(int) - ae.decode(data)).max() <= FLOAT32_MAX_LEVELS
    # ... and what the single-threaded process encoded decodes here to its latent.
    theirs = (tmp_path / "image.npy.imp").read_bytes()
    _, lat = codec.decode_latent(theirs)
    assert lat.checksum() == container.unpack(theirs)[0].latent_checksum


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_payload_that_decodes_to_another_latent_is_an_error_not_pixels(model_id, images, top):
    data = ae.encode(images[0], quality=top, model=model_id)
    _, payload = container.unpack(data)
    start = len(data) - 4 - len(payload)
    for pos in range(0, len(payload), max(1, len(payload) // 40)):  # one payload byte altered, CRC recomputed
        bad = bytearray(data[:-4])
        bad[start + pos] ^= 0x5A
        with pytest.raises(ValueError, match="latent checksum mismatch|does not decode|left after the latent"):
            ae.decode(_recrc(bytes(bad)))
    bad = bytearray(data[:-4])  # the checksum field itself altered: the latent no longer matches it
    bad[container.HEADER_SIZE - 4 - container.CHECKSUM_SIZE] ^= 1
    with pytest.raises(ValueError, match="latent checksum mismatch"):
        ae.decode(_recrc(bytes(bad)))


def test_a_decoder_with_other_tables_reports_a_checksum_mismatch(model_id, images, top, monkeypatch):
    """What a platform that derived other coding tables would see: an error row, no image."""
    data = ae.encode(images[0], quality=top, model=model_id)
    tables = ae.get_model(model_id).tables
    real = tables.y_params

    def shifted_means(z_sym):  # one unit of 2**-16 in one mean: an invisible float-style drift
        idx, mean_q = real(z_sym)
        mean_q = mean_q.copy()
        mean_q.flat[7] += 1
        return idx, mean_q

    monkeypatch.setattr(tables, "y_params", shifted_means)
    with pytest.raises(ValueError, match="latent checksum mismatch"):
        ae.decode(data)

    def other_scales(z_sym):
        idx, mean_q = real(z_sym)
        return np.minimum(idx + 1, len(tables.scales) - 1).astype(np.int32), mean_q

    monkeypatch.setattr(tables, "y_params", other_scales)
    with pytest.raises(ValueError, match="latent checksum mismatch|does not decode|left after"):
        ae.decode(data)


def _encode_v1(model_id: str, image: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """A version-1 artifact, and the pixels the version-1 decoder gave for it (its steps redone here)."""
    lm = ae.get_model(model_id)
    v1 = codec.encode_version1(image, quality=quality, model=model_id)
    legacy = lm.legacy_tables
    coder = entropy.ans_decoder(container.unpack(v1)[1])
    n, hz, wz = codec._z_shape(lm, container.unpack(v1)[0])
    z = np.stack([coder.decode(legacy.z_models[c], hz * wz) for c in range(n)]).reshape(n, hz, wz) - 48
    idx, means = legacy.y_params(z[None])
    std = legacy.scales[idx[0].ravel()]
    y_sym = coder.decode(legacy.y_family, np.zeros_like(std), std).reshape(idx[0].shape)
    h, w, _ = image.shape
    with torch.inference_mode():
        _, inv_gain = lm.model.gains(torch.tensor([quality - 1]))
        y_hat = torch.from_numpy((y_sym + means[0]).astype(np.float32))[None] * inv_gain
        pix = codec.synthesize(lm.model.g_s, y_hat, h, w)[0]  # the decoder's synthesis (tests/test_autoencoder.py)
    return v1, pix


def test_version_1_artifacts_decode_through_the_version_1_tables(model_id, images):
    """The container's version picks the path: a version-1 stream (float64 h_s, constriction's
    QuantizedGaussian) decodes exactly as the version-1 decoder did."""
    v1, expected = _encode_v1(model_id, images[1], 1)
    assert v1[5] == 1 and container.unpack(v1)[0].version == 1
    np.testing.assert_array_equal(ae.decode(v1), expected)
    with pytest.raises(ValueError, match="no integer latent"):
        codec.decode_latent(v1)


def test_version_2_costs_the_bits_of_version_1(model_id, images, top):
    """The integer h_s and tables follow the float ones closely: the same size within 1 %
    (plus the 8 checksum bytes), nearly all scale indices the same, means within 0.05."""
    lm = ae.get_model(model_id)
    for image in images:
        for quality in (1, top):
            v1, _ = _encode_v1(model_id, image, quality)
            v2 = ae.encode(image, quality=quality, model=model_id)
            assert abs(len(v2) - container.CHECKSUM_SIZE - len(v1)) <= 0.01 * len(v1) + 4
            _, lat = codec.decode_latent(v2)
            idx, means = lm.legacy_tables.y_params(lat.z[None])
            assert np.mean(idx[0] == lat.index) > 0.99
            assert np.abs(means[0] - np.ldexp(lat.mean_q.astype(np.float64), -entropy.MEAN_FRAC_BITS)).max() < 0.05
