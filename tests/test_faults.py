"""Injected faults: flaky object storage, a worker killed mid-run, a destination that refuses writes.

The storage faults come from :mod:`faultproxy` in front of moto's real S3 server: 500s,
503 throttles, dropped connections (before and after the store acted), cut-off bodies
and slow answers, seeded and bounded. Each test ends with the same check: every image
has exactly one row, and every artifact the report names exists whole.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path

import boto3
import pytest

from faultproxy import FaultProxy
from flows.params import CompressRequest
from reliability import assert_nothing_lost, make_collection, run_flow
from tasks.layout import finished_shards
from tasks.plan import finish_run, prepare_run
from tasks.layout import report_folder
from tasks.report import read_reports
from tasks.shard import SourceError, compress_shard
from tasks.storage import DestinationError, Storage

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
FIGURES: dict[str, object] = {}  # printed at the end of the module for the README


@pytest.fixture(scope="module", autouse=True)
def print_figures():
    yield
    if FIGURES:
        print("\nfault figures:", FIGURES)


def _upload(local_root: str, bucket: str, endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for dirpath, _, files in os.walk(local_root):
        for name in files:
            path = os.path.join(dirpath, name)
            key = "in/" + os.path.relpath(path, local_root).replace(os.sep, "/")
            s3.upload_file(path, bucket.removeprefix("s3://"), key)


def test_flaky_s3_is_retried_and_the_run_loses_nothing(prefect_server, dask_address, s3_endpoint, s3_bucket, tmp_path):
    rels = make_collection(str(tmp_path / "src"), 12, size=64, seed=7)
    _upload(str(tmp_path / "src"), s3_bucket, s3_endpoint)
    with FaultProxy(s3_endpoint, seed=11, cover_all=True) as proxy:
        request = CompressRequest(source=f"{s3_bucket}/in", dest=f"{s3_bucket}/out", codec="jpeg", quality=70,
                                  shard_size=3, endpoint_url=proxy.url)
        t0 = time.monotonic()
        summary = run_flow(request, dask_address)
        elapsed = time.monotonic() - t0
    faults = {k: v for k, v in proxy.counts.items() if k not in ("requests",)}
    FIGURES["s3 faults"] = {"requests": proxy.counts["requests"], **faults, "seconds": round(elapsed, 1)}
    assert summary["images"] == len(rels) and summary["errors"] == 0
    assert proxy.faults >= 10 and all(proxy.counts[k] >= 1 for k in proxy.rates), proxy.counts
    assert proxy.counts["upstream_errors"] == 0
    # checked straight against moto, not through the proxy
    assert_nothing_lost(f"{s3_bucket}/out", rels, storage=Storage(endpoint_url=s3_endpoint))


def test_every_kind_of_storage_fault_is_survived_by_the_shard_functions(s3_endpoint, s3_bucket, tmp_path):
    """A harsher mix (about half of all requests), straight through the plain functions."""
    rels = make_collection(str(tmp_path / "src"), 6, size=32, seed=8)
    _upload(str(tmp_path / "src"), s3_bucket, s3_endpoint)
    rates = {"500": 0.1, "503": 0.08, "drop": 0.1, "drop_after": 0.1, "truncate": 0.08, "slow": 0.06}
    with FaultProxy(s3_endpoint, seed=3, rates=rates, slow_s=(0.05, 0.3), cover_all=True) as proxy:
        storage = Storage(endpoint_url=proxy.url)
        plan = prepare_run(f"{s3_bucket}/in", f"{s3_bucket}/out", "jpeg", {"quality": 70}, shard_size=2,
                           storage=storage)
        summaries = [compress_shard(spec) for spec in plan.specs]
        finish_run(plan, summaries, storage)
    FIGURES["harsh s3 faults"] = dict(proxy.counts)
    assert all(proxy.counts[k] >= 1 for k in rates), proxy.counts
    assert_nothing_lost(f"{s3_bucket}/out", rels, storage=Storage(endpoint_url=s3_endpoint))


def test_a_worker_killed_mid_run_is_survived_or_resumed_cleanly(prefect_server, tmp_path):
    from distributed import Client, LocalCluster

    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    rels = make_collection(source, 24, size=128, seed=9)
    request = CompressRequest(source=source, dest=dest, codec="jpeg", quality=70, shard_size=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster.scheduler_address) as client:
        killed: dict[str, int] = {}
        stop = threading.Event()

        def kill_a_busy_worker_after_the_first_marker():
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                runs = os.path.join(dest, "runs")
                marked = os.path.isdir(runs) and any(
                    finished_shards(dest, r) for r in os.listdir(runs)
                )
                busy = [w for w, keys in client.processing().items() if keys] if marked else []
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed[busy[0]] = pid
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_a_busy_worker_after_the_first_marker, daemon=True)
        killer.start()
        try:
            summary = run_flow(request, cluster.scheduler_address)
            outcome = "the flow completed"
        except Exception as exc:  # noqa: BLE001  (the known Prefect+Dask behaviour: then a re-run must finish)
            outcome = f"the flow failed ({type(exc).__name__}); a re-run completed"
            summary = None
        finally:
            stop.set()
            killer.join(timeout=30)
        assert killed, "no worker was killed: the run finished before the first marker was seen"
        if summary is None or summary["images"] + summary["images_skipped_as_done"] < len(rels):
            summary = run_flow(request, cluster.scheduler_address)
    FIGURES["worker killed"] = outcome
    assert_nothing_lost(dest, rels)


def test_an_unwritable_local_destination_is_a_clear_error_and_marks_nothing(
    prefect_server, dask_address, sample_collection, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"a file where the destination folder should be")
    dest = str(blocker / "out")  # unwritable for root too: its parent is a file
    request = CompressRequest(source=sample_collection, dest=dest, codec="jpeg", shard_size=4)
    with pytest.raises(DestinationError, match=r"destination .*a-file/out cannot be written .*Not a directory"):
        run_flow(request, dask_address)
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


@pytest.mark.skipif(IS_ROOT, reason="root writes through mode 0555; the file-as-parent case covers root")
def test_a_read_only_destination_folder_is_a_clear_error(sample_collection, tmp_path):
    dest = tmp_path / "read-only"
    dest.mkdir()
    dest.chmod(0o555)
    try:
        with pytest.raises(DestinationError, match="Permission denied"):
            prepare_run(sample_collection, str(dest), "jpeg", {"quality": 75})
        assert os.listdir(dest) == []
    finally:
        dest.chmod(0o755)


def test_a_destination_bucket_that_does_not_exist_is_a_clear_error(
    prefect_server, dask_address, s3_endpoint, sample_collection
):
    dest = f"s3://imgpress-no-such-bucket-{os.getpid()}/out"
    request = CompressRequest(source=sample_collection, dest=dest, codec="jpeg", shard_size=4,
                              endpoint_url=s3_endpoint)
    with pytest.raises(DestinationError, match=r"cannot be written.*bucket does not exist"):
        run_flow(request, dask_address)
    names = [b["Name"] for b in boto3.client("s3", endpoint_url=s3_endpoint).list_buckets()["Buckets"]]
    assert dest.split("/")[2] not in names


def test_a_destination_that_fails_midway_leaves_no_marker_and_a_rerun_completes(sample_collection, tmp_path):
    from imgpress.demo import SAMPLES

    dest = str(tmp_path / "out")
    plan = prepare_run(sample_collection, dest, "jpeg", {"quality": 75}, shard_size=20)
    (spec,) = plan.specs
    reports = Path(report_folder(dest, plan.run_id))
    reports.parent.mkdir(parents=True, exist_ok=True)
    reports.write_bytes(b"a file where the report folder should be")
    with pytest.raises(DestinationError, match=r"cannot write .*\.parquet"):
        compress_shard(spec)
    assert finished_shards(dest, plan.run_id) == []  # nothing presented as complete ...
    assert len(read_reports(dest)) == 0
    assert os.path.isdir(tmp_path / "out" / "artifacts" / plan.run_id)  # ... though artifacts were written

    reports.unlink()  # the destination is fixed; run again
    again = prepare_run(sample_collection, dest, "jpeg", {"quality": 75}, shard_size=20)
    finish_run(again, [compress_shard(s) for s in again.specs])
    assert_nothing_lost(dest, sorted([*SAMPLES, "misc/truncated.png"]))


def test_a_source_read_that_fails_for_storage_reasons_fails_the_shard_not_the_image(
    sample_collection, tmp_path, monkeypatch
):
    """An outage must not turn good images into final error rows; a file's own problem must."""
    import botocore.exceptions

    import tasks.shard

    dest = str(tmp_path / "out")
    plan = prepare_run(sample_collection, dest, "jpeg", {"quality": 75}, shard_size=20)
    (spec,) = plan.specs
    real = tasks.shard.read_bytes
    victim = spec.files[3][0]
    for failure in (botocore.exceptions.ConnectionClosedError(endpoint_url="http://s3"),
                    OSError(errno.EIO, "Input/output error")):
        def flaky(url, storage, *, max_bytes=None, failure=failure):
            if url.endswith(victim):
                raise failure
            return real(url, storage, max_bytes=max_bytes)

        monkeypatch.setattr(tasks.shard, "read_bytes", flaky)
        with pytest.raises(SourceError, match=f"cannot read .*{victim}"):
            compress_shard(spec)
        assert finished_shards(dest, plan.run_id) == [] and len(read_reports(dest)) == 0

    def locked(url, storage, *, max_bytes=None):
        if url.endswith(victim):
            raise PermissionError(errno.EACCES, "Permission denied", url)
        return real(url, storage, max_bytes=max_bytes)

    monkeypatch.setattr(tasks.shard, "read_bytes", locked)
    compress_shard(spec)
    row = next(r for r in read_reports(dest).to_pylist() if r["source"] == victim)
    assert row["status"] == "error" and row["error"] == "cannot read: Permission denied"


