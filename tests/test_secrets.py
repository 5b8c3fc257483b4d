"""Credentials never leave the AWS chain: not in reports, manifests, markers, object names,
Prefect parameters, Prefect logs, Prefect artifacts, Dask logs or the console.

The run below uses distinctive dummy credentials (set before its Dask workers start, so
they really sign the requests: the proxy in front of moto sees the key id in every
``Authorization`` header) and then searches everything the run left behind.
"""

from __future__ import annotations

import io
import json
import logging
import time

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

import tasks.storage
from faultproxy import FaultProxy
from flows.params import CompressRequest
from reliability import make_collection, run_flow

KEY_ID = "AKIAIMGPRESSLEAK7Q2Z"
SECRET = "wJalrXUtnFEMI/imgpress+SECRET/do-not-leak-0Zx9"
TOKEN = "IQoJb3JpZ2luX2VjImgpressSessionTokenDoNotLeak=="
SECRETS = (KEY_ID, SECRET, TOKEN)


def leaks(text: str | bytes) -> list[str]:
    """Which secrets (or their distinctive cores) appear in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    cores = {KEY_ID: KEY_ID, SECRET: "imgpress+SECRET", TOKEN: "SessionTokenDoNotLeak"}
    return [name for name, core in cores.items() if name in text or core in text]


def _fresh_s3_clients():
    tasks.storage._fs.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    _fresh_s3_clients()
    yield
    _fresh_s3_clients()


def test_the_leak_check_finds_a_planted_secret():
    assert leaks(f"x {SECRET} y") == [SECRET]
    assert leaks(json.dumps({"k": KEY_ID}).encode()) == [KEY_ID]


def _prefect_records(flow_run_id) -> tuple[dict[str, str], set, set]:
    """Everything the Prefect API holds about one flow run, as JSON text per kind.

    Also the ids of its task runs, and of the task runs that have logs so far.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs, offset = [], 0
        while True:
            page = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200,
                                    offset=offset)
            logs += page
            offset += len(page)
            if len(page) < 200:
                break
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {
        "flow run": flow_run.model_dump_json(),
        "flow run parameters": json.dumps(flow_run.parameters, default=str),
        "task runs": "\n".join(t.model_dump_json() for t in task_runs),
        "logs": "\n".join(log.model_dump_json() for log in logs),
        "artifacts": "\n".join(a.model_dump_json() for a in artifacts),
    }, {t.id for t in task_runs}, {log.task_run_id for log in logs if log.task_run_id}


def test_credentials_appear_in_nothing_a_run_leaves_behind(
    prefect_server, s3_endpoint, s3_bucket, secret_env, tmp_path, capfd
):
    from distributed import Client, LocalCluster
    from prefect.logging.handlers import APILogWorker

    rels = make_collection(str(tmp_path / "src"), 6, size=32, seed=21)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = s3_bucket.removeprefix("s3://")
    for rel in rels:
        s3.upload_file(str(tmp_path / "src" / rel), bucket, f"in/{rel}")
    s3.put_object(Bucket=bucket, Key="in/broken.png", Body=b"\x89PNG\r\n\x1a\ncut short")  # an error row and log

    with FaultProxy(s3_endpoint) as proxy, LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.WARNING
    ) as cluster, Client(cluster.scheduler_address) as client:
        proxy.enabled = False  # a plain pass-through that records who signed the requests
        request = CompressRequest(source=f"{s3_bucket}/in", dest=f"{s3_bucket}/out", codec="jpeg", shard_size=3,
                                  endpoint_url=proxy.url)
        state = run_flow(request, cluster.scheduler_address, return_state=True)
        summary = state.result()
        worker_logs = json.dumps(client.get_worker_logs(), default=str)
        scheduler_logs = json.dumps(client.get_scheduler_logs(), default=str)
    assert summary["images"] == len(rels) + 1 and summary["errors"] == 1
    assert any(a.startswith(KEY_ID + "/") for a in proxy.authorizations), proxy.authorizations  # really used

    found: dict[str, list[str]] = {}

    def check(where: str, text) -> None:
        if hits := leaks(text):
            found[where] = hits

    # everything under the bucket: object names, and contents (Parquet decoded, not searched compressed)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    keys = fs.find(s3_bucket)
    assert any(k.endswith(".parquet") for k in keys) and any("/runs/" in k for k in keys)
    for key in keys:
        check(f"object name {key}", key)
        blob = fs.cat_file(key)
        if key.endswith(".parquet"):
            check(f"report {key}", json.dumps(pq.read_table(io.BytesIO(blob)).to_pylist(), default=str))
        else:
            check(f"object {key}", blob)

    APILogWorker.drain_all(timeout=10)
    flow_run_id = state.state_details.flow_run_id
    deadline = time.monotonic() + 20
    while True:  # worker processes send their logs in batches: wait until every task run's are in
        records, task_runs, logged = _prefect_records(flow_run_id)
        if task_runs <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # plan, finish, run report (shards are plain Dask tasks: their logs are the Dask logs below)
    assert len(task_runs) >= 3 and task_runs <= logged, (len(task_runs), len(logged))
    for where, text in records.items():
        check(f"prefect {where}", text)
    check("flow state", state.model_dump_json())
    check("dask worker logs", worker_logs)
    check("dask scheduler logs", scheduler_logs)
    out, err = capfd.readouterr()
    # Whatever the run printed here. (Shards are plain Dask tasks, so their workers print no
    # Prefect task-run lines any more; the run's logs are the API's, searched above.)
    check("stdout", out)
    check("stderr", err)
    assert not found, f"credentials leaked into: {found}"
