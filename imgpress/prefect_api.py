"""A Prefect API for the CLI: the one in ``PREFECT_API_URL``, or a local server it starts.

Dask worker processes inherit ``PREFECT_API_URL`` from the environment; without it each
worker would start its own temporary server (slow, measured in DESIGN.md).

A server this module starts never outlives the process that started it, however that
process ends (SIGKILL included): the server runs under a small guard process
(``python -m imgpress.prefect_api guard FD -- CMD``) that holds the read end of a pipe
whose only write end stays in the starting process. When that process dies, the kernel
closes the pipe, the guard reads EOF and stops the server's whole process group. The
guard and the server sit in their own session, so Ctrl-C in the terminal reaches the
CLI (which stops the server after sending its logs) and a kill of the CLI's process
group does not take the guard down before it has done its work.
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


def start_server(
    port: int | None = None, *, host: str = "127.0.0.1", env: dict | None = None, log=None, meanwhile=None
):
    """Start ``prefect server start`` on loopback; return ``(process, api_url)`` once healthy.

    ``meanwhile()`` is called once the server process is started, before waiting for it to
    answer (it takes 8-23 s here): work that needs no API overlaps its start.
    """
    port = port or free_port()
    api_url = f"http://{host}:{port}/api"
    server_env = {**os.environ, **(env or {}), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true")}
    server_env.pop("PREFECT_API_URL", None)
    # The UI calls the API from the browser; without this it assumes port 4200.
    server_env.setdefault("PREFECT_UI_API_URL", api_url)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    proc = guarded(cmd, env=server_env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    if meanwhile is not None:
        try:
            meanwhile()
        except BaseException:
            stop_server(proc)
            raise
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} while starting")
        if healthy(api_url):
            return proc, api_url
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"prefect server did not answer on {api_url} within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # the guard stops the server's group, then exits
    try:
        proc.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
    if getattr(proc, "lifeline", None) is not None:
        os.close(proc.lifeline)
        proc.lifeline = None


GRACE_S = 15  # SIGTERM, then this long, then SIGKILL


def guarded(cmd: list[str], **popen) -> subprocess.Popen:
    """Start ``cmd`` under a guard that stops it (and its children) when this process dies.

    Returns the guard's ``Popen``: terminating it stops ``cmd`` too. The pipe's write end
    (``proc.lifeline``) stays open here, close-on-exec, so no other child holds it.
    """
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgpress.prefect_api", "guard", str(read_end), "--", *cmd],
            pass_fds=(read_end,), start_new_session=True, **popen,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    proc.lifeline = write_end
    return proc


def _guard(fd: int, cmd: list[str]) -> int:
    """Run ``cmd`` in its own process group until it exits, EOF on ``fd``, or SIGTERM; then stop the group."""
    import select  # noqa: PLC0415
    import signal  # noqa: PLC0415

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the starter decides; a terminal's Ctrl-C is not for us
    child = subprocess.Popen(cmd, start_new_session=True)
    try:
        while child.poll() is None:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready and not os.read(fd, 1):
                break  # EOF: the process that started us is gone
        return child.returncode or 0
    finally:
        if child.poll() is None:
            _stop_group(child)


def _stop_group(child: subprocess.Popen) -> None:
    import signal  # noqa: PLC0415

    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        try:
            child.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # anything the server left in its group
        os.killpg(child.pid, signal.SIGKILL)


@contextlib.contextmanager
def prefect_api(echo=print, meanwhile=None):
    """Use ``PREFECT_API_URL`` when set; otherwise run a local server for the block's duration.

    ``meanwhile()`` (e.g. starting a Dask cluster) runs while that server starts, with
    ``PREFECT_API_URL`` already set for the processes it starts; with a given API, first.
    """
    if os.environ.get("PREFECT_API_URL"):
        if meanwhile is not None:
            meanwhile()
        yield os.environ["PREFECT_API_URL"]
        return
    echo("Starting a local Prefect server (set PREFECT_API_URL to use a running one) ...")
    port = free_port()
    os.environ["PREFECT_API_URL"] = api_url = f"http://127.0.0.1:{port}/api"  # for Dask worker processes

    def starting():
        import prefect.settings  # noqa: F401, PLC0415  (most of Prefect: seconds, while the server starts)

        if meanwhile is not None:
            meanwhile()

    try:
        proc, _ = start_server(port, meanwhile=starting)
    except BaseException:
        del os.environ["PREFECT_API_URL"]
        raise
    # No flow-run heartbeats: they let a server that outlives a run tell it crashed, and this
    # server dies with the run's process. They cost every run ~0.5 s here: the heartbeat
    # thread sleeps in whole seconds and a sync flow waits for it to wake before returning.
    from prefect.settings import (  # noqa: PLC0415
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    settings = {PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    try:
        with temporary_settings(settings):  # for this process
            yield api_url
            _drain_logs()
    finally:
        del os.environ["PREFECT_API_URL"]
        stop_server(proc)


def _drain_logs() -> None:
    """Send buffered run logs to the server before it stops."""
    from prefect.logging.handlers import APILogWorker  # noqa: PLC0415

    APILogWorker.drain_all(timeout=10)


if __name__ == "__main__":  # python -m imgpress.prefect_api guard FD -- CMD ...
    if len(sys.argv) > 3 and sys.argv[1] == "guard" and sys.argv[3] == "--":
        sys.exit(_guard(int(sys.argv[2]), sys.argv[4:]))
    sys.exit("usage: python -m imgpress.prefect_api guard FD -- CMD ...")
