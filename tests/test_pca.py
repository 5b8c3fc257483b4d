"""The pca codec: per-channel row PCA, quantised and entropy-coded into a checked container."""

from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np
import pytest
from skimage import data as skdata

from compressors import get_codec, pca
from compressors.metrics import psnr

PCA = get_codec("pca")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[100:228, 150:278])


def _recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_more_variance_keeps_more_components_costs_more_bytes_and_gains_psnr(astronaut):
    low, high = PCA.compress(astronaut, variance=0.7), PCA.compress(astronaut, variance=0.99)
    assert all(a < b for a, b in zip(low.decision["components"], high.decision["components"]))
    assert len(low.data) < len(high.data)
    assert psnr(astronaut, PCA.decode(low.data)) + 3 < psnr(astronaut, PCA.decode(high.data))


def test_a_fixed_component_count_is_kept_in_every_channel(astronaut):
    encoded = PCA.compress(astronaut, components=7)
    assert encoded.decision == {"components": [7, 7, 7]}
    assert PCA.decode(encoded.data).shape == astronaut.shape


def test_all_components_reconstruct_nearly_exactly(astronaut):
    """With every component the only error left is the quantisation's (steps floor at a quarter level)."""
    encoded = PCA.compress(astronaut, components=128)
    assert psnr(astronaut, PCA.decode(encoded.data)) > 45


def test_gray_stays_gray():
    gray = np.ascontiguousarray(skdata.camera()[:64, :96, None])
    assert PCA.decode(PCA.encode(gray)).shape == gray.shape


@pytest.mark.parametrize("params, message", [({"variance": 0.3}, "variance"), ({"variance": 1.0}, "variance"),
                                             ({"components": 0}, "components")])
def test_parameters_are_checked_by_name(astronaut, params, message):
    with pytest.raises(ValueError, match=message):
        PCA.encode(astronaut, **params)


def test_the_container_is_validated_before_anything_is_allocated(astronaut):
    data = PCA.encode(astronaut)
    assert data[:4] == b"IMPC"
    for offset, fmt, value, message in [(14, "<I", 1_000_000, "claims"), (18, "<I", 0, "invalid shape"),
                                        (23, "<H", 60_000, "components"), (5, "<B", 9, "version")]:
        bad = bytearray(data)
        struct.pack_into(fmt, bad, offset, value)
        with pytest.raises(ValueError, match=message):
            PCA.decode(_recrc(bad))
    bad = bytearray(data)
    struct.pack_into("<I", bad, 18, 129)  # a width the payload does not hold
    with pytest.raises(ValueError, match="payload"):
        PCA.decode(_recrc(bad))
    with pytest.raises(ValueError, match="CRC32"):
        PCA.decode(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="not a pca artifact"):
        PCA.decode(get_codec("jpeg").encode(astronaut))


def _fields(data: bytes):
    """(h, w, channel table, raw payload) of an artifact, read the plain way: everything at once."""
    h, w, c = struct.unpack_from("<IIB", data, 14)
    pos, chans = 23, []
    for _ in range(c):
        chans.append(list(struct.unpack_from("<HffB", data, pos)))
        pos += 11
    (n,) = struct.unpack_from("<I", data, pos)
    raw = lzma.decompress(data[pos + 4 : pos + 4 + n], format=lzma.FORMAT_RAW, filters=pca._LZMA_FILTERS)
    return h, w, chans, raw


def _with_32_bit_integers(data: bytes) -> bytes:
    """The same artifact with every integer stored 32 bits wide (what large scores make the encoder do)."""
    h, w, chans, raw = _fields(data)
    at, parts = 0, []
    for ch in chans:
        k, width = ch[0], ch[3]
        ints = np.frombuffer(raw, f"<i{width}", k * (w + h), at + w)
        parts += [raw[at : at + w], ints.astype("<i4").tobytes()]
        at += w + width * k * (w + h)
        ch[3] = 4
    body = lzma.compress(b"".join(parts), format=lzma.FORMAT_RAW, filters=pca._LZMA_FILTERS)
    head = data[:23] + b"".join(struct.pack("<HffB", *ch) for ch in chans) + struct.pack("<I", len(body))
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def _reference_decode(data: bytes) -> np.ndarray:
    """The decoder as first written: the whole payload and every channel's floats held at once."""
    h, w, chans, raw = _fields(data)
    out, at = np.empty((h, w, len(chans)), np.uint8), 0
    for ch, (k, s_step, v_step, width) in enumerate(chans):
        mean = np.frombuffer(raw, np.uint8, w, at).astype(np.float32)
        comp = np.frombuffer(raw, f"<i{width}", k * w, at + w).reshape(k, w) * np.float32(v_step)
        scores = np.frombuffer(raw, f"<i{width}", k * h, at + w + width * k * w).reshape(k, h).T
        scores = scores * np.float32(s_step)
        at += w + width * k * (w + h)
        for r0 in range(0, h, 64):
            band = np.rint(scores[r0 : r0 + 64] @ comp + mean)
            out[r0 : r0 + 64, :, ch] = np.clip(band, 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("params", [{"variance": 0.6}, {"variance": 0.999}, {"components": 1}])
def test_the_streaming_decoder_gives_the_pixels_of_the_plain_one(astronaut, params):
    """Issue 12.4 made the decoder read the payload a field at a time (never whole, floats a band at a
    time); the pixels are those of the plain decoder, for 16- and 32-bit integers, gray and odd sizes."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (3, 150, 3), np.uint8)
    for image in (astronaut, np.ascontiguousarray(astronaut[:70, :101, :1]), noise):
        data = PCA.encode(image, **params)
        h, w, chans, _ = _fields(data)
        wide = _with_32_bit_integers(data)
        np.testing.assert_array_equal(PCA.decode(data), _reference_decode(data))
        if max(ch[0] for ch in chans) <= pca.max_components(h, w, 4):
            np.testing.assert_array_equal(PCA.decode(wide), _reference_decode(wide))
        else:  # more 32-bit integers than the memory bound allows: refused (see below)
            with pytest.raises(ValueError, match="components of width 4"):
                PCA.decode(wide)


def test_32_bit_integers_keep_at_most_four_bytes_per_pixel(monkeypatch):
    """Issue 12.4: a channel's integers stay within 4 bytes per pixel. 16-bit ones always do; with
    32-bit ones (scores beyond +-32,767 steps) the encoder keeps at most max_components(h, w, 4)
    components, and an artifact claiming more, which only a crafted file can, is refused before
    anything is allocated."""
    assert pca.max_components(40, 40, 4) == 20 and pca.max_components(40, 40, 2) == 40
    for h, w in [(40, 40), (256, 8192), (1024, 1024), (7, 3)]:
        for width in (2, 4):
            k = pca.max_components(h, w, width)
            assert width * k * (h + w) <= 4 * h * w and (width == 4 or k == min(h, w))
    noise = np.random.default_rng(3).integers(0, 256, (40, 40, 1), np.uint8)
    crafted = _with_32_bit_integers(PCA.encode(noise, components=40))
    with pytest.raises(ValueError, match="claims 40 components of width 4"):
        PCA.decode(crafted)
    quantise = pca._quantise
    monkeypatch.setattr(pca, "_quantise", lambda values, step: (quantise(values, step)[0], 4))
    encoded = PCA.compress(noise, components=40)
    assert encoded.decision == {"components": [20]}
    assert _fields(encoded.data)[2][0][3] == 4
    assert psnr(noise, PCA.decode(encoded.data)) > 10
