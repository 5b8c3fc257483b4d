"""The training flow on real parts: crops read in Dask tasks, CPU fallback, GPU routing, model URLs."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from flows.compress import compress_collection
from flows.decompress import decompress_collection
from flows.params import CompressRequest, DecompressRequest, TrainRequest
from flows.runner import dask_runner
from flows.train import train_model
from tasks.report import read_reports
from tasks.training import sample_crops


@pytest.fixture(scope="module")
def train_images(tmp_path_factory):
    """Six small generated photos-like images (smooth gradients + texture), no ../shared needed."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:96, 0:120]
    for i in range(6):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 2 + 40 * i) % 256, (xx + yy) % 256], axis=-1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"img{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return str(root)


def test_sample_crops_is_seeded_and_skips_unreadable_files(train_images):
    files = tuple(sorted(os.listdir(train_images)))
    a = sample_crops(train_images, files, 2, 64, seed=3)
    b = sample_crops(train_images, files, 2, 64, seed=3)
    assert len(a) == 12 and all(c.shape == (64, 64, 3) for c in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def trained(prefect_server, dask_address, train_images, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("models"))
    request = TrainRequest(source=train_images, model_dest=dest, minutes=5, max_steps=3, crops=24, crop_size=64)
    return dest, train_model.with_options(task_runner=dask_runner(dask_address))(request)


def test_training_flow_publishes_safetensors_and_metadata(trained):
    dest, summary = trained
    mid = summary["model_id"]
    assert sorted(os.listdir(dest)) == [f"{mid}.json", f"{mid}.safetensors"]
    meta = json.load(open(os.path.join(dest, f"{mid}.json")))
    assert meta["model_id"] == mid and meta["training"]["steps"] == 3
    assert meta["training"]["device"].startswith("cpu")  # no GPU worker here: CPU fallback


def test_a_trained_model_by_url_compresses_and_decompresses(trained, dask_address, train_images, tmp_path):
    dest, summary = trained
    model_url = os.path.join(dest, f"{summary['model_id']}.safetensors")
    out = str(tmp_path / "out")
    run = compress_collection.with_options(task_runner=dask_runner(dask_address))(
        CompressRequest(source=train_images, dest=out, codec="autoencoder", quality=1, model=model_url, shard_size=4)
    )
    assert run["ok"] == 6 and run["errors"] == 1
    rows = [r for r in read_reports(out).to_pylist() if r["status"] == "ok"]
    assert {json.loads(r["params"])["model"] for r in rows} == {summary["model_id"]}
    decoded = decompress_collection.with_options(task_runner=dask_runner(dask_address))(
        DecompressRequest(source=os.path.join(out, "artifacts"), dest=str(tmp_path / "png"), model=model_url)
    )
    assert decoded["ok"] == 6 and decoded["errors"] == 0


def test_training_is_routed_to_a_gpu_worker_when_the_cluster_has_one(prefect_server, train_images, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, resources={"GPU": 1},
                      dashboard_address=":0", silence_logs=logging.WARNING) as cluster:
        request = TrainRequest(source=train_images, model_dest=str(tmp_path), minutes=5, max_steps=1, crops=16,
                               crop_size=64)
        summary = train_model.with_options(task_runner=dask_runner(cluster.scheduler_address))(request)
    # The worker advertises GPU=1 but this machine has no CUDA: the task ran there, on CPU.
    assert summary["steps"] == 1 and summary["device"].startswith("cpu")


def test_train_and_compress_with_the_model_on_s3(prefect_server, dask_address, s3_endpoint, s3_bucket,
                                                 train_images):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(train_images + "/", f"{s3_bucket}/train/", recursive=True)
    runner = dask_runner(dask_address)
    trained = train_model.with_options(task_runner=runner)(TrainRequest(
        source=f"{s3_bucket}/train", model_dest=f"{s3_bucket}/models", minutes=5, max_steps=2, crops=16,
        crop_size=64, endpoint_url=s3_endpoint,
    ))
    assert trained["model_url"] == f"{s3_bucket}/models/{trained['model_id']}.safetensors"
    assert fs.exists(f"{s3_bucket}/models/{trained['model_id']}.json")
    run = compress_collection.with_options(task_runner=runner)(CompressRequest(
        source=f"{s3_bucket}/train", dest=f"{s3_bucket}/out", codec="autoencoder", quality=2,
        model=trained["model_url"], endpoint_url=s3_endpoint,
    ))
    assert run["ok"] == 6 and run["errors"] == 1
