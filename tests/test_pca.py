"""The pca codec: per-channel row PCA, quantised and entropy-coded into a checked container."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from skimage import data as skdata

from compressors import get_codec
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
