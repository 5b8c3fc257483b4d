"""Quality targets on Kodak: bytes per codec against the one fixed quality that meets the target.

    python bench/target.py [--data ../shared/data/kodak] [--targets psnr:35,ssim:0.95] [--out bench/out]
    python bench/target.py --priors [--train ../shared/data/train]    # the search's starting curves

For every image, every codec and every target it runs the codec's per-image target
search (``Codec.compress(image, target_psnr=...)`` / ``target_ssim=...``) and records the
artifact's bytes, whether the target was met, the encodes it took (kmeans: quick palette
fits plus the final fit) and the wall time. Then, per codec, the **fixed baseline**: the
one quality (kmeans: palette size; autoencoder: level) that meets the target on >= 95 % of
the images (the ceil(0.95 n)-th smallest of the per-image lowest settings), encoded once
per image. ``auto`` is the choice ``--codec auto --candidates ...`` makes from the same
per-candidate searches (smallest artifact meeting the target, else the closest), so its
encodes and time are the candidates' sums.

``--priors`` measures, on training images (never Kodak) scaled by 0.7, the median PSNR and SSIM (as
-10 log10(1 - SSIM)) per quality of each quality codec: the table the search starts from
(``TARGET_PRIORS`` in compressors/classical.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compressors import get_codec, kmeans  # noqa: E402
from compressors.metrics import psnr, ssim  # noqa: E402
from compressors.target import TARGET_PARAMS, Target, encode_to_target, ssim_db  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
CODECS = ("jpeg", "webp", "avif", "jpeg2000", "jxl", "kmeans", "autoencoder")
SETTING = {"kmeans": "colors"}  # the searched parameter; "quality" for the others


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def parse_target(text: str) -> Target:
    metric, value = text.split(":")
    return Target(psnr=float(value)) if metric == "psnr" else Target(ssim=float(value))


def target_name(target: Target) -> str:
    return f"PSNR {target.psnr:g} dB" if target.psnr is not None else f"SSIM {target.ssim:g}"


class FitCounter:
    """Counts kmeans palette fits (the work its search does instead of full encodes)."""

    def __init__(self):
        self.n = 0
        self._quick, self._full = kmeans._quick_fit, kmeans._full_fit

    def __enter__(self):
        def quick(*a, **k):
            self.n += 1
            return self._quick(*a, **k)

        kmeans._quick_fit = quick
        return self

    def __exit__(self, *exc):
        kmeans._quick_fit = self._quick


def search(name: str, image: np.ndarray, target: Target, source: bytes) -> dict:
    codec = get_codec(name)
    t0 = time.perf_counter()
    if name == "kmeans":
        with FitCounter() as fits:
            out = codec.compress(image, target_psnr=target.psnr, target_ssim=target.ssim)
        encodes = fits.n + 1  # the quick fits, then the final one
    else:
        params = codec.canonical_params({"target_psnr": target.psnr, "target_ssim": target.ssim})
        params = {k: v for k, v in params.items() if k not in TARGET_PARAMS}
        if codec.takes_source:  # jxl: the file's bytes (a JPEG source would be transcoded, exact)
            params["source"] = source
        out, _, encodes = encode_to_target(codec, image, target, params)
    ms = (time.perf_counter() - t0) * 1e3
    decoded = codec.decode(out.data)
    margin = target.margin(image, decoded)
    return {"codec": name, "setting": out.decision[SETTING.get(name, "quality")], "bytes": len(out.data),
            "met": margin >= 0, "margin": margin, "encodes": encodes, "ms": ms}


def fixed(name: str, image: np.ndarray, setting: int, target: Target) -> dict:
    codec = get_codec(name)
    t0 = time.perf_counter()
    data = codec.encode(image, **{SETTING.get(name, "quality"): setting})
    ms = (time.perf_counter() - t0) * 1e3
    return {"bytes": len(data), "met": target.margin(image, codec.decode(data)) >= 0, "ms": ms}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "kodak")
    ap.add_argument("--targets", default="psnr:35,ssim:0.95")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--candidates", default="jpeg,webp,avif,kmeans,autoencoder", help="auto's candidates")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--priors", action="store_true", help="measure the search's starting curves on --train")
    ap.add_argument("--train", type=Path, default=ROOT / "train")
    ap.add_argument("--train-images", type=int, default=60)
    args = ap.parse_args(argv)
    if args.priors:
        return priors(args)

    files = sorted(args.data.glob("*.png"))[: args.limit or None]
    codecs = args.codecs.split(",")
    candidates = [c for c in args.candidates.split(",") if c in codecs]
    targets = [parse_target(t) for t in args.targets.split(",")]
    print(f"{len(files)} images from {args.data}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for target in targets:
        for path in files:
            image = load(path)
            for name in codecs:
                found = search(name, image, target, path.read_bytes())
                rows.append({"target": target_name(target), "image": path.name, **found})
            mine = [r for r in rows[-len(codecs):] if r["codec"] in candidates]
            met = [r for r in mine if r["met"]]
            best = min(met, key=lambda r: r["bytes"]) if met else max(mine, key=lambda r: r["margin"])
            rows.append({**best, "codec": "auto", "setting": best["codec"],
                         "encodes": sum(r["encodes"] for r in mine), "ms": sum(r["ms"] for r in mine)})
            print(f"  {target_name(target)} {path.name}: auto -> {best['codec']} {best['setting']}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    summary = []
    for target in targets:
        tname = target_name(target)
        for name in [*codecs, "auto"]:
            sel = [r for r in rows if r["target"] == tname and r["codec"] == name]
            entry = {"target": tname, "codec": name, "images": len(sel),
                     "target_bytes": sum(r["bytes"] for r in sel), "target_met": sum(r["met"] for r in sel),
                     "encodes_per_image": float(np.mean([r["encodes"] for r in sel])),
                     "ms_per_image": float(np.mean([r["ms"] for r in sel]))}
            if name != "auto":
                lowest = sorted(r["setting"] if r["met"] else math.inf for r in sel)
                q = lowest[math.ceil(0.95 * len(lowest)) - 1]
                entry["fixed_setting"] = q if math.isfinite(q) else None
                if math.isfinite(q):
                    base = [fixed(name, load(args.data / r["image"]), q, target) for r in sel]
                    entry.update(fixed_bytes=sum(b["bytes"] for b in base), fixed_met=sum(b["met"] for b in base),
                                 fixed_ms_per_image=float(np.mean([b["ms"] for b in base])))
            summary.append(entry)
        fixed_ok = [s for s in summary if s["target"] == tname and s.get("fixed_bytes")]
        best_fixed = min(fixed_ok, key=lambda s: s["fixed_bytes"]) if fixed_ok else None
        if best_fixed:
            auto = next(s for s in summary if s["target"] == tname and s["codec"] == "auto")
            auto.update(fixed_setting=f"{best_fixed['codec']} {best_fixed['fixed_setting']}",
                        fixed_bytes=best_fixed["fixed_bytes"], fixed_met=best_fixed["fixed_met"])

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "target_images.csv", rows)
    write_csv(args.out / "target_summary.csv", summary)
    print(f"\n{'target':<12} {'codec':<12} {'met':>5} {'KB':>8} {'fixed q':>12} {'met':>5} {'fixed KB':>9} "
          f"{'saved':>7} {'encodes':>8} {'ms/img':>8}")
    for s in summary:
        saved = f"{(1 - s['target_bytes'] / s['fixed_bytes']) * 100:+.1f}%" if s.get("fixed_bytes") else "-"
        print(f"{s['target']:<12} {s['codec']:<12} {s['target_met']:>2}/{s['images']:<2} {s['target_bytes'] / 1e3:>8.0f} "
              f"{str(s.get('fixed_setting', '-')):>12} {s.get('fixed_met', '-'):>5} "
              f"{s.get('fixed_bytes', 0) / 1e3:>9.0f} {saved:>7} {s['encodes_per_image']:>8.2f} "
              f"{s['ms_per_image']:>8.0f}")
    print(f"load at end {os.getloadavg()[0]:.1f}; wrote {args.out}/target_images.csv, target_summary.csv")
    return 0


def priors(args) -> int:
    """Median PSNR and SSIM-dB per quality on training images: where the search starts."""
    rng = np.random.default_rng(0)
    files = sorted(p for p in args.train.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.train_images, len(files)), replace=False))]
    grids = {"jpeg": [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100],
             "webp": [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100],
             "avif": [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100],
             "jpeg2000": [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100],
             "jxl": [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100],
             "autoencoder": list(range(1, get_codec("autoencoder").params["quality"].hi + 1))}
    grids = {name: grid for name, grid in grids.items() if name in args.codecs.split(",")}
    print(f"{len(files)} training images from {args.train}", flush=True)
    out: dict[str, dict[str, list]] = {}
    # Scaled by 0.7 (Lanczos): the training photos were JPEG once (BSDS500 at q95, and the
    # Sun-Hays PNGs show JPEG block grids too); re-encoding on the same 8x8 grid at the same
    # quality is nearly lossless (50+ dB), a cliff that no fresh photo has.
    crops = [center(rescale(load(path), 0.7), 512) for path in files]
    for name, grid in grids.items():
        codec = get_codec(name)
        values = {q: ([], []) for q in grid}
        for image in crops:
            for q in grid:
                decoded = codec.decode(codec.encode(image, quality=q))
                values[q][0].append(psnr(image, decoded))
                values[q][1].append(ssim_db(ssim(image, decoded)))
        out[name] = {m: [(q, round(float(np.median(values[q][i])), 2)) for q in grid] for i, m in
                     enumerate(("psnr", "ssim"))}
        print(f"    {name!r}: {{", flush=True)
        for metric, points in out[name].items():
            print(f"        {metric!r}: {tuple(points)},")
        print("    },", flush=True)
    if "kmeans" not in args.codecs.split(","):
        return 0
    # kmeans: dB gained per doubling of the palette (its search's prior slope), median over images
    ks = [16, 32, 64, 128, 256]
    per = {"psnr": [], "ssim": []}
    for image in crops:
        decoded = [kmeans.decode(kmeans.encode(image, colors=k).data) for k in ks]
        p = [psnr(image, d) for d in decoded]
        s = [ssim_db(ssim(image, d)) for d in decoded]
        per["psnr"] += list(np.diff(p))
        per["ssim"] += list(np.diff(s))
    print(f"kmeans dB per doubling of K (16..256): PSNR {np.median(per['psnr']):.2f}, "
          f"SSIM-dB {np.median(per['ssim']):.2f}")
    return 0


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((round(w * factor), round(h * factor)), Image.LANCZOS))


def center(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(image[y : y + side, x : x + side])


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
