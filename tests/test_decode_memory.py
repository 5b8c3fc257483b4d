"""Decoding one artifact holds at most 8 bytes per pixel beyond the decoded image (issue 12.4).

Measured by ``bench/decode_memory.py`` (a fresh process per codec; peak resident memory
sampled while one 1024 x 1024 artifact, and one as wide as 256 x 8192, decodes, minus the
image's own bytes). Decoders
check the size a header claims before allocating (tests/test_fuzz.py), so together an
untrusted artifact can make a worker hold at most ``claimed pixels x (C + 8)`` bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compressors import CODECS

BENCH = Path(__file__).parents[1] / "bench" / "decode_memory.py"
LIMIT = 8.0  # bytes per pixel beyond the image
# Codecs measured over the limit, not fixed yet (README, Reliability): none since the autoencoder's
# synthesis and integer h_s stream over bands of rows and strips of columns (5.0-6.7 B/px at
# 1024 x 1024, 6.2 at 256 x 8192, 7.3 at 128 x 8192; 313 before) and pca keeps its components
# as integers (3.6 at 256 x 8192; 8.9 at 128 x 8192 before).
OVER: dict[str, float] = {}


SHAPES = {"1024x1024": ("1024", "1024"), "256x8192": ("256", "8192")}  # (height, width): square and wide


@pytest.fixture(scope="module", params=sorted(SHAPES))
def measured(request):
    height, width = SHAPES[request.param]
    out = subprocess.run([sys.executable, str(BENCH), "--size", height, "--width", width], capture_output=True,
                         text=True, timeout=900, check=True)
    return {r["codec"]: r for r in map(json.loads, (line for line in out.stdout.splitlines() if line.startswith("{")))}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_decoding_holds_at_most_8_bytes_per_pixel_beyond_the_image(codec, measured, request):
    if codec in OVER:
        request.applymarker(pytest.mark.xfail(reason=f"measured {OVER[codec]} B/px", strict=False))
    if CODECS[codec].shape is not None:
        pytest.skip(f"{codec} codes {CODECS[codec].shape} images only: no large artifact exists")
    row = measured[codec]
    assert row["bytes_per_pixel_beyond_image"] <= LIMIT, row


def test_the_crafted_pca_artifact_its_decoder_holds_most_for_stays_within_the_bound(measured):
    """32-bit integers and every component the decoder accepts (pca.max_components): only a crafted
    file claims that, and it is what makes an untrusted pca artifact cost the most."""
    row = measured["pca-worst"]
    assert row["bytes_per_pixel_beyond_image"] <= LIMIT, row
