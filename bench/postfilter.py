"""The post-filter on the Kodak test set: PSNR/SSIM gain per JPEG quality, ms per image.

Kodak is the test set: the filter never trained or was tuned on it. Each image is coded
with the registered ``jpeg`` codec (exactly the pipeline's), decoded, filtered, and
measured with the pipeline's metrics (:mod:`compressors.metrics`) against the original.
Time is the filter alone, per image: wall ms (the threads torch uses) and CPU ms of the
process, both medians over the images; bf16 autocast where the CPU has bf16 units, as
the pipeline runs it. The BD-rate line compares filtered and plain JPEG on the
same bpp (the filter costs no bits).

    python bench/postfilter.py                                   # shipped `jpeg` filter, Kodak
    python bench/postfilter.py --model /tmp/pf/<id>.safetensors --images /path/to/pngs --qualities 30 50 75

Prints a markdown table; writes ``bench/out/postfilter.csv`` and ``postfilter_summary.csv``.
A benchmark, not a test.
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
sys.path.insert(0, str(ROOT / "bench"))

from rd_kodak import bd_rate, load_images  # noqa: E402

from compressors import get_codec, models  # noqa: E402
from compressors import postfilter as pf  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402
from compressors.metrics import psnr, ssim  # noqa: E402

QUALITIES = (30, 40, 50, 60, 75, 90)


def model_ref(ref: str, kind: str) -> str:
    """A shipped name / id, or a local .safetensors path (its .json beside it): the model id (loaded)."""
    if ref.endswith(".safetensors"):
        path = Path(ref)
        return models.load_model(path.read_bytes(), path.with_suffix(".json").read_bytes(), kind=kind)
    return models.get(ref, kind).model_id


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="jpeg", help="shipped name, id, or a .safetensors path")
    p.add_argument("--codec", default="jpeg")
    p.add_argument("--images", default="kodak", help="kodak (../shared/data/kodak), skimage, or a folder of PNGs")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    mid = model_ref(a.model, "postfilter")
    meta = models.get(mid, "postfilter").metadata
    codec = get_codec(a.codec)
    param = meta.get("postfilter", {}).get("parameter", "quality")
    images = load_images(a.images, a.limit)
    load = os.getloadavg()[0]
    print(f"post-filter {pf.describe(mid)} ({meta['arch']}), {codec.name} on {len(images)} images ({a.images}); "
          f"{cpu_description()}, {torch.get_num_threads()} torch threads; load average {load:.1f} at the start")
    pf.apply(images[0][1][:64, :64], mid)  # warm up (weights, oneDNN kernels)
    rows = []
    for q in a.qualities:
        for name, img in images:
            data = codec.encode(img, **{param: q})
            dec = codec.decode(data)
            t0, c0 = time.perf_counter(), time.process_time()
            out = pf.apply(dec, mid)
            wall, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
            rows.append({"quality": q, "image": name, "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
                         "psnr": psnr(img, dec), "psnr_filtered": psnr(img, out), "ssim": ssim(img, dec),
                         "ssim_filtered": ssim(img, out), "filter_ms": wall, "filter_cpu_ms": cpu})
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "postfilter.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = []
    for q in a.qualities:
        r = [x for x in rows if x["quality"] == q]
        mean = lambda k: float(np.mean([x[k] for x in r]))  # noqa: E731
        summary.append({"quality": q, "bpp": mean("bpp"), "psnr": mean("psnr"), "psnr_filtered": mean("psnr_filtered"),
                        "gain_db": mean("psnr_filtered") - mean("psnr"), "ssim": mean("ssim"),
                        "ssim_filtered": mean("ssim_filtered"),
                        "images_better": sum(x["psnr_filtered"] > x["psnr"] for x in r), "images": len(r),
                        "filter_ms_median": float(np.median([x["filter_ms"] for x in r])),
                        "filter_cpu_ms_median": float(np.median([x["filter_cpu_ms"] for x in r]))})
    with open(out_dir / "postfilter_summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    print(f"\n| {codec.name} {param} | bpp | PSNR dB | filtered | gain dB | SSIM | filtered | images better "
          f"| filter ms (wall) | filter ms (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['quality']} | {s['bpp']:.3f} | {s['psnr']:.2f} | {s['psnr_filtered']:.2f} | **{s['gain_db']:+.2f}** "
              f"| {s['ssim']:.4f} | {s['ssim_filtered']:.4f} | {s['images_better']}/{s['images']} "
              f"| {s['filter_ms_median']:.0f} | {s['filter_cpu_ms_median']:.0f} |")
    band = [s for s in summary if 30 <= s["quality"] <= 75]
    if band:
        gain = np.mean([s["gain_db"] for s in band])
        ssim_ok = all(s["ssim_filtered"] >= s["ssim"] for s in band)
        print(f"\nqualities 30-75: mean gain {gain:+.2f} dB, SSIM not lower at every quality: {ssim_ok}; "
              f"median filter time {np.median([x['filter_ms'] for x in rows]):.0f} ms wall, "
              f"{np.median([x['filter_cpu_ms'] for x in rows]):.0f} ms CPU per image")
    plain = [(s["bpp"], s["psnr"]) for s in summary]
    filtered = [(s["bpp"], s["psnr_filtered"]) for s in summary]
    print(f"BD-rate of filtered vs plain {codec.name} (same bytes, PSNR-RGB): {bd_rate(plain, filtered):+.1f} %")
    print(f"wrote {out_dir / 'postfilter.csv'} and {out_dir / 'postfilter_summary.csv'}")


if __name__ == "__main__":
    main()
