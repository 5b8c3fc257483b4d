"""Helpers for tests that start long-lived processes (a worker, `imgpress serve`) and wait on runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def process_env(tmp_path: Path, **extra: str) -> dict:
    """The test's environment for a child: same API server and Dask cluster, its own PREFECT_HOME."""
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "PREFECT_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


@contextlib.contextmanager
def background(cmd: list[str], env: dict, log: Path, cwd: Path = PROJECT_ROOT):
    """Run ``cmd`` in its own process group for the block; stop the whole group afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to the group this test started (flow-run children included), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def prefect_cli(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


def wait_for_final_state(client, flow_run_id, timeout: float, log: Path | None = None):
    """Poll the API until the run is final; fail with the run's state and the process log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.type.value in FINAL:
            return run
        time.sleep(1)
    raise AssertionError(
        f"flow run {flow_run_id} not finished after {timeout:.0f} s (state {run.state!r})\n"
        + (tail(log) if log else "")
    )


def wait_until(predicate, timeout: float, what: str, log: Path | None = None, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} while waiting for {what}\n" + tail(log)
            )
        try:
            value = predicate()
        except Exception:  # noqa: BLE001  (not there yet)
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n" + (tail(log) if log else ""))
