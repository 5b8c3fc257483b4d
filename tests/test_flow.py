"""The spine end to end: a real Prefect server, a real Dask cluster, local folders and S3."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from compressors import get_codec
from compressors.imageio import decode_image
from compressors.metrics import psnr, ssim
from flows.compress import compress_collection
from flows.decompress import decompress_collection
from flows.params import CompressRequest, DecompressRequest
from flows.runner import dask_runner
from imgpress.demo import SAMPLES
from tasks.layout import report_folder
from tasks.report import COLUMNS, read_reports
from tasks.storage import Storage

REQUIRED = (
    "run_id source codec params status error width height channels source_bytes artifact artifact_bytes "
    "bpp compression_ratio psnr ssim encode_ms decode_ms"
).split()


def run(request, dask_address):
    return compress_collection.with_options(task_runner=dask_runner(dask_address))(request)


@pytest.fixture(scope="module")
def jpeg_run(prefect_server, dask_address, sample_collection, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("dest"))
    request = CompressRequest(source=sample_collection, dest=dest, codec="jpeg", quality=60, shard_size=3)
    return request, run(request, dask_address)


def test_every_image_gets_exactly_one_row_and_the_bad_one_is_an_error_row(jpeg_run):
    request, summary = jpeg_run
    rows = read_reports(request.dest).to_pylist()
    assert sorted(r["source"] for r in rows) == sorted([*SAMPLES, "misc/truncated.png"])
    bad = [r for r in rows if r["status"] != "ok"]
    assert [r["source"] for r in bad] == ["misc/truncated.png"]
    assert "truncated" in bad[0]["error"] or "corrupt" in bad[0]["error"]
    assert summary["ok"] == len(SAMPLES) and summary["errors"] == 1
    assert set(REQUIRED) <= set(COLUMNS)


def test_report_numbers_come_from_the_real_artifacts(jpeg_run):
    request, _ = jpeg_run
    for row in read_reports(request.dest).to_pylist():
        if row["status"] != "ok":
            continue
        blob = open(row["artifact"], "rb").read()
        assert len(blob) == row["artifact_bytes"]
        assert row["bpp"] == pytest.approx(len(blob) * 8 / (row["width"] * row["height"]))
        src_bytes = open(os.path.join(request.source, row["source"]), "rb").read()
        assert row["compression_ratio"] == pytest.approx(len(src_bytes) / len(blob))
        source = decode_image(src_bytes).image
        decoded = get_codec("jpeg").decode(blob)
        assert row["psnr"] == pytest.approx(psnr(source, decoded), abs=1e-9)
        assert row["ssim"] == pytest.approx(ssim(source, decoded), abs=1e-9)
        assert row["encode_ms"] > 0 and row["decode_ms"] > 0


def test_artifacts_mirror_the_source_tree_and_a_manifest_is_written(jpeg_run):
    request, summary = jpeg_run
    run_id = summary["run_id"]
    for rel in SAMPLES:
        assert os.path.isfile(os.path.join(request.dest, "artifacts", run_id, rel + ".jpg"))
    manifest = json.load(open(os.path.join(request.dest, "runs", run_id, "manifest.json")))
    assert manifest["status"] == "completed" and manifest["params"] == {"quality": 60}
    assert manifest["versions"]["prefect"].startswith("3.8")
    parquet = report_folder(request.dest, run_id)
    assert all(pq.read_schema(os.path.join(parquet, f)).names == list(COLUMNS) for f in os.listdir(parquet))


def test_rerun_of_a_finished_run_skips_every_shard(jpeg_run, dask_address):
    request, first = jpeg_run
    again = run(request, dask_address)
    assert again["run_id"] == first["run_id"]
    assert again["images"] == 0 and again["images_skipped_as_done"] == first["images"]
    assert len(read_reports(request.dest)) == first["images"]


def test_decompress_round_trips_every_artifact_to_png(jpeg_run, dask_address, tmp_path):
    request, summary = jpeg_run
    artifacts = os.path.join(request.dest, "artifacts", summary["run_id"])
    out = str(tmp_path / "decoded")
    state = decompress_collection.with_options(task_runner=dask_runner(dask_address))(
        DecompressRequest(source=artifacts, dest=out, shard_size=4), return_state=True
    )
    result = state.result()
    assert result == {"images": len(SAMPLES), "ok": len(SAMPLES), "errors": 0, "error_rows": []}
    # Shards ran as plain Dask tasks (no Prefect task run each); the run page has a progress bar at 100 %.
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert [(a.type, a.data) for a in arts] == [("progress", 100.0)] and task_runs == []
    png = decode_image(open(os.path.join(out, "photos/astronaut.png"), "rb").read()).image
    jpg = get_codec("jpeg").decode(open(os.path.join(artifacts, "photos/astronaut.png.jpg"), "rb").read())
    np.testing.assert_array_equal(png, jpg)


def test_compress_reads_and_writes_s3_on_a_real_endpoint(prefect_server, dask_address, s3_endpoint, s3_bucket,
                                                          sample_collection):
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(sample_collection + "/", f"{s3_bucket}/in/", recursive=True)
    source, dest = f"{s3_bucket}/in", f"{s3_bucket}/out"
    summary = run(
        CompressRequest(source=source, dest=dest, codec="webp", quality=50, shard_size=5, endpoint_url=s3_endpoint),
        dask_address,
    )
    assert summary["ok"] == len(SAMPLES) and summary["errors"] == 1
    table = read_reports(dest, Storage(endpoint_url=s3_endpoint))
    assert len(table) == len(SAMPLES) + 1
    row = next(r for r in table.to_pylist() if r["source"] == "photos/coffee.png")
    assert row["artifact"].startswith(f"{s3_bucket}/out/artifacts/")
    blob = fs.cat_file(row["artifact"])
    assert len(blob) == row["artifact_bytes"] and blob[8:12] == b"WEBP"
    assert fs.exists(f"{dest}/runs/{summary['run_id']}/manifest.json")


def test_a_changed_codec_config_is_a_new_run_beside_the_old_one(jpeg_run, dask_address):
    request, first = jpeg_run
    other = run(request.with_codec_params(quality=30), dask_address)
    assert other["run_id"] != first["run_id"]
    runs = {r["run_id"] for r in read_reports(request.dest).to_pylist()}
    assert runs == {first["run_id"], other["run_id"]}


def test_cli_report_answers_from_parquet(jpeg_run):
    request, summary = jpeg_run
    out = subprocess.run(
        [sys.executable, "-m", "imgpress.cli", "report", request.dest, "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    rows = {r["run_id"]: r for r in json.loads(out.stdout)}
    mine = rows[summary["run_id"]]
    assert mine["codec"] == "jpeg" and mine["images"] == len(SAMPLES) + 1 and mine["errors"] == 1
    assert mine["mean_psnr"] == pytest.approx(summary["mean_psnr"])


def _periodic_callbacks(dask_worker) -> list[str]:
    return sorted(dask_worker.periodic_callbacks)


def test_the_local_cluster_runs_its_workers_without_the_stack_sampling_profiler():
    """The cluster `imgpress compress` and the flows start themselves: no 10-ms stack sampling
    beside the shards (README, pipeline overhead), the rest of the worker as Dask makes it."""
    from distributed import Client

    from flows.runner import local_cluster

    with local_cluster(1) as cluster, Client(cluster) as client:
        callbacks = client.run(_periodic_callbacks)
    (names,) = callbacks.values()
    assert "heartbeat" in names and "memory_monitor" in names, names
    assert not {"profile", "profile-cycle"} & set(names), names
