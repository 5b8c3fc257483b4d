"""Pipeline overhead: the Prefect + Dask flow against plain loops over the same shards.

For N generated images (default 100, 1,000 and 10,000) it times, on the same cores:
  - ``flow``: ``compress_collection`` on an already running LocalCluster (one
    single-threaded worker process per core) and a running Prefect server;
  - ``pool``: the same ``compress_shard`` calls in a ``multiprocessing.Pool`` with one
    process per core (no Prefect, no Dask): the anchor;
  - ``loop``: the same calls in one plain loop (one core, its own process), for N <= 1,000.
Target: flow / pool wall time <= 1.15 at 1,000 and 10,000 images with the default shard
size. Also per-image cost (should be flat in N), the flow process's memory (this process
runs the flow and nothing else: its RSS after each size and its peak) and the Dask workers'
(current and peak), and the CPU seconds each side spent: the Dask workers, this process
(scheduler, Prefect client, plan) and the Prefect server during a flow run, the pool's
processes during a pool run. Each size's images and outputs are deleted once measured.

On a machine other work shares, ``--repeats R`` runs flow and pool R times each, in
alternating order (flow, pool, pool, flow, ...), and reports the median times and the median
of the R paired ratios (all R ratios in ``ratios``): a load that changes during a size then
weighs on both halves alike.

    python bench/pipeline.py [--sizes 100 1000 10000] [--codec kmeans] [--repeats 1] [--out bench/out]
    python bench/pipeline.py --codec jpeg --sizes 1000 10000 100000 --pool-up-to 10000 --image-size 64
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compressors import get_codec  # noqa: E402
from tasks.plan import prepare_run  # noqa: E402
from tasks.shard import compress_shard  # noqa: E402


def make_images(root: Path, n: int, size: int = 128, seed: int = 0) -> None:
    """Natural-ish test images: smooth gradients, a few discs and noise, PNG, in folders of 500."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0.2, 2.0, 3)
        img = np.stack([xx * a, yy * b, (xx + yy) * c / 2], -1) % 256
        for _ in range(3):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(8, size / 3)]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[mask] = rng.uniform(0, 255, 3)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        folder = root / f"part{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:06d}.png", compress_level=1)


def worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s(processes) -> float:
    """User + system CPU seconds of these processes so far (psutil; gone ones count 0)."""
    import psutil  # noqa: PLC0415

    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def flow_on(address):
    """The compress flow on the cluster at ``address``, built once as ``imgpress compress`` builds
    it (while its Prefect server starts): ``with_options`` rebuilds the flow's parameter schema
    (0.1-0.7 s here), a cost of the bench's setup, not of a run."""
    from flows.compress import compress_collection
    from flows.runner import dask_runner

    return compress_collection.with_options(task_runner=dask_runner(address))


def time_flow(source, dest, codec, params, shard_size, flow):
    from flows.params import CompressRequest

    req = CompressRequest(source=source, dest=dest, codec=codec, shard_size=shard_size, **params)
    t0 = time.perf_counter()
    summary = flow(req)
    return time.perf_counter() - t0, summary


def time_plain(source, dest, codec, params, shard_size, pool=None):
    """``prepare_run`` + every shard, in a warm process pool (or in the calling process)."""
    canonical = get_codec(codec).canonical_params(params)
    t0 = time.perf_counter()
    plan = prepare_run(source, dest, codec, canonical, shard_size=shard_size)
    if pool is not None:
        results = pool.map(compress_shard, plan.specs, chunksize=1)
    else:
        results = [compress_shard(s) for s in plan.specs]
    return time.perf_counter() - t0, sum(r["ok"] for r in results)


def _time_loop(args):
    """The plain loop, run in a process of its own so the flow's process holds only the flow."""
    return time_plain(*args)


