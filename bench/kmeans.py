"""K-means palette codec vs pngquant vs scikit-learn KMeans, side by side on Kodak.

    python bench/kmeans.py [--data ../shared/data/kodak] [--colors 16,64,256] [--out bench/out]

For every image and every K, in one interleaved loop (so machine load hits every method
alike), it runs:

- ``kmeans``: this codec's ``encode`` on the decoded RGB array (includes writing the PNG);
- ``pngquant -sN``: ``pngquant --nofs --speed N K -`` as a subprocess on the source PNG
  file's bytes (includes its process start and reading the PNG; N = 4 and 1);
- ``sklearn-kmeans``: scikit-learn ``KMeans(K, n_init=1, random_state=0)`` fitted on all
  pixels (the slow reference), then the same palette-PNG writer as ours. It takes
  seconds per image, so by default it runs on every 4th image only (``--sklearn-every``).

Wall milliseconds per image, PSNR and SSIM (``compressors.metrics``) of each decoded
output against the source, and bpp from the real bytes of each output. Writes
``kmeans_images.csv`` (one row per image, method and K), ``kmeans_summary.csv`` and
``kmeans.png`` into ``--out``, and prints the summary and the target check.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compressors import kmeans
from compressors.metrics import psnr, ssim

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def _cpu() -> float:
    """CPU seconds of this process and its finished children (pngquant)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn, *args) -> tuple[bytes, float, float]:
    """(result, wall ms, CPU ms)."""
    wall, cpu = time.perf_counter(), _cpu()
    out = fn(*args)
    return out, (time.perf_counter() - wall) * 1e3, (_cpu() - cpu) * 1e3


def run_ours(image: np.ndarray, k: int | None, target: float | None = None) -> bytes:
    return kmeans.encode(image, colors=k, target_psnr=target, seed=0).data


def run_pngquant(source: bytes, k: int, speed: int) -> bytes:
    return subprocess.run(
        ["pngquant", "--nofs", "--speed", str(speed), str(k), "-"],
        input=source,
        capture_output=True,
        check=True,
    ).stdout


