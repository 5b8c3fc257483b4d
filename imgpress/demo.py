"""The demo collection: sample photos that ship inside scikit-image, written as files.

It mixes formats and folders on purpose (PNG, JPEG, grayscale, RGBA, a nested folder)
and includes one broken file, so the demo shows an error row next to the good ones.
"""

from __future__ import annotations

import io
import os

from PIL import Image

from tasks.storage import Storage, join, write_bytes

SAMPLES = {
    "photos/astronaut.png": "astronaut.png",
    "photos/chelsea.png": "chelsea.png",
    "photos/coffee.png": "coffee.png",
    "photos/rocket.jpg": "rocket.jpg",
    "photos/motorcycle_left.png": "motorcycle_left.png",
    "gray/camera.png": "camera.png",
    "gray/moon.png": "moon.png",
    "textures/brick.png": "brick.png",
    "textures/grass.png": "grass.png",
    "misc/hubble_deep_field.jpg": "hubble_deep_field.jpg",
    "misc/retina.jpg": "retina.jpg",
    "misc/logo.png": "logo.png",  # RGBA: composited over white
}


def build_demo_collection(url: str, storage: Storage = Storage()) -> str:
    """Write the demo images under ``url`` and return it."""
    import skimage

    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    for rel, name in SAMPLES.items():
        with open(os.path.join(data_dir, name), "rb") as fh:
            write_bytes(join(url, rel), fh.read(), storage)
    # A PNG cut short, as a failed upload leaves it: the report shows it as an error row.
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, format="PNG")
    write_bytes(join(url, "misc/truncated.png"), buf.getvalue()[:60], storage)
    return url
