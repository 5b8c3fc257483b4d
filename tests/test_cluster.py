"""The multi-machine path exactly as the README documents it, on one machine.

Separate processes, as on separate machines: a `prefect server` (the session fixture), a
`dask scheduler`, two `dask worker`s (one advertising `--resources GPU=1`, as a GPU
machine would), and the `imgpress` CLI pointed at the scheduler with `--dask-address`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import free_port
from _subprocesses import background, process_env, tail, wait_until



@pytest.fixture(scope="module")
def cluster(prefect_server, tmp_path_factory):
    """`dask scheduler` + a CPU worker + a GPU=1 worker, each its own process group."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("cluster")
    env = process_env(logs, PREFECT_API_URL=prefect_server)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    with background([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                    env, logs / "scheduler.log") as scheduler:
        wait_until(lambda: Client(address, timeout=2).close() or True, 120, "the scheduler", logs / "scheduler.log",
                   scheduler)
        worker = [*dask, "worker", address, "--nthreads", "1", "--dashboard-address", ":0"]
        with background([*worker, "--name", "cpu-worker"], env, logs / "cpu.log"), \
                background([*worker, "--name", "gpu-worker", "--resources", "GPU=1"], env, logs / "gpu.log"):
            with Client(address, timeout=10) as client:
                client.wait_for_workers(2, timeout=180)
                names = {w["name"]: w.get("resources", {}) for w in client.scheduler_info()["workers"].values()}
            assert names == {"cpu-worker": {}, "gpu-worker": {"GPU": 1}}, names
            yield address, env, logs


def imgpress(*args: str, env: dict, logs, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "imgpress.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"imgpress {' '.join(args)}:\n{proc.stdout}\n{proc.stderr[-4000:]}\n" + "".join(
        f"--- {name}\n{tail(logs / name, 2000)}" for name in ("scheduler.log", "cpu.log", "gpu.log"))
    return proc


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:96, 0:120]
    for i in range(6):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + 40 * i) % 256, (xx + yy) % 256], axis=-1)
        Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)).save(
            root / f"img{i}.png")
    return root


def test_compress_runs_on_the_separate_cluster_by_its_address(cluster, images, tmp_path):
    address, env, logs = cluster
    proc = imgpress("compress", str(images), str(tmp_path / "out"), "--codec", "jpeg", "--shard-size", "2",
                    "--dask-address", address, "--json", env=env, logs=logs)
    summary = json.loads(proc.stdout)
    assert summary["ok"] == 6 and summary["errors"] == 0 and summary["shards"] == 3


def test_training_runs_on_the_gpu_worker(cluster, images, tmp_path):
    address, env, logs = cluster
    proc = imgpress("train", str(images), str(tmp_path / "models"), "--max-steps", "1", "--crops", "16",
                    "--crop-size", "64", "--dask-address", address, env=env, logs=logs)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["worker"] == "gpu-worker"  # routed by the GPU resource, not by chance of placement
    assert result["steps"] == 1 and result["device"].startswith("cpu")  # no CUDA on this machine
    assert (tmp_path / "models" / f"{result['model_id']}.safetensors").exists()
