"""A Prefect API for the CLI: the one in ``PREFECT_API_URL``, or a local server it starts.

Dask worker processes inherit ``PREFECT_API_URL`` from the environment; without it each
worker would start its own temporary server (slow, measured in DESIGN.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def start_server(port: int | None = None, *, host: str = "127.0.0.1", env: dict | None = None, log=None):
    """Start ``prefect server start`` on loopback; return ``(process, api_url)`` once healthy."""
    port = port or free_port()
    api_url = f"http://{host}:{port}/api"
    server_env = {**os.environ, **(env or {}), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true")}
    server_env.pop("PREFECT_API_URL", None)
    # The UI calls the API from the browser; without this it assumes port 4200.
    server_env.setdefault("PREFECT_UI_API_URL", api_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=server_env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} while starting")
        if healthy(api_url):
            return proc, api_url
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"prefect server did not answer on {api_url} within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def prefect_api(echo=print):
    """Use ``PREFECT_API_URL`` when set; otherwise run a local server for the block's duration."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    echo("Starting a local Prefect server (set PREFECT_API_URL to use a running one) ...")
    proc, api_url = start_server()
    os.environ["PREFECT_API_URL"] = api_url  # for Dask worker processes
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):  # for this process
            yield api_url
            _drain_logs()
    finally:
        del os.environ["PREFECT_API_URL"]
        stop_server(proc)


def _drain_logs() -> None:
    """Send buffered run logs to the server before it stops."""
    from prefect.logging.handlers import APILogWorker  # noqa: PLC0415

    APILogWorker.drain_all(timeout=10)
