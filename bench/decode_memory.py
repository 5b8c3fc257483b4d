"""Peak memory of decoding one artifact, per codec, beyond the decoded image itself.

For each codec: encode a W x H image, then in a fresh process decode a small artifact
(libraries warmed up), note the peak RSS, decode the big one, and report
``(peak growth - image bytes) / pixels`` in bytes per pixel. The target (issue 12.4) is
at most 8 bytes per claimed pixel beyond the image. ``pca-worst`` is the crafted pca artifact
its decoder holds the most for (32-bit integers, every component it accepts).

    python bench/decode_memory.py --size 2048 [--width 16384] [--codecs jpeg webp ... pca-worst]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def artifacts(codec: str, size: int, folder: Path, width: int | None = None) -> tuple[Path, Path]:
    """A ``size`` x ``width`` (default ``size``) artifact and a 64 x 64 one (to warm the
    libraries up), as files."""
    import numpy as np

    from compressors import get_codec

    c = get_codec(codec)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:width or size]
    image = np.dstack([(xx // 3) % 256, (yy // 5) % 256, ((xx + yy) // 7) % 256]).astype(np.int16)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    params = {"quality": min(75, c.params["quality"].hi)} if "quality" in c.params else {}
    big, small = folder / f"{codec}-big", folder / f"{codec}-small"
    big.write_bytes(c.encode(image, **params))
    small.write_bytes(c.encode(np.ascontiguousarray(image[:64, :64]), **params))
    return big, small


def pca_worst_case(height: int, width: int, folder: Path) -> tuple[Path, Path]:
    """The pca artifact that makes its decoder hold the most: 3 channels, 32-bit integers and as
    many components as the decoder accepts (what only a crafted file claims; its integers are
    zeros, which LZMA shrinks to almost nothing), and a 64 x 64 one of the same kind."""
    from compressors import pca

    def artifact(h: int, w: int) -> bytes:
        k = pca.max_components(h, w, 4)
        return pca.pack(h, w, [(k, 1.0, 1.0, 4)] * 3, bytes(3 * (w + 4 * k * (w + h))))

    big, small = folder / "pca-worst-big", folder / "pca-worst-small"
    big.write_bytes(artifact(height, width))
    small.write_bytes(artifact(64, 64))
    return big, small


def measure(codec: str, big: Path, small: Path) -> dict:
    """Runs in a fresh process: the peak RSS growth of decoding ``big`` after ``small``."""
    from compressors import get_codec
    from compressors.fuzzing import PeakRSS

    c = get_codec(codec.removesuffix("-worst"))
    c.decode(small.read_bytes())
    data = big.read_bytes()
    with PeakRSS() as rss:
        out = c.decode(data)
    base, peak = rss.base, rss.peak
    pixels = out.shape[0] * out.shape[1]
    return {"codec": codec, "pixels": pixels, "artifact_bytes": len(data),
            "peak_growth_mb": round((peak - base) / 2**20, 1), "image_mb": round(out.nbytes / 2**20, 1),
            "bytes_per_pixel_beyond_image": round((peak - base - out.nbytes) / pixels, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="height (and width unless --width)")
    ap.add_argument("--width", type=int, default=None, help="a wide (or tall) image: its width")
    ap.add_argument("--codecs", nargs="*")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one[0], Path(a.one[1]), Path(a.one[2]))))
        return 0
    import tempfile

    from compressors import CODECS

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="imgpress-decode-memory-"))
    for codec in a.codecs or [*sorted(CODECS), "pca-worst"]:
        try:
            big, small = (pca_worst_case(a.size, a.width or a.size, folder) if codec == "pca-worst"
                          else artifacts(codec, a.size, folder, a.width))
        except ValueError as exc:  # a codec of one fixed shape (digits: 28x28 gray) takes no big image
            print(f"{codec}: skipped: {exc}")
            continue
        out = subprocess.run([sys.executable, __file__, "--one", codec, str(big), str(small)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{codec}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
