"""Golden bitstreams: stored artifacts of every shipped model decode to their stored pixels.

A torch, numpy or constriction upgrade must not silently break artifacts users have
stored. For each shipped autoencoder model, ``tests/golden/autoencoder/`` holds a small
crop of scikit-image's astronaut coded at the lowest and the highest quality
(``<model id>-q<quality>-v<container version>.imp``, a few hundred bytes to ~1 KB) and the
PNG its decoder produced. The test decodes each one and compares: exact on the machine
that wrote them; elsewhere the float synthesis may round differently, so up to
``MAX_LEVELS`` 8-bit level in at most ``MAX_DIFFERING`` of the samples. (The latent itself
is exact: a version-2 artifact whose latent checksum fails is an error, not a difference.)
The ``-v1`` files were written by the first container version (commit 805eadc) and are
never regenerated: they prove the old format still decodes.

Add the golden files of a newly shipped model (or rewrite all version-2 files after an
intentional format change)::

    IMGPRESS_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py      # models that have none
    IMGPRESS_UPDATE_GOLDEN=all python -m pytest -q tests/test_golden.py    # every shipped model
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import compressors.autoencoder as ae
from compressors.autoencoder import container, store

GOLDEN = Path(__file__).parent / "golden" / "autoencoder"
UPDATE = os.environ.get("IMGPRESS_UPDATE_GOLDEN", "").strip().lower()
MAX_LEVELS = 1
MAX_DIFFERING = 0.01
NAME = re.compile(r"^([0-9a-f]{16})-q(\d+)-v(\d+)\.imp$")


def golden_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[96:160, 160:256])  # 64 x 96: padded to 64 x 128


def golden_qualities(model_id: str) -> tuple[int, ...]:
    return tuple(sorted({1, ae.get_model(model_id).qualities}))


def golden_paths(model_id: str, version: int = container.VERSION) -> list[Path]:
    return [GOLDEN / f"{model_id}-q{q}-v{version}.imp" for q in golden_qualities(model_id)]


def write_golden(model_id: str) -> list[Path]:
    """Encode the golden crop with ``model_id`` at its golden qualities; store artifact and pixels."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    image = golden_image()
    for path in golden_paths(model_id):
        quality = int(NAME.match(path.name).group(2))
        data = ae.encode(image, quality=quality, model=model_id)
        path.write_bytes(data)
        Image.fromarray(ae.decode(data)).save(path.with_suffix(".png"), optimize=True)
    return golden_paths(model_id)


@pytest.mark.parametrize("model_id", store.shipped_ids())
def test_every_shipped_model_has_golden_bitstreams(model_id):
    missing = [p for p in golden_paths(model_id) if not p.exists() or not p.with_suffix(".png").exists()]
    if UPDATE == "all" or (UPDATE and missing):
        write_golden(model_id)
        missing = []
    assert not missing, (f"shipped model {model_id} has no golden bitstreams ({', '.join(p.name for p in missing)}): "
                         "run IMGPRESS_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py and commit "
                         "tests/golden/autoencoder/")


def _golden_files() -> list[Path]:
    return sorted(GOLDEN.glob("*.imp"))


@pytest.mark.parametrize("path", _golden_files(), ids=lambda p: p.stem)
def test_golden_bitstream_decodes_to_its_golden_pixels(path):
    m = NAME.match(path.name)
    assert m, f"unexpected golden file name {path.name}"
    model_id, quality, version = m.group(1), int(m.group(2)), int(m.group(3))
    assert model_id in store.shipped_ids(), f"golden file {path.name} names model {model_id}, which is not shipped"
    data = path.read_bytes()
    header, _ = container.unpack(data)
    assert (header.model_id, header.quality, header.version) == (model_id, quality, version)
    expected = np.asarray(Image.open(path.with_suffix(".png")))
    got = ae.decode(data)  # a version-2 latent that does not match its checksum raises here
    got = got[..., 0] if expected.ndim == 2 else got
    assert got.shape == expected.shape
    diff = np.abs(got.astype(np.int16) - expected)
    assert diff.max() <= MAX_LEVELS, f"{path.name}: a sample is {diff.max()} levels off its golden value"
    assert np.mean(diff > 0) <= MAX_DIFFERING, f"{path.name}: {np.mean(diff > 0):.1%} of the samples changed"