@pytest.mark.parametrize(
    "failures, expected_calls, outcome",
    [
        ([ConnectionError("dropped")], 2, "ok"),  # transient: retried, then done
        ([ConnectionError("x"), SourceError("y")], 3, "ok"),  # a storage outage twice: still retried
        ([ConnectionError("x")] * 3, 3, ConnectionError),  # still failing after the last delay: raised
        ([DestinationError("refused")], 1, DestinationError),  # permanent: not retried
        ([ValueError("bad config")], 1, ValueError),
    ],
)
def test_the_shard_dask_task_retries_transient_failures_only(monkeypatch, failures, expected_calls, outcome):
    # The compress flow sends compress_shard_retrying to Dask as a plain task: it carries the
    # retry policy the Prefect task wrappers have (tasks.prefect_tasks.RETRIES).
    import tasks.shard as shard_module
    from tasks.shard import compress_shard_retrying

    calls = []

    def flaky(spec):
        calls.append(spec)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return {"ok": 1}

    monkeypatch.setattr(shard_module, "compress_shard", flaky)
    if outcome == "ok":
        assert compress_shard_retrying("spec", delays=(0.0, 0.0)) == {"ok": 1}
    else:
        with pytest.raises(outcome):
            compress_shard_retrying("spec", delays=(0.0, 0.0))
    assert len(calls) == expected_calls
