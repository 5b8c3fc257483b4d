"""Encode + decode time of the autoencoder codec per Kodak image, by precision (issue 8).

Side by side in one process, interleaved per image: the encoder's analysis transforms in
float32 against the precision ``encode`` picks on this CPU (bfloat16 where the CPU has
AMX-BF16), and the synthesis in float32 (what ``decode`` does) against bfloat16 (not used
by ``decode``: it changes pixels by more than the cross-machine tolerance the golden
files allow). CPU ms on one torch thread, and wall ms on ``--threads`` threads; each
figure is the median of ``--repeat`` runs. Also the bytes and PSNR of each encoder's
artifact, so a faster path cannot hide a worse one.

    python bench/ae_speed.py [--limit 8] [--quality 5] [--threads 2] [--out bench/out]
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
sys.path.insert(0, str(ROOT / "bench"))

from rd_kodak import SHARED, load_kodak  # noqa: E402

from compressors.hardware import cpu_description  # noqa: E402
from compressors.metrics import psnr  # noqa: E402


def _timed(fn, repeat: int) -> tuple[object, float, float]:
    """(result, median CPU ms, median wall ms) of ``repeat`` calls."""
    cpu, wall, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return out, float(np.median(cpu)), float(np.median(wall))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kodak", type=Path, default=SHARED / "data" / "kodak")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--model", default="", help="autoencoder model id (default: the shipped default)")
    p.add_argument("--quality", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the wall-time columns")
    a = p.parse_args(argv)

    import torch

    from compressors.autoencoder import codec

    model = a.model or None
    auto = codec.encoder_autocast()
    encoders = {"float32": None, "auto": auto}
    decoders = {"float32": None, "bfloat16": torch.bfloat16}
    images = load_kodak(a.kodak, a.limit)
    codec.decode(codec.encode(images[0][1], quality=a.quality, model=model))  # load the model once
    rows = []
    for name, image in images:
        row = {"image": name}
        for threads, unit in ((1, "cpu"), (a.threads, "wall")):
            torch.set_num_threads(threads)
            for label, dtype in encoders.items():
                data, cpu, wall = _timed(lambda d=dtype: codec.encode_batch([image], quality=a.quality, model=model,
                                                                           autocast=d)[0], a.repeat)
                row[f"encode_{label}_{unit}_ms"] = cpu if unit == "cpu" else wall
                row[f"bytes_{label}"] = len(data)
                row[f"psnr_{label}"] = psnr(image, codec.decode(data))
                row[f"data_{label}"] = data
            for label, dtype in decoders.items():
                _, cpu, wall = _timed(lambda d=dtype: codec.decode_batch([row["data_auto"]], autocast=d)[0], a.repeat)
                row[f"decode_{label}_{unit}_ms"] = cpu if unit == "cpu" else wall
        row.pop("data_float32"), row.pop("data_auto")
        rows.append(row)
        print(f"  {name}: encode auto {row['encode_auto_cpu_ms']:.0f} ms CPU, decode {row['decode_float32_cpu_ms']:.0f}",
              flush=True)

    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    a.out.mkdir(parents=True, exist_ok=True)
    with (a.out / "ae_speed.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\n{len(rows)} Kodak images, quality {a.quality}, {cpu_description()}; "
          f"encode 'auto' = {'bfloat16' if auto is not None else 'float32'} on this CPU")
    print(f"{'path':34s} {'CPU ms (1 thread)':>18s} {'wall ms (' + str(a.threads) + ' threads)':>20s}")
    for label in encoders:
        print(f"{'encode, ' + label:34s} {mean[f'encode_{label}_cpu_ms']:18.0f} {mean[f'encode_{label}_wall_ms']:20.0f}")
    for label in decoders:
        print(f"{'decode, ' + label:34s} {mean[f'decode_{label}_cpu_ms']:18.0f} {mean[f'decode_{label}_wall_ms']:20.0f}")
    for unit, what in (("cpu", "CPU, 1 thread"), ("wall", f"wall, {a.threads} threads")):
        total = mean[f"encode_auto_{unit}_ms"] + mean[f"decode_float32_{unit}_ms"]
        print(f"encode (auto) + decode (float32), {what}: {total:.0f} ms "
              f"(target <= 400: {'met' if total <= 400 else 'MISSED'})")
    for label in encoders:
        print(f"encoder {label}: {mean[f'bytes_{label}']:.0f} bytes, {mean[f'psnr_{label}']:.3f} dB (mean)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
