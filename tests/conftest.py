"""Real parts for the tests: a Prefect server, a Dask cluster, an S3 endpoint, all on loopback.

Each is started once per session (the Prefect server takes ~20 s to answer here).
Nothing here needs ../shared: test images come from scikit-image or are generated.
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

# Dummy credentials for moto, set before anything (Dask workers included) starts, so no
# test can ever reach a real AWS account.
os.environ.update(
    AWS_ACCESS_KEY_ID="imgpress-test-key-id",
    AWS_SECRET_ACCESS_KEY="imgpress-test-secret-key",
    AWS_DEFAULT_REGION="us-east-1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
)
os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on a free loopback port with its own database.

    Yields the API URL; ``PREFECT_API_URL`` is set for this process and every process
    it starts (Dask workers), so flows and workers all talk to this one server.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from imgpress.prefect_api import start_server, stop_server

    home = tmp_path_factory.mktemp("prefect-home")
    log = open(home / "server.log", "wb")
    proc, api_url = start_server(env={"PREFECT_HOME": str(home)}, log=log)
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings({PREFECT_API_URL: api_url, PREFECT_HOME: str(home)}):
            yield api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        stop_server(proc)
        log.close()


@pytest.fixture(scope="session")
def dask_address(prefect_server):
    """A real Dask LocalCluster (2 worker processes) that flows reach by address."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.WARNING
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port: a real HTTP S3 API for s3fs."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket (created with botocore: s3fs's mkdir sends a LocationConstraint moto rejects)."""
    import boto3

    name = "imgpress-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{free_port()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def sample_collection(tmp_path_factory):
    """A small mixed collection (nested folders, PNG/JPEG, gray, RGBA, one truncated file)."""
    from imgpress.demo import build_demo_collection

    return build_demo_collection(str(tmp_path_factory.mktemp("collection")))


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="imgpress-test-") as d:
        yield d