def _warm(_=None):
    """The same head start for the pool's processes and the Dask workers: imports paid and
    the compiled SSIM kernel loaded (each process's first ssim() call loads it, ~1 s)."""
    import compressors  # noqa: F401
    import tasks.shard  # noqa: F401
    from compressors.metrics import ssim

    ssim(np.zeros((16, 16, 3), np.uint8), np.ones((16, 16, 3), np.uint8))
    return os.getpid()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--codec", default="kmeans")
    p.add_argument("--colors", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=None, help="default: the flow's own default")
    p.add_argument("--image-size", type=int, default=128, help="side of the generated images (px)")
    p.add_argument("--pool-up-to", type=int, default=10_000, help="run the pool anchor only up to this N")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=1,
                   help="flow and pool this many times each per size (up to --pool-up-to), alternating; medians")
    p.add_argument("--out", default="bench/out")
    args = p.parse_args()
    params = {"colors": args.colors} if args.codec == "kmeans" else {}
    if args.shard_size is None:
        from flows.params import CompressRequest

        args.shard_size = CompressRequest.model_fields["shard_size"].default
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from distributed import Client

    from flows.runner import local_cluster
    from imgpress.prefect_api import prefect_api

    import psutil

    me = psutil.Process()
    rows = []
    with prefect_api(echo=print), tempfile.TemporaryDirectory() as tmp:
        server = me.children(recursive=True)  # the private Prefect server, if this bench started one
        t0 = time.perf_counter()
        cluster = local_cluster(args.workers)  # the cluster `imgpress compress` starts
        cluster_start = time.perf_counter() - t0
        flow = flow_on(cluster.scheduler_address)
        client = Client(cluster)
        # The anchor gets the same head start as the cluster: processes started and imports paid.
        pool = mp.get_context("spawn").Pool(args.workers)
        pool.map(_warm, range(args.workers * 4))
        loop = mp.get_context("spawn").Pool(1)
        loop.apply(_warm)
        client.run(_warm)
        # CPU per side: where a flow's extra time goes (its workers, its own process, the server)
        workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        pool_procs = [psutil.Process(pid) for pid in set(pool.map(_warm, range(args.workers * 4)))]
        for n in args.sizes:
            src = Path(tmp) / f"src{n}"
            make_images(src, n, args.image_size)
            # On disk before any clock starts, as a real collection is: freshly written sources left
            # dirty in the page cache are flushed inside the timed runs (by writeback, and by the
            # artifacts' fsyncs under ext4's data=ordered), more of them the larger the collection.
            os.sync()
            load = os.getloadavg()[0]
            rounds = args.repeats if n <= args.pool_up_to else 1
            flows, pools, ratios, summary = [], [], [], None
            cpu = {"worker_cpu_s": [], "flow_process_cpu_s": [], "server_cpu_s": [], "pool_cpu_s": []}
            for r in range(rounds):
                order = ("flow", "pool") if r % 2 == 0 else ("pool", "flow")
                for part in order:
                    if part == "flow":
                        before = cpu_s(workers), cpu_s([me]), cpu_s(server)
                        flow_s, summary = time_flow(str(src), f"{tmp}/flow{n}-{r}", args.codec, params,
                                                    args.shard_size, flow)
                        flows.append(flow_s)
                        for key, procs, b in zip(("worker_cpu_s", "flow_process_cpu_s", "server_cpu_s"),
                                                 (workers, [me], server), before):
                            cpu[key].append(cpu_s(procs) - b)
                        flow_rss = rss_mb()
                        assert summary["ok"] == n, summary
                    elif n <= args.pool_up_to:
                        before = cpu_s(pool_procs)
                        pool_s, pool_ok = time_plain(str(src), f"{tmp}/pool{n}-{r}", args.codec, params,
                                                     args.shard_size, pool)
                        pools.append(pool_s)
                        cpu["pool_cpu_s"].append(cpu_s(pool_procs) - before)
                        assert pool_ok == n, pool_ok
                for part in ("flow", "pool"):
                    shutil.rmtree(f"{tmp}/{part}{n}-{r}", ignore_errors=True)
                os.sync()  # and this round's writes and removals flushed before the next round's clock
                if pools:
                    ratios.append(flows[-1] / pools[-1])
            loop_s = loop.apply(_time_loop, ((str(src), f"{tmp}/loop{n}", args.codec, params,
                                               args.shard_size),))[0] if n <= 1000 else float("nan")
            worker_peak = max(client.run(worker_peak_rss_mb).values())
            worker_now = max(client.run(rss_mb).values())
            flow_s = float(np.median(flows))
            pool_s = float(np.median(pools)) if pools else float("nan")
            rows.append({
                "images": n, "codec": args.codec, "shard_size": args.shard_size, "workers": args.workers,
                "image_px": args.image_size, "repeats": rounds,
                "flow_s": round(flow_s, 2), "pool_s": round(pool_s, 2), "loop_s": round(loop_s, 2),
                "flow_over_pool": round(float(np.median(ratios)), 3) if ratios else float("nan"),
                "ratios": "/".join(f"{x:.2f}" for x in ratios),
                "flow_ms_per_image": round(flow_s / n * 1e3, 2), "pool_ms_per_image": round(pool_s / n * 1e3, 2),
                "flow_rss_mb": round(flow_rss, 1), "flow_peak_rss_mb": round(worker_peak_rss_mb(), 1),
                "worker_rss_mb": round(worker_now, 1), "worker_peak_rss_mb": round(worker_peak, 1),
                **{key: round(float(np.median(v)), 2) if v else float("nan") for key, v in cpu.items()},
                "load_avg": round(load, 1), "load_avg_end": round(os.getloadavg()[0], 1),
            })
            print(rows[-1], flush=True)
            write_csv(out / "pipeline.csv", rows)  # after every size: a long run stopped early keeps its rows
            for part in ("src", "loop"):  # keep the disk use of a 100k run sane
                shutil.rmtree(f"{tmp}/{part}{n}", ignore_errors=True)
        pool.close()
        loop.close()
        client.close()
        cluster.close()

    keys = list(rows[0])
    print(f"\nLocalCluster start: {cluster_start:.1f} s (not in flow_s); cores: {os.cpu_count()}")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    print(f"wrote {out / 'pipeline.csv'}")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
