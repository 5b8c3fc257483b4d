"""Fuzz every registered decoder (and the input decoder) with tens of thousands of hostile cases.

Each target runs in its own process. A case is a real artifact of the codec, mutated
(bit flips, header fields overwritten with extreme integers, truncation, insertion,
deletion, splices, the format's width/height fields set to extreme values; checksums
recomputed on half of them so the mutation reaches the parser behind them), or random bytes with and without the right signature. Case ``i``
of a target is a pure function of ``(--seed, target, i)``, so any case reproduces alone:

    python bench/fuzz.py --cases 12000                 # all targets, ~12,000 cases in all
    python bench/fuzz.py --targets jpeg webp --cases 4000 --seed 7
    python bench/fuzz.py --replay jpeg 1234            # decode one case again, with a traceback

Outcomes: ``decoded`` (a valid uint8 HxWxC image), ``rejected`` (``ValueError``, or
``ImageError`` for the input decoder: the contract), ``crash`` (any other exception: a
bug, saved under ``bench/out/fuzz-failures/``), ``memory`` (``MemoryError`` under the
per-process cap), ``hang`` (no progress for ``--hang-seconds``; the process is killed
and the target resumes at the next case). Per target the table shows the slowest case
and the largest growth of peak RSS over the warmed-up process: the memory a hostile
case could make a worker take, under the default pixel limits.

Prints a table and writes ``bench/out/fuzz.csv``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INPUT_TARGET = "decode_image"
RESTORE = ".restore"  # target "<codec>.restore": the codec's restore (original bytes from an exact artifact)

from compressors.fuzzing import codec_seeds, input_seeds, max_rss, mutate, vm_data  # noqa: E402


def make_case(seeds: list[bytes], seed: int, target: str, i: int) -> tuple[str, bytes]:
    """Case ``i`` of ``target``: ``(kind, bytes)``, the same for the same arguments."""
    r = random.Random(f"{seed}|{target}|{i}")
    if not seeds or r.random() < 0.1:
        prefix = r.choice(seeds)[: r.randint(0, 16)] if seeds else b""
        return "random", prefix + r.randbytes(r.randint(0, 2048))
    return "mutated", mutate(r.choice(seeds), r)


def decoder_for(target: str):
    """``(decode(bytes) -> array, rejection exception type)`` for a target."""
    if target == INPUT_TARGET:
        from compressors.imageio import ImageError, decode_image

        return (lambda data: decode_image(data).image), ImageError
    import numpy as np

    from compressors import get_codec

    if target.endswith(RESTORE):
        codec = get_codec(target.removesuffix(RESTORE))

        def restore(data: bytes):
            original = codec.restore(data)
            if original is not None and not isinstance(original, bytes):
                raise TypeError(f"restore returned {type(original).__name__}")
            return np.zeros((1, 1, 1), np.uint8)  # "decoded": the original (or None: a pixel artifact)

        return restore, ValueError
    return get_codec(target).decode, ValueError


def seeds_for(target: str) -> list[bytes]:
    return input_seeds() if target == INPUT_TARGET else codec_seeds(target.removesuffix(RESTORE))


# ---------------------------------------------------------------- the worker process


def worker(target: str, seed: int, start: int, stop: int, cap_bytes: int, progress, conn, failures_dir: str):
    import warnings

    from PIL import Image

    from compressors.registry import check_image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits are the decoders' to apply
    decode, rejection = decoder_for(target)
    seeds = seeds_for(target)
    for s in seeds[:3]:  # warm up the libraries before measuring
        try:
            decode(s)
        except Exception:  # noqa: BLE001
            pass
    baseline = max_rss()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (min(vm_data() + cap_bytes, hard), hard))
    stats = {"decoded": 0, "rejected": 0, "crash": 0, "memory": 0, "cases": 0, "max_ms": 0.0, "max_ms_case": -1,
             "rss_growth": 0, "rss_case": -1, "times": [], "crashes": [], "seeds": len(seeds)}
    for i in range(start, stop):
        progress[0], progress[1] = i, time.monotonic()
        _, data = make_case(seeds, seed, target, i)
        t0 = time.perf_counter()
        try:
            check_image(decode(data))
            outcome = "decoded"
        except MemoryError:
            outcome = "memory"
        except rejection:
            outcome = "rejected"
        except Exception as exc:  # noqa: BLE001  (the point: anything but the contract is a finding)
            outcome = "crash"
            if len(stats["crashes"]) < 20:
                stats["crashes"].append((i, f"{type(exc).__name__}: {exc}"[:300]))
                Path(failures_dir).mkdir(parents=True, exist_ok=True)
                Path(failures_dir, f"{target}-{seed}-{i}.bin").write_bytes(data)
        ms = (time.perf_counter() - t0) * 1e3
        stats[outcome] += 1
        stats["cases"] += 1
        stats["times"].append(ms)
        if ms > stats["max_ms"]:
            stats["max_ms"], stats["max_ms_case"] = ms, i
        growth = max_rss() - baseline
        if growth > stats["rss_growth"]:
            stats["rss_growth"], stats["rss_case"] = growth, i
    progress[0] = stop
    conn.send(stats)
    conn.close()


# ---------------------------------------------------------------- the driver


def run_target(target: str, cases: int, seed: int, hang_s: float, cap_bytes: int, failures_dir: str) -> dict:
    ctx = mp.get_context("spawn")
    total = {"decoded": 0, "rejected": 0, "crash": 0, "memory": 0, "hang": 0, "cases": 0, "max_ms": 0.0,
             "max_ms_case": -1, "rss_growth": 0, "rss_case": -1, "times": [], "crashes": [], "hangs": [], "seeds": 0}
    start = 0
    t0 = time.monotonic()
    while start < cases:
        progress = ctx.Array("d", [float(start), time.monotonic()], lock=False)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(target, seed, start, cases, cap_bytes, progress, child, failures_dir),
                           daemon=True)
        proc.start()
        child.close()
        result = None
        startup_grace = 120.0  # importing torch & co. on a loaded machine
        while True:
            if parent.poll(0.2):
                result = parent.recv()
                break
            if not proc.is_alive():
                break
            idle = time.monotonic() - progress[1]
            if idle > hang_s + (startup_grace if int(progress[0]) == start else 0):
                proc.kill()
                break
        proc.join(timeout=30)
        if result is not None:
            _merge(total, result)
            break
        # the process died or hung on case `progress[0]`: record it, go on after it
        bad = int(progress[0])
        kind = "hang" if proc.exitcode in (-9, None) else "crash"
        total[kind] += 1
        total["cases"] += 1
        (total["hangs"] if kind == "hang" else total["crashes"]).append((bad, f"process exit code {proc.exitcode}"))
        start = bad + 1
    total["seconds"] = time.monotonic() - t0
    return total


def _merge(total: dict, part: dict) -> None:
    for k in ("decoded", "rejected", "crash", "memory", "cases"):
        total[k] += part[k]
    total["times"] += part["times"]
    total["crashes"] += part["crashes"]
    total["seeds"] = part["seeds"]
    if part["max_ms"] > total["max_ms"]:
        total["max_ms"], total["max_ms_case"] = part["max_ms"], part["max_ms_case"]
    if part["rss_growth"] > total["rss_growth"]:
        total["rss_growth"], total["rss_case"] = part["rss_growth"], part["rss_case"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def main(argv=None) -> int:
    from compressors import CODECS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=12_000, help="total cases, split evenly over the targets")
    parser.add_argument("--targets", nargs="*", default=None,
                        help=f"codec names, <codec>{RESTORE} and/or {INPUT_TARGET} (default: every registered "
                             f"codec, every codec's restore, {INPUT_TARGET})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="no progress this long is a hang")
    parser.add_argument("--cap-mb", type=int, default=2048, help="per-process cap on new data mappings")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "CASE"), help="decode one case, show the outcome")
    args = parser.parse_args(argv)

    if args.replay:
        target, i = args.replay[0], int(args.replay[1])
        decode, rejection = decoder_for(target)
        kind, data = make_case(seeds_for(target), args.seed, target, i)
        print(f"{target} case {i} ({kind}, {len(data)} bytes): ", end="", flush=True)
        try:
            image = decode(data)
            print(f"decoded {image.shape}")
        except rejection as exc:
            print(f"rejected: {exc}")
        return 0

    restorers = [name + RESTORE for name, codec in sorted(CODECS.items()) if codec.restore_fn is not None]
    targets = args.targets or [*sorted(CODECS), *restorers, INPUT_TARGET]
    per_target = math.ceil(args.cases / len(targets))
    failures_dir = os.path.join(args.out, "fuzz-failures")
    rows = []
    for target in targets:
        t = run_target(target, per_target, args.seed, args.hang_seconds, args.cap_mb << 20, failures_dir)
        rows.append({
            "target": target, "seeds": t["seeds"], "cases": t["cases"], "decoded": t["decoded"],
            "rejected": t["rejected"], "crash": t["crash"], "memory": t["memory"], "hang": t["hang"],
            "p50_ms": round(percentile(t["times"], 0.5), 3), "p99_ms": round(percentile(t["times"], 0.99), 2),
            "max_ms": round(t["max_ms"], 1), "max_ms_case": t["max_ms_case"],
            "max_rss_growth_mb": round(t["rss_growth"] / 2**20, 1), "rss_case": t["rss_case"],
            "seconds": round(t["seconds"], 1),
        })
        for i, why in t["crashes"][:5] + t["hangs"][:5]:
            print(f"  {target} case {i}: {why}   (replay: python bench/fuzz.py --seed {args.seed} "
                  f"--replay {target} {i})")
        print(_format([rows[-1]], header=len(rows) == 1), flush=True)

    total = {k: sum(r[k] for r in rows) for k in ("cases", "decoded", "rejected", "crash", "memory", "hang")}
    print()
    print(_format(rows, header=True))
    print(f"total: {total['cases']:,} cases over {len(rows)} targets; {total['decoded']:,} decoded, "
          f"{total['rejected']:,} rejected, {total['crash']} crashes, {total['memory']} memory errors, "
          f"{total['hang']} hangs (seed {args.seed})")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fuzz.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return 1 if total["crash"] or total["memory"] or total["hang"] else 0


COLUMNS = ("target", "seeds", "cases", "decoded", "rejected", "crash", "memory", "hang", "p50_ms", "p99_ms",
           "max_ms", "max_rss_growth_mb", "seconds")


def _format(rows: list[dict], header: bool) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.rjust(widths[c]) for c in COLUMNS)] if header else []
    lines += ["  ".join(str(r[c]).rjust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