def run_sklearn(image: np.ndarray, k: int) -> bytes:
    from sklearn.cluster import KMeans

    pixels = image.reshape(-1, 3).astype(np.float64)
    model = KMeans(n_clusters=k, n_init=1, random_state=0).fit(pixels)
    palette = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)
    # Each pixel to its nearest rounded centre (exact; the same step our codec ends with).
    labels = kmeans._nearest(pixels.astype(np.float32), palette)
    return kmeans.palette_png(labels.reshape(image.shape[:2]).astype(np.uint8), palette)


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of PNG images (default: Kodak)")
    ap.add_argument("--colors", default="16,64,256", help="comma-separated palette sizes")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument(
        "--target-psnr", default="35,40", help="also run target_psnr searches (dB, comma-separated)"
    )
    ap.add_argument(
        "--sklearn-every", type=int, default=4, help="run sklearn KMeans on every Nth image (0: never)"
    )
    ap.add_argument(
        "--throughput",
        default="",
        help="also measure collection throughput at these K (comma-separated): our codec in two worker "
        "processes against two pngquant --speed 4 processes side by side, whole images from file",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="re-summarize --out/kmeans_images.csv without running anything",
    )
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.colors.split(",")]
    if args.report_only:
        with (args.out / "kmeans_images.csv").open() as f:
            rows = [
                {k: (v if k in ("image", "method") else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)
            ]
        for r in rows:
            r["colors"] = int(r["colors"])
        report(rows, ks, args.out)
        return 0

    if shutil.which("pngquant") is None:
        ap.error("pngquant is not installed (apt-get install pngquant)")
    files = sorted(args.data.glob("*.png"))[: args.limit or None]
    if not files:
        ap.error(f"no PNG images in {args.data}")
    version = subprocess.run(
        ["pngquant", "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{len(files)} images from {args.data}; K = {ks}; pngquant {version}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )

    methods = [
        ("kmeans", lambda img, src, k: run_ours(img, k)),
        ("pngquant-s4", lambda img, src, k: run_pngquant(src, k, 4)),
        ("pngquant-s1", lambda img, src, k: run_pngquant(src, k, 1)),
    ]
    targets = [float(t) for t in args.target_psnr.split(",") if t]
    # imports and first-call costs (numba's kernels) out of the timings: a noise image, so that
    # the fit really runs (an image of <= K colours takes the lossless path and fits nothing)
    run_ours(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8), 2)
    rows = []

    def record(name: str, k: int, image: np.ndarray, data: bytes, wall: float, cpu: float) -> None:
        decoded = kmeans.decode(data) if name.startswith("kmeans") else decode_rgb(data)
        rows.append(
            {
                "image": path.name,
                "method": name,
                "colors": k,
                "ms": wall,
                "cpu_ms": cpu,
                "bytes": len(data),
                "bpp": len(data) * 8 / (image.shape[0] * image.shape[1]),
                "psnr": psnr(image, decoded),
                "ssim": ssim(image, decoded),
                "palette": len(np.unique(decoded.reshape(-1, decoded.shape[2]), axis=0)),
            }
        )

    for i, path in enumerate(files):
        source = path.read_bytes()
        image = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
        todo = list(methods)
        if args.sklearn_every and i % args.sklearn_every == 0:
            todo.append(("sklearn-kmeans", lambda img, src, k: run_sklearn(img, k)))
        for k in ks:
            for name, fn in todo:
                record(name, k, image, *timed(fn, image, source, k))
        for target in targets:
            data, wall, cpu = timed(run_ours, image, None, target)
            record(f"kmeans@{target:g}dB", 0, image, data, wall, cpu)
            rows[-1]["colors"] = rows[-1]["palette"]
        print(f"  {path.name} done, load {os.getloadavg()[0]:.1f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    _write_csv(args.out / "kmeans_images.csv", rows)
    report(rows, ks, args.out)
    if args.throughput:
        tp = [throughput(files, int(k)) for k in args.throughput.split(",")]
        _write_csv(args.out / "kmeans_throughput.csv", tp)
    print(
        f"load average at end {os.getloadavg()[0]:.1f}; wrote {args.out}/kmeans_images.csv, kmeans_summary.csv, kmeans.png"
    )
    return 0


def _encode_file(job: tuple[str, int]) -> int:
    path, k = job
    image = np.asarray(Image.open(path).convert("RGB"))
    return len(kmeans.encode(image, colors=k, seed=0).data)


def throughput(files: list[Path], k: int, rounds: int = 3) -> dict:
    """Images per second over the collection: two of our worker processes against two pngquant
    --speed 4 processes side by side (each lane runs its half of the files one after another).
    Rounds alternate the two, so machine load hits both alike; the median round is kept."""
    import multiprocessing as mp
    import threading

    half = [files[0::2], files[1::2]]

    def pngquant_lane(lane: list[Path]) -> None:
        for path in lane:
            run_pngquant(path.read_bytes(), k, 4)

    ours, theirs = [], []
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_encode_file, [(str(files[0]), 2)] * 2)  # imports paid before timing
        for _ in range(rounds):
            t0 = time.perf_counter()
            pool.map(_encode_file, [(str(p), k) for p in files], chunksize=1)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            lanes = [threading.Thread(target=pngquant_lane, args=(lane,)) for lane in half]
            for t in lanes:
                t.start()
            for t in lanes:
                t.join()
            theirs.append(time.perf_counter() - t0)
    row = {"colors": k, "images": len(files), "kmeans_images_per_s": len(files) / float(np.median(ours)),
           "pngquant_s4_images_per_s": len(files) / float(np.median(theirs))}
    row["ratio"] = row["kmeans_images_per_s"] / row["pngquant_s4_images_per_s"]
    print(f"throughput K={k}: kmeans x2 processes {row['kmeans_images_per_s']:.2f} img/s, "
          f"pngquant -s4 x2 processes {row['pngquant_s4_images_per_s']:.2f} img/s -> {row['ratio']:.2f}x "
          f"(target >= 2x: {'MET' if row['ratio'] >= 2 else 'MISSED'})", flush=True)
    return row


def report(rows: list[dict], ks: list[int], out: Path) -> None:
    summary = summarize(rows, ks)
    _write_csv(out / "kmeans_summary.csv", summary)
    print_table(summary)
    print_targets(rows, ks)
    plot(summary, out / "kmeans.png")


def summarize(rows: list[dict], ks: list[int]) -> list[dict]:
    def mean_row(sel: list[dict], colors, method: str) -> dict:
        metrics = ("ms", "cpu_ms", "psnr", "ssim", "bpp")
        return {"colors": colors, "method": method, "images": len(sel)} | {
            m: float(np.mean([r[m] for r in sel])) for m in metrics
        }

    out = []
    for k in ks:
        for method in ("kmeans", "pngquant-s4", "pngquant-s1", "sklearn-kmeans"):
            sel = [r for r in rows if r["colors"] == k and r["method"] == method]
            if sel:
                out.append(mean_row(sel, k, method))
    for method in sorted({r["method"] for r in rows if "@" in r["method"]}):
        sel = [r for r in rows if r["method"] == method]
        out.append(mean_row(sel, f"{np.mean([r['colors'] for r in sel]):.0f}", method))
    return out


def print_table(summary: list[dict]) -> None:
    print()
    print(
        f"{'K':>4} {'method':<15} {'images':>6} {'ms/image':>9} {'CPU ms':>8} {'PSNR dB':>8} {'SSIM':>7} {'bpp':>6}"
    )
    for r in summary:
        print(
            f"{r['colors']:>4} {r['method']:<15} {r['images']:>6} {r['ms']:>9.1f} {r['cpu_ms']:>8.1f} "
            f"{r['psnr']:>8.3f} {r['ssim']:>7.4f} {r['bpp']:>6.3f}"
        )
    print("(kmeans@T rows: target_psnr=T, K = the mean palette size the search chose)")


def print_targets(rows: list[dict], ks: list[int]) -> None:
    """Target: PSNR >= pngquant -s1's, bpp <= pngquant's, time <= half of pngquant -s4's."""
    print(
        "\nTarget (same images, same K): PSNR >= pngquant-s1, bpp <= pngquant-s1 and -s4, time <= 0.5 x -s4"
    )
    for k in ks:

        def mean(method, m, k=k):
            return float(np.mean([r[m] for r in rows if r["colors"] == k and r["method"] == method]))

        d_psnr = mean("kmeans", "psnr") - mean("pngquant-s1", "psnr")
        bpp, bpp1, bpp4 = mean("kmeans", "bpp"), mean("pngquant-s1", "bpp"), mean("pngquant-s4", "bpp")
        ratio = mean("kmeans", "ms") / mean("pngquant-s4", "ms")
        cpu_ratio = mean("kmeans", "cpu_ms") / mean("pngquant-s4", "cpu_ms")
        ok = d_psnr >= 0 and bpp <= min(bpp1, bpp4) and ratio <= 0.5
        print(
            f"  K={k:<3} PSNR {d_psnr:+.3f} dB vs -s1 | bpp {bpp:.3f} vs -s1 {bpp1:.3f} / -s4 {bpp4:.3f} "
            f"({(bpp / bpp1 - 1) * 100:+.1f}% vs -s1) | wall {ratio:.2f} x -s4 (CPU {cpu_ratio:.2f} x)"
            f"  -> {'MET' if ok else 'MISSED'}"
        )
        # The sklearn subset: ours on the same images, for an apples-to-apples quality view.
        subset = {r["image"] for r in rows if r["colors"] == k and r["method"] == "sklearn-kmeans"}
        if subset:
            ours = [
                r["psnr"]
                for r in rows
                if r["colors"] == k and r["method"] == "kmeans" and r["image"] in subset
            ]
            theirs = [r["psnr"] for r in rows if r["colors"] == k and r["method"] == "sklearn-kmeans"]
            ours_bpp = [
                r["bpp"]
                for r in rows
                if r["colors"] == k and r["method"] == "kmeans" and r["image"] in subset
            ]
            theirs_bpp = [r["bpp"] for r in rows if r["colors"] == k and r["method"] == "sklearn-kmeans"]
            print(
                f"         on the {len(subset)} sklearn images: kmeans {np.mean(ours):.3f} dB "
                f"{np.mean(ours_bpp):.3f} bpp, sklearn KMeans (all pixels) {np.mean(theirs):.3f} dB "
                f"{np.mean(theirs_bpp):.3f} bpp"
            )


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in (
        ("kmeans", "o"),
        ("pngquant-s4", "s"),
        ("pngquant-s1", "^"),
        ("sklearn-kmeans", "x"),
    ):
        sel = [r for r in summary if r["method"] == method]
        if not sel:
            continue
        label = f"{method} ({sel[0]['images']} images)"
        ax1.plot([r["bpp"] for r in sel], [r["psnr"] for r in sel], marker=marker, label=label)
        ax2.plot([r["colors"] for r in sel], [r["ms"] for r in sel], marker=marker, label=label)
    ax1.set(xlabel="bpp", ylabel="PSNR (dB)", title="Kodak, K = 16 / 64 / 256")
    ax2.set(xlabel="K", ylabel="wall ms per image", xscale="log", yscale="log", title="time")
    ks = sorted({r["colors"] for r in summary if isinstance(r["colors"], int)})
    ax2.set_xticks(ks, [str(k) for k in ks])
    ax2.minorticks_off()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
