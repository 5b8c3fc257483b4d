"""Training throughput of the autoencoder: the shipped recipe beside the faster ones, one run.

Every variant trains the same model (N=96, M=128, 6 qualities by default) on the same
random crops and batch with Adam, through the project's own ``train_step``; only the
execution path differs (precision, memory format, torch.compile, threads, crop size). Each
variant gets warm-up steps (compilation included there), then timed steps; variants are
interleaved in rounds so that background load hits them alike. Prints steps/s, pixels/s and
the ratio to the shipped recipe (float32, contiguous, eager), and writes a CSV.

    python bench/train_speed.py                   # all variants, ~3 min on 2 cores
    python bench/train_speed.py --variants shipped,bf16+cl --steps 20

The CPU (model, ISA) is printed and written with every row: the answer differs between the
project's machines (bf16 is a large win with AMX, a large loss on AVX2-only CPUs).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressors.autoencoder.model import MeanScaleHyperprior  # noqa: E402
from compressors.autoencoder.train import CropSampler, load_images, train_step  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402

# name -> (autocast dtype name or None, channels_last, compile, crop override or None, threads override or None)
VARIANTS = {
    "shipped": (None, False, False, None, None),
    "fp32+cl": (None, True, False, None, None),
    "fp32+cl+compile": (None, True, True, None, None),
    "bf16": ("bf16", False, False, None, None),
    "bf16+cl": ("bf16", True, False, None, None),
    "bf16+cl+compile": ("bf16", True, True, None, None),
    "bf16+cl 1 thread": ("bf16", True, False, None, 1),
    "bf16+cl crop 64 (x4 batch)": ("bf16", True, False, 64, None),
}


def _images(folder: Path, crop: int) -> list[np.ndarray]:
    if folder.exists():
        return load_images(folder, min_side=crop)[:64]
    rng = np.random.default_rng(0)  # no shared data: smooth random images of photo-like size
    base = rng.integers(0, 256, (8, 40, 60, 3)).astype(np.float32)
    return [np.clip(np.kron(b, np.ones((8, 8, 1))), 0, 255).astype(np.uint8) for b in base]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--N", type=int, default=96)
    p.add_argument("--M", type=int, default=128)
    p.add_argument("--qualities", type=int, default=6)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_speed.csv")
    a = p.parse_args(argv)

    threads = torch.get_num_threads()
    cpu = cpu_description()
    print(f"CPU: {cpu}; torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{threads} threads; model N={a.N} M={a.M} q={a.qualities}, crop {a.crop}, batch {a.batch}")
    images = _images(a.data, a.crop)
    lambdas = torch.tensor(np.geomspace(0.0018, 0.0483, a.qualities), dtype=torch.float32)
    names = [v for v in a.variants.split(",") if v]
    states = {}
    for name in names:
        dtype, cl, comp, crop, nthreads = VARIANTS[name]
        torch.manual_seed(0)
        model = MeanScaleHyperprior(a.N, a.M, a.qualities)
        if cl:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        c = crop or a.crop
        batch = a.batch * (a.crop // c) ** 2  # same pixels per step
        sampler = CropSampler(images, c, np.random.default_rng(0))
        forward = torch.compile(model) if comp else model
        states[name] = dict(model=model, opt=opt, forward=forward, sampler=sampler, batch=batch, crop=c,
                            autocast=torch.bfloat16 if dtype == "bf16" else None, cl=cl,
                            threads=nthreads or threads, times=[], data_s=[])

    def run(name: str, n: int, timed: bool) -> None:
        st = states[name]
        torch.set_num_threads(st["threads"])
        rng = np.random.default_rng(1)
        for _ in range(n):
            t0 = time.perf_counter()
            x = st["sampler"].batch(st["batch"])
            t1 = time.perf_counter()
            q = torch.from_numpy(rng.integers(0, a.qualities, st["batch"]))
            train_step(st["forward"], st["opt"], x, q, lambdas, autocast=st["autocast"],
                       channels_last=st["cl"], grad_clip=1.0)
            t2 = time.perf_counter()
            if timed:
                st["times"].append(t2 - t0)
                st["data_s"].append(t1 - t0)
        torch.set_num_threads(threads)

    for name in names:
        t0 = time.perf_counter()
        run(name, a.warmup, timed=False)
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    for r in range(a.rounds):
        for name in names:
            run(name, a.steps, timed=True)
        print(f"  round {r + 1}/{a.rounds} done", flush=True)

    base = statistics.median(states[names[0]]["times"])
    rows = []
    print(f"\n{'variant':<30}{'ms/step':>9}{'steps/s':>9}{'Mpx/s':>8}{'data ms':>9}{'vs ' + names[0]:>14}")
    for name in names:
        st = states[name]
        ms = statistics.median(st["times"])
        px = st["batch"] * st["crop"] ** 2
        row = {"variant": name, "cpu": cpu, "threads": st["threads"], "crop": st["crop"], "batch": st["batch"],
               "ms_per_step": round(ms * 1e3, 1), "steps_per_s": round(1 / ms, 2),
               "mpx_per_s": round(px / ms / 1e6, 3), "data_ms": round(statistics.median(st["data_s"]) * 1e3, 2),
               "speedup": round(base / ms, 2)}
        rows.append(row)
        print(f"{name:<30}{row['ms_per_step']:>9}{row['steps_per_s']:>9}{row['mpx_per_s']:>8}"
              f"{row['data_ms']:>9}{row['speedup']:>13}x")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
