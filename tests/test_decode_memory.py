"""Decoding one artifact holds at most 8 bytes per pixel beyond the decoded image (issue 12.4).

Measured by ``bench/decode_memory.py`` (a fresh process per codec; peak resident memory
sampled while one 1024 x 1024 artifact decodes, minus the image's own bytes). Decoders
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
# synthesis and integer h_s stream over bands of rows (5.8-6.7 B/px at 1024 x 1024; 313 before).
OVER: dict[str, float] = {}


@pytest.fixture(scope="module")
def measured():
    out = subprocess.run([sys.executable, str(BENCH), "--size", "1024"], capture_output=True, text=True,
                         timeout=900, check=True)
    return {r["codec"]: r for r in map(json.loads, (line for line in out.stdout.splitlines() if line.startswith("{")))}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_decoding_holds_at_most_8_bytes_per_pixel_beyond_the_image(codec, measured, request):
    if codec in OVER:
        request.applymarker(pytest.mark.xfail(reason=f"measured {OVER[codec]} B/px", strict=False))
    if CODECS[codec].shape is not None:
        pytest.skip(f"{codec} codes {CODECS[codec].shape} images only: no 1024x1024 artifact exists")
    row = measured[codec]
    assert row["bytes_per_pixel_beyond_image"] <= LIMIT, row
