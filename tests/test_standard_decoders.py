"""WebP and AVIF artifacts decode through libwebp / libavif straight into the output array
(issue 12.4), to exactly the pixels Pillow's readers gave for the same file.

The reference below is the decoder these codecs had before: Pillow opens the file, loads it
and drops alpha with ``convert("RGB")``; the codec's own rules (gray WebP, one channel) apply
to both.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from compressors import get_codec
from compressors.classical import _is_gray


def pillow_reference(blob: bytes, *, lossless: bool = False) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        arr = np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
    if arr.ndim == 3 and blob[8:12] == b"WEBP" and _is_gray(arr, 0 if lossless else 1):
        arr = arr[:, :, 1]
    return arr[:, :, None] if arr.ndim == 2 else arr


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    photo = np.ascontiguousarray(samples.astronaut()[80:240, 120:330])
    gray = np.ascontiguousarray(samples.camera()[:90, :70, None])
    noise = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(17, 33, 3), (33, 1, 1)]]
    return [photo, gray, photo[:1, :1].copy(), *noise]


def pillow_file(image: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["webp", "webp-lossless", "avif"])
def test_artifacts_decode_to_the_pixels_pillow_gave(name):
    codec = get_codec(name)
    qualities = [{"quality": q} for q in (1, 50, 90, 100)] if "quality" in codec.params else [{}]
    for image in images():
        for params in qualities:
            blob = codec.encode(image, **params)
            decoded = codec.decode(blob)
            assert decoded.flags.c_contiguous and decoded.dtype == np.uint8
            np.testing.assert_array_equal(decoded, pillow_reference(blob, lossless=name == "webp-lossless"),
                                          err_msg=f"{name} {image.shape} {params}")


@pytest.mark.parametrize("fmt, options", [("WEBP", {"quality": 60}), ("WEBP", {"lossless": True}),
                                          ("AVIF", {"quality": 60})])
def test_files_with_alpha_decode_to_pillows_rgb(fmt, options):
    """Not what imgpress writes, but a file a user may hand to decompress: alpha dropped, as before."""
    rgba = np.random.default_rng(4).integers(0, 256, (21, 34, 4), dtype=np.uint8)
    blob = pillow_file(rgba, fmt, **options)
    decoded = get_codec("webp" if fmt == "WEBP" else "avif").decode(blob)
    assert decoded.shape == (21, 34, 3)
    np.testing.assert_array_equal(decoded, pillow_reference(blob))


def test_an_animated_webp_is_refused():
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="animation"):
        get_codec("webp").decode(buf.getvalue())


def test_a_high_bit_depth_avif_still_decodes_through_pillow():
    import imagecodecs

    image = np.random.default_rng(5).integers(0, 1024, (12, 20, 3), dtype=np.uint16)
    blob = bytes(imagecodecs.avif_encode(image, level=80, bitspersample=10))
    np.testing.assert_array_equal(get_codec("avif").decode(blob), pillow_reference(blob))


def test_a_webp_whose_canvas_disagrees_with_its_frame_is_refused():
    """The output array is allocated from the checked header; a frame of another size is refused."""
    rgba = np.random.default_rng(4).integers(0, 256, (21, 34, 4), dtype=np.uint8)
    blob = bytearray(pillow_file(rgba, "WEBP", quality=60))
    assert blob[12:16] == b"VP8X"
    blob[24:27] = (99).to_bytes(3, "little")  # canvas width - 1: 100 wide, the frame stays 34
    with pytest.raises(ValueError, match="corrupt WebP"):
        get_codec("webp").decode(bytes(blob))
