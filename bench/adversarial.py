"""An adversarially fine-tuned autoencoder beside its base on Kodak: bpp, PSNR, SSIM, a crop side by side.

Both models share the analysis transform, hyperprior and entropy model (only the synthesis
was fine-tuned), so each image's bitstream is the same code under both ids: the bpp is the
same, and the table shows what the other synthesis does to the decoded pixels. Expect
lower PSNR and sharper texture (Blau & Michaeli, "The Perception-Distortion Tradeoff", 2018).
Kodak is the test set: neither model trained on it.

    python bench/adversarial.py --tuned /tmp/adv/<id>.safetensors [--base <id>] --qualities 3 6 --limit 8

Prints a markdown table; writes ``bench/out/adversarial.csv`` and ``adversarial_crop.png``
(source | base | tuned, a 192-px crop of the first image at the first quality). A benchmark,
not a test.
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

from postfilter import model_ref  # noqa: E402
from rd_kodak import load_images  # noqa: E402

from compressors import get_codec, models  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402
from compressors.metrics import psnr, ssim  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tuned", required=True, help="the fine-tuned model: id, or a .safetensors path")
    p.add_argument("--base", default=None, help="its base (default: the one its metadata names)")
    p.add_argument("--images", default="kodak")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--qualities", type=int, nargs="+", default=[3, 6])
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = p.parse_args(argv)
    tuned = model_ref(a.tuned, "autoencoder")
    base = model_ref(a.base or models.get(tuned, "autoencoder").metadata["training"]["finetuned_from"],
                     "autoencoder")
    codec = get_codec("autoencoder")
    images = load_images(a.images, a.limit)
    print(f"base {base} vs adversarially tuned {tuned}; {len(images)} images ({a.images}); {cpu_description()}; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    rows, crop = [], None
    for q in a.qualities:
        for name, img in images:
            t0 = time.process_time()
            data = codec.encode(img, quality=q, model=base)
            out = {"base": codec.decode(data)}
            retagged = codec.encode(img, quality=q, model=tuned)  # the same code; the header names the tuned model
            out["tuned"] = codec.decode(retagged)
            row = {"quality": q, "image": name, "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
                   "bpp_tuned": len(retagged) * 8 / (img.shape[0] * img.shape[1]), "cpu_s": time.process_time() - t0}
            for k, dec in out.items():
                row[f"psnr_{k}"], row[f"ssim_{k}"] = psnr(img, dec), ssim(img, dec)
            rows.append(row)
            print(f"  q{q} {name}: bpp {row['bpp']:.3f}, PSNR {row['psnr_base']:.2f} -> {row['psnr_tuned']:.2f}, "
                  f"SSIM {row['ssim_base']:.4f} -> {row['ssim_tuned']:.4f}", flush=True)
            if crop is None:
                h, w = img.shape[:2]
                y, x = (h - a.crop) // 2, (w - a.crop) // 2
                crop = np.concatenate([im[y:y + a.crop, x:x + a.crop] for im in (img, out["base"], out["tuned"])], axis=1)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "adversarial.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from PIL import Image

    Image.fromarray(crop).save(out_dir / "adversarial_crop.png")
    print("\n| quality | bpp (both) | PSNR base | PSNR tuned | SSIM base | SSIM tuned |")
    print("|---|---|---|---|---|---|")
    for q in a.qualities:
        r = [x for x in rows if x["quality"] == q]
        m = lambda k: float(np.mean([x[k] for x in r]))  # noqa: E731
        print(f"| {q} | {m('bpp'):.3f} | {m('psnr_base'):.2f} | {m('psnr_tuned'):.2f} | {m('ssim_base'):.4f} "
              f"| {m('ssim_tuned'):.4f} |")
    print(f"wrote {out_dir / 'adversarial.csv'} and {out_dir / 'adversarial_crop.png'}")


if __name__ == "__main__":
    main()
