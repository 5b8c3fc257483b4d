"""Lossless coding on Kodak: the learned ``lossless`` codec against the standard lossless coders.

One run codes every Kodak image with each coder, side by side, checks that each decodes
to exactly the input, and prints per coder the mean bits per pixel (all three channels:
artifact bits / (H * W)), encode ms and decode ms; writes ``lossless.csv`` into ``--out``.

    python bench/lossless.py --out bench/out                 # every coder
    python bench/lossless.py --coders lossless,webp-lossless --limit 4

Coders: ``png`` and ``webp-lossless`` (the registry's baselines, Pillow), JPEG 2000
lossless (OpenJPEG 5/3 reversible wavelet with the reversible colour transform), JPEG-LS
(CharLS) and JPEG XL lossless at efforts 7 and 9 (libjxl), those three through
imagecodecs (``pip install -e '.[bench]'``), and ``lossless``. Times are wall ms of one
process, and CPU ms of the process (``time.process_time``: on a shared machine the wall
time says more about the neighbours than about the coder); BLAS is limited to one thread
inside the codecs. A benchmark, not a test: it
needs ../shared/data/kodak.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rd_kodak import load_kodak  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402

SHARED = ROOT.parent / "shared"


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        raise SystemExit("JPEG 2000 / JPEG-LS / JPEG XL need imagecodecs: pip install -e '.[bench]'") from None
    return imagecodecs


def coders(names: list[str]) -> dict:
    """name -> (encode(image) -> bytes, decode(bytes) -> image)."""
    from compressors import get_codec

    out = {}
    for name in names:
        if name in ("png", "webp-lossless", "lossless"):
            codec = get_codec(name)
            out[name] = (codec.encode, codec.decode)
        elif name == "jpeg2000-lossless":
            ic = _imagecodecs()
            out[name] = (lambda a, ic=ic: ic.jpeg2k_encode(a, level=0, reversible=True, mct=a.shape[2] == 3),
                         ic.jpeg2k_decode)
        elif name == "jpeg-ls":
            ic = _imagecodecs()
            out[name] = (ic.jpegls_encode, ic.jpegls_decode)
        elif name.startswith("jpegxl-e"):
            ic = _imagecodecs()
            effort = int(name.rsplit("e", 1)[1])
            out[name] = (lambda a, ic=ic, e=effort: ic.jpegxl_encode(a, lossless=True, effort=e), ic.jpegxl_decode)
        else:
            raise SystemExit(f"unknown coder {name}")
    return out


DEFAULT = "png,webp-lossless,jpeg2000-lossless,jpeg-ls,jpegxl-e7,jpegxl-e9,lossless"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kodak", type=Path, default=SHARED / "data" / "kodak")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--coders", default=DEFAULT)
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    a = p.parse_args(argv)
    images = load_kodak(a.kodak, a.limit)
    table = coders([c for c in a.coders.split(",") if c])
    print(f"{len(images)} Kodak images; CPU {cpu_description()}; load average {os.getloadavg()[0]:.1f} at the start")
    rows = []
    for name, (enc, dec) in table.items():
        per = []
        for fname, img in images:
            c0, t0 = time.process_time(), time.perf_counter()
            data = enc(img)
            c1, t1 = time.process_time(), time.perf_counter()
            back = np.asarray(dec(data))
            c2, t2 = time.process_time(), time.perf_counter()
            if back.shape != img.shape:
                back = back.reshape(img.shape)
            if not np.array_equal(back, img):
                raise SystemExit(f"{name} is not lossless on {fname}")
            per.append((len(data) * 8 / (img.shape[0] * img.shape[1]), (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                        (c1 - c0) * 1e3, (c2 - c1) * 1e3))
        m = np.mean(np.array(per), axis=0)
        mx = np.max(np.array(per), axis=0)
        rows.append({"coder": name, "images": len(per), "bpp": round(m[0], 3), "bits_per_value": round(m[0] / 3, 3),
                     "encode_ms": round(m[1], 1), "decode_ms": round(m[2], 1), "max_decode_ms": round(mx[2], 1),
                     "encode_cpu_ms": round(m[3], 1), "decode_cpu_ms": round(m[4], 1),
                     "max_decode_cpu_ms": round(mx[4], 1)})
        print(f"  {name:18s} {m[0]:7.3f} bpp  encode {m[1]:8.1f} ms ({m[3]:.0f} CPU)  decode {m[2]:8.1f} ms "
              f"({m[4]:.0f} CPU, max {mx[4]:.0f})", flush=True)
    print()
    print("| coder | bpp (RGB) | bits/value | encode ms (CPU) | decode ms (CPU) | max decode CPU ms |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["bpp"]):
        print(f"| {r['coder']} | {r['bpp']:.3f} | {r['bits_per_value']:.3f} | {r['encode_ms']:.0f} "
              f"({r['encode_cpu_ms']:.0f}) | {r['decode_ms']:.0f} ({r['decode_cpu_ms']:.0f}) | "
              f"{r['max_decode_cpu_ms']:.0f} |")
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "lossless.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {a.out / 'lossless.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
