"""Digits: the `digits` codec (28- and 128-value codes) against classical codecs, with classifier agreement.

On the 2,000 held-back MNIST digits (the last 2,000 of the 10,000 test digits in
../shared/data/mnist; the shipped digit models and the shipped classifier trained on the
first 8,000 only). Per codec setting: mean bpp (every byte of the artifact, header
included, over 784 pixels), PSNR (lossless images excluded and counted), SSIM, the share
of digits whose label under the shipped `digits` classifier is the same on the source and
on the decoded image (agreement), and the classifier's accuracy against the true labels
on the decoded images (the source's is the first row).

    python bench/digits.py                      # all 2,000
    python bench/digits.py --limit 300          # quicker

Prints a markdown table, writes ``bench/out/digits.csv`` and ``bench/out/digits.png`` (a
few digits through each codec). A benchmark, not a test.
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

from compressors import CODECS, classifiers, get_codec, models  # noqa: E402
from compressors.classifiers.model import classify  # noqa: E402
from compressors.digits.mnist import TRAIN_COUNT, read_folder  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402
from compressors.imageio import encode_png  # noqa: E402
from compressors.metrics import psnr, ssim  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist"


def settings() -> list[tuple[str, str, dict]]:
    """``(label, codec, params)`` in table order."""
    out = [(f"digits latent={n}", "digits", {"latent": n}) for n in (28, 128)]
    out.append(("png (lossless)", "png", {}) if "png" in CODECS else ("png (lossless, Pillow)", "", {}))
    out += [(f"jpeg q={q}", "jpeg", {"quality": q}) for q in (10, 30, 50, 70, 90)]
    out += [(f"webp q={q}", "webp", {"quality": q}) for q in (10, 50, 90)]
    out += [(f"kmeans K={k}", "kmeans", {"colors": k}) for k in (2, 4, 8)]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist", default=str(MNIST))
    p.add_argument("--limit", type=int, default=0, help="only the first N of the 2,000 held-back digits")
    p.add_argument("--classifier", default="digits", help="shipped name, id, or .safetensors path")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = p.parse_args(argv)
    x, y = read_folder(a.mnist)
    x, y = x[TRAIN_COUNT:], y[TRAIN_COUNT:]
    if a.limit:
        x, y = x[: a.limit], y[: a.limit]
    images = x[:, :, :, None]
    ref = model_ref(a.classifier, "classifier")
    net = models.get(ref, "classifier").module
    source_labels, _ = classify(net, images)
    print(f"{len(images)} held-back digits (MNIST test digits {TRAIN_COUNT}..{TRAIN_COUNT + len(images) - 1}); "
          f"classifier {classifiers.describe(ref)}: accuracy on the sources {np.mean(source_labels == y):.4f}; "
          f"{cpu_description()}; load average {os.getloadavg()[0]:.1f} at the start")
    rows, samples = [], {}
    for label, name, params in settings():
        codec = get_codec(name) if name else None
        sizes, decoded, ms = [], [], []
        for im in images:
            t0 = time.perf_counter()
            if codec is None:
                data, out = encode_png(im, compress_level=9), im
            else:
                data = codec.encode(im, **params)
                out = codec.decode(data)
            ms.append((time.perf_counter() - t0) * 1e3)
            sizes.append(len(data))
            decoded.append(out)
        decoded = np.stack(decoded)
        labels, _ = classify(net, decoded)
        ps = np.array([psnr(a_, b_) for a_, b_ in zip(images, decoded)])
        ss = np.array([ssim(a_, b_) for a_, b_ in zip(images, decoded)])
        finite = np.isfinite(ps)
        rows.append({"setting": label, "bytes": float(np.mean(sizes)), "bpp": float(np.mean(sizes)) * 8 / 784,
                     "psnr": float(ps[finite].mean()) if finite.any() else float("inf"),
                     "lossless": int((~finite).sum()), "ssim": float(ss.mean()),
                     "agreement": float(np.mean(labels == source_labels)), "accuracy": float(np.mean(labels == y)),
                     "ms": float(np.median(ms))})
        samples[label] = decoded[:12, :, :, 0]
        r = rows[-1]
        print(f"  {label}: {r['bytes']:.1f} B, bpp {r['bpp']:.3f}, PSNR {r['psnr']:.2f}, agreement {r['agreement']:.4f}",
              flush=True)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "digits.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("\n| codec | bytes | bpp | PSNR dB | SSIM | agreement | accuracy | encode+decode ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| (source) | | 8 (raw) | | | | {np.mean(source_labels == y):.4f} | |")
    for r in rows:
        psnr_text = "lossless" if r["lossless"] == len(images) else (
            f"{r['psnr']:.2f}" + (f" ({r['lossless']} lossless)" if r["lossless"] else ""))
        print(f"| {r['setting']} | {r['bytes']:.1f} | {r['bpp']:.3f} | {psnr_text} | {r['ssim']:.4f} "
              f"| {r['agreement']:.4f} | {r['accuracy']:.4f} | {r['ms']:.2f} |")
    grid = np.concatenate([np.concatenate(list(images[:12, :, :, 0]), axis=1)]
                          + [np.concatenate(list(samples[k]), axis=1) for k in samples])
    from PIL import Image

    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out_dir / "digits.png")
    print(f"wrote {out_dir / 'digits.csv'} and {out_dir / 'digits.png'} (rows: source, then {', '.join(samples)})")


if __name__ == "__main__":
    main()
