"""Rate-distortion on Kodak: the learned autoencoder against Pillow's classical codecs.

One run measures, per codec and quality, the mean over the 24 Kodak images of bpp (from
the real artifact bytes), PSNR-RGB, SSIM, encode ms and decode ms; adds CompressAI's
published points (8-bit decoded, MSE-trained) beside them; computes BD-rate
(Bjontegaard, PSNR, pchip on log-rate) of every curve against Pillow JPEG; prints a
table; writes ``rd_points.csv``, ``bd_rate.csv`` and ``rd_kodak.png`` into ``--out``.

    python bench/rd_kodak.py --out bench/out
    python bench/rd_kodak.py --images skimage --out bench/out/heldout   # photos never trained on

A benchmark, not a test: it needs ../shared/data/kodak and takes minutes. ``--images
skimage`` measures the same table on the colour photographs that ship with scikit-image
(astronaut, coffee, chelsea, rocket, hubble_deep_field, immunohistochemistry): photos no
model of this project was trained or tuned on, a second check beside Kodak.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressors.metrics import psnr, ssim  # noqa: E402
from compressors.registry import get_codec  # noqa: E402

SHARED = ROOT.parent / "shared"
PUBLISHED = {  # label -> codec column in kodak_rd_published.csv (8-bit decoded: what a uint8 codec gives)
    "bmshj2018-factorized (published)": "bmshj2018-factorized_mse_ans_cuda[8bit-decoded]",
    "bmshj2018-hyperprior (published)": "bmshj2018-hyperprior_mse_ans_cuda[8bit-decoded]",
    "mbt2018-mean (published)": "mbt2018-mean_mse_ans_cuda[8bit-decoded]",
    "jpeg2000 (published)": "jpeg2000",
}
CLASSICAL = ("jpeg", "webp", "avif", "jpeg2000", "jxl")


SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def load_images(which: str, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    """``kodak`` (../shared/data/kodak), ``skimage`` (held-out photos) or a folder of PNGs."""
    if which == "skimage":
        import skimage.data

        return [(n, getattr(skimage.data, n)()) for n in SKIMAGE_PHOTOS][: limit or None]
    return load_kodak(SHARED / "data" / "kodak" if which == "kodak" else Path(which), limit)


def load_kodak(folder: Path, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    files = sorted(folder.glob("*.png"))[: limit or None]
    if not files:
        raise SystemExit(f"no Kodak PNGs in {folder}")
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append((f.name, np.asarray(im.convert("RGB"), dtype=np.uint8)))
    return out


def measure(codec_name: str, params: dict, images) -> dict:
    """Mean bpp / PSNR / SSIM / ms over ``images`` for one codec setting."""
    codec = get_codec(codec_name)
    # A candidate autoencoder model may have more levels than the registry's bound (the
    # shipped models'): its own encode checks the level against the model instead.
    encode = codec.encode_fn if codec_name == "autoencoder" else codec.encode
    rows = []
    for _, img in images:
        t0 = time.perf_counter()
        data = encode(img, **params)
        t1 = time.perf_counter()
        rec = codec.decode(data)
        t2 = time.perf_counter()
        rows.append((len(data) * 8 / (img.shape[0] * img.shape[1]), psnr(img, rec), ssim(img, rec),
                     (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    m = np.mean(np.array(rows), axis=0)
    return {"bpp": m[0], "psnr": m[1], "ssim": m[2], "encode_ms": m[3], "decode_ms": m[4]}


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """Bjontegaard delta rate (%) of ``test`` vs ``anchor``, points ``(bpp, psnr)``.

    log-rate as a pchip function of PSNR, integrated over the overlapping PSNR interval
    (the piecewise-cubic variant used by CompressAI and the JVET tools). Negative = saves bits.
    """
    from scipy.interpolate import PchipInterpolator

    def curve(points):
        pts = sorted(points, key=lambda p: p[1])
        keep = [pts[0]]
        for r, d in pts[1:]:  # pchip needs strictly increasing PSNR
            if d > keep[-1][1] + 1e-9:
                keep.append((r, d))
        d = np.array([p[1] for p in keep])
        if len(d) < 2:
            return None, 0.0, 0.0
        return PchipInterpolator(d, np.log(np.array([p[0] for p in keep]))), d.min(), d.max()

    if len(anchor) < 2 or len(test) < 2:
        return float("nan")
    fa, lo_a, hi_a = curve(anchor)
    ft, lo_t, hi_t = curve(test)
    if fa is None or ft is None:
        return float("nan")
    lo, hi = max(lo_a, lo_t), min(hi_a, hi_t)
    if hi <= lo:
        return float("nan")
    diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float((np.exp(diff) - 1) * 100)


def published_points(csv_path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {label: [] for label in PUBLISHED}
    wanted = {v: k for k, v in PUBLISHED.items()}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            label = wanted.get(row["codec"])
            if label:
                out[label].append({"quality": int(row["quality_index"]), "bpp": float(row["bpp"]),
                                   "psnr": float(row["psnr_rgb"]), "ssim": float("nan"),
                                   "ms_ssim": float(row["ms_ssim"]), "encode_ms": float("nan"),
                                   "decode_ms": float("nan")})
    return {k: v for k, v in out.items() if v}


def previous_points(csv_path: Path) -> dict[str, list[dict]]:
    """Measured curves of an earlier run's rd_points.csv."""
    out: dict[str, list[dict]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            if row["source"] != "measured":
                continue
            q = float(row["quality"])
            out.setdefault(row["codec"], []).append({
                "quality": int(q) if q.is_integer() else q, "bpp": float(row["bpp"]), "psnr": float(row["psnr_rgb"]),
                "ssim": float(row["ssim"] or "nan"), "encode_ms": float(row["encode_ms"] or "nan"),
                "decode_ms": float(row["decode_ms"] or "nan")})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default="kodak", help="kodak, skimage (held-out photos) or a folder of PNGs")
    p.add_argument("--anchors", type=Path, default=SHARED / "anchors" / "kodak_rd_published.csv")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--qualities", default="5,10,20,30,40,50,60,70,80,90,95",
                   help="quality sweep for the classical codecs")
    p.add_argument("--codecs", default=",".join(CLASSICAL), help="classical codecs to measure ('' = none)")
    p.add_argument("--model", default="",
                   help="autoencoder model ids or .safetensors paths, comma-separated (default: the shipped one)")
    p.add_argument("--limit", type=int, default=0, help="first N images only (quick checks)")
    p.add_argument("--pca", default="0.5,0.7,0.8,0.9,0.95,0.98,0.99,0.995,0.999",
                   help="variance fractions of the pca codec's curve ('' = none)")
    p.add_argument("--skip-autoencoder", action="store_true", help="do not measure the autoencoder")
    p.add_argument("--previous", type=Path, default=None,
                   help="an earlier rd_points.csv: its measured curves stand in for every codec not measured now")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    a = p.parse_args(argv)

    import torch

    import compressors.autoencoder as ae
    from compressors.hardware import cpu_description

    if a.threads:
        torch.set_num_threads(a.threads)
    model_ids = []
    for ref in [] if a.skip_autoencoder else [m for m in a.model.split(",") if m] or [ae.default_model_id()]:
        if ref.endswith(".safetensors"):
            w = Path(ref)
            ref = ae.load_model(w.read_bytes(), w.with_suffix(".json").read_bytes())
        if ref:
            model_ids.append(ref)
    images = load_images(a.images, a.limit)
    title = "Kodak" if a.images == "kodak" else "scikit-image photos" if a.images == "skimage" else a.images
    print(f"{len(images)} images ({title}); autoencoder models {', '.join(model_ids) or '(none)'}; "
          f"CPU {cpu_description()}, torch threads {torch.get_num_threads()}")

    curves: dict[str, list[dict]] = {}
    for model in model_ids:
        levels = ae.get_model(model).qualities
        label = f"autoencoder {model}"
        curves[label] = []
        for q in range(1, levels + 1):
            r = measure("autoencoder", {"quality": q, "model": model}, images)
            curves[label].append({"quality": q, **r})
            print(f"  autoencoder {model} q={q}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB "
                  f"enc {r['encode_ms']:.0f} ms dec {r['decode_ms']:.0f} ms", flush=True)
    for name in [c for c in a.codecs.split(",") if c]:
        curves[name] = []
        for q in [int(v) for v in a.qualities.split(",")]:
            curves[name].append({"quality": q, **measure(name, {"quality": q}, images)})
        print(f"  {name}: done", flush=True)
    if a.pca:
        curves["pca"] = []
        for v in [float(x) for x in a.pca.split(",")]:
            r = measure("pca", {"variance": v}, images)
            curves["pca"].append({"quality": v, **r})
            print(f"  pca variance={v}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB", flush=True)
    if a.previous:
        for name, pts in previous_points(a.previous).items():
            curves.setdefault(name, pts)
    kodak = a.images == "kodak" or Path(a.images).name == "kodak"
    published = published_points(a.anchors) if kodak and a.anchors.exists() and not a.limit else {}

    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "rd_points.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["codec", "source", "quality", "bpp", "psnr_rgb", "ssim", "ms_ssim", "encode_ms", "decode_ms"])
        for name, pts in curves.items():
            for r in pts:
                w.writerow([name, "measured", r["quality"], f"{r['bpp']:.5f}", f"{r['psnr']:.4f}", f"{r['ssim']:.5f}",
                            "", f"{r['encode_ms']:.1f}", f"{r['decode_ms']:.1f}"])
        for name, pts in published.items():
            for r in pts:
                w.writerow([name, "published", r["quality"], f"{r['bpp']:.5f}", f"{r['psnr']:.4f}", "",
                            f"{r['ms_ssim']:.5f}", "", ""])

    anchor = [(r["bpp"], r["psnr"]) for r in curves.get("jpeg", [])]
    summary = []
    for name, pts in {**curves, **published}.items():
        bd = bd_rate(anchor, [(r["bpp"], r["psnr"]) for r in pts]) if anchor else float("nan")
        enc = np.nanmean([r["encode_ms"] for r in pts]) if name in curves else float("nan")
        dec = np.nanmean([r["decode_ms"] for r in pts]) if name in curves else float("nan")
        summary.append((name, "measured" if name in curves else "published", bd,
                        min(r["bpp"] for r in pts), max(r["bpp"] for r in pts),
                        min(r["psnr"] for r in pts), max(r["psnr"] for r in pts), enc, dec))
    summary.sort(key=lambda s: (np.isnan(s[2]), s[2]))
    with open(a.out / "bd_rate.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["codec", "source", "bd_rate_vs_jpeg_pct", "bpp_min", "bpp_max", "psnr_min", "psnr_max",
                    "encode_ms_mean", "decode_ms_mean"])
        for s in summary:
            w.writerow([s[0], s[1], f"{s[2]:.2f}", *(f"{v:.3f}" for v in s[3:7]), f"{s[7]:.1f}", f"{s[8]:.1f}"])

    print("\nper-point means over the Kodak images (measured):")
    print(f"{'codec':<30}{'q':>4}{'bpp':>8}{'PSNR':>8}{'SSIM':>8}{'enc ms':>9}{'dec ms':>9}")
    for name, pts in curves.items():
        for r in pts:
            print(f"{name:<30}{r['quality']:>4}{r['bpp']:>8.3f}{r['psnr']:>8.2f}{r['ssim']:>8.4f}"
                  f"{r['encode_ms']:>9.1f}{r['decode_ms']:>9.1f}")
    print("\nBD-rate vs Pillow JPEG 4:2:0 (PSNR-RGB, pchip on log-rate; negative = fewer bits):")
    print(f"{'codec':<36}{'source':>10}{'BD-rate':>9}{'bpp range':>15}{'PSNR range':>15}{'enc ms':>8}{'dec ms':>8}")
    for s in summary:
        print(f"{s[0]:<36}{s[1]:>10}{s[2]:>8.1f}%{s[3]:>7.2f}-{s[4]:<6.2f}{s[5]:>7.1f}-{s[6]:<6.1f}"
              f"{s[7]:>8.0f}{s[8]:>8.0f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    for name, pts in curves.items():
        ax.plot([r["bpp"] for r in pts], [r["psnr"] for r in pts], "o-", lw=2 if "auto" in name else 1.2,
                ms=4, label=name)
    for name, pts in published.items():
        ax.plot([r["bpp"] for r in pts], [r["psnr"] for r in pts], "--", lw=1, label=name)
    ax.set_xlim(0, 4.0 if "pca" in curves else 2.0)
    ax.set_ylim(22, 42)
    ax.set_xlabel("bits per pixel (real bytes)")
    ax.set_ylabel("PSNR-RGB (dB)")
    ax.set_title(f"{title} ({len(images)} images): rate-distortion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out / "rd_kodak.png", dpi=120)
    print(f"\nwrote {a.out / 'rd_points.csv'}, {a.out / 'bd_rate.csv'}, {a.out / 'rd_kodak.png'}")


if __name__ == "__main__":
    main()
