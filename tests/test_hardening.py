"""Hardening: no orphaned Prefect server, two runs at once, stale temporaries.

Real parts: real ``imgpress compress`` / ``decompress`` processes on the session's Prefect
server and Dask cluster, a private Prefect server for the kill test.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pyarrow.parquet as pq
import pytest

from reliability import assert_nothing_lost, local_partials, make_collection
from tasks import layout, plan, shard, storage
from tasks.report import read_reports, write_report

PARAMS = {"quality": 70}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_stale_temporaries_and_leaves_live_ones(tmp_path):
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    make_collection(source, 3)
    run_id = plan.make_run_id(source, "jpeg", PARAMS)
    folder = tmp_path / "out" / "artifacts" / run_id / "a"
    folder.mkdir(parents=True)
    dead = folder / f".x.png.jpg.{storage._HOST}-{_dead_pid()}-{'0' * 32}.partial"
    live = folder / f".y.png.jpg.{storage._HOST}-{os.getpid()}-{'1' * 32}.partial"  # a write in progress
    old = folder / ".z.png.jpg.0123abcd.partial"  # an older version's, or another host's, hours old
    fresh_foreign = folder / f".w.png.jpg.abcdef12-{os.getpid()}-{'2' * 32}.partial"
    for path in (dead, live, old, fresh_foreign):
        path.write_bytes(b"cut off")
    os.utime(old, (time.time() - 2 * storage.STALE_PARTIAL_S,) * 2)
    plan.prepare_run(source, dest, "jpeg", PARAMS)
    assert sorted(local_partials(dest)) == sorted([str(live), str(fresh_foreign)])


def test_shards_cut_two_ways_at_once_still_give_each_image_one_row(tmp_path):
    """Two attempts of one run with different shard sizes, interleaved: every image counted once."""
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    rels = make_collection(source, 10)
    a = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=3)
    b = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=4)  # started while a had done nothing
    assert a.run_id == b.run_id
    summaries_a = [shard.compress_shard(s) for s in a.specs]
    summaries_b = [shard.compress_shard(s) for s in b.specs]
    merged = plan.finish_run(a, summaries_a)["shards_merged_away"] + plan.finish_run(b, summaries_b)["shards_merged_away"]
    assert merged > 0
    assert_nothing_lost(dest, rels)
    # and the folder itself, as pandas or DuckDB read it: every image once
    table = pq.read_table(layout.reports_url(dest))
    assert sorted(table.column("source").to_pylist()) == rels


def test_two_attempts_merging_at_the_same_moment_still_give_each_image_one_row(tmp_path, monkeypatch):
    """One attempt merges while the other is finishing its last shards and then merges too: the
    merges take turns (the run's merge lock), so neither acts on a view the other is changing."""
    read_marker = plan.read_marker

    def slow_read_marker(*args, **kwargs):  # widen the window between a merge's reads and its writes
        time.sleep(0.01)
        return read_marker(*args, **kwargs)

    monkeypatch.setattr(plan, "read_marker", slow_read_marker)
    for attempt in range(3):
        source, dest = str(tmp_path / f"in{attempt}"), str(tmp_path / f"out{attempt}")
        rels = make_collection(source, 24, size=32, seed=attempt)
        a = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=3)
        b = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=5)
        done_a = [shard.compress_shard(s) for s in a.specs]
        done_b = [shard.compress_shard(s) for s in b.specs[:2]]
        start = threading.Barrier(2)

        def finish_a(start=start):
            start.wait()
            return plan.finish_run(a, done_a)

        def finish_b(start=start, done_b=done_b):
            start.wait()
            done_b += [shard.compress_shard(s) for s in b.specs[2:]]
            return plan.finish_run(b, done_b)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(finish_a), pool.submit(finish_b)]
            merged = [f.result()["shards_merged_away"] for f in futures]
        assert None not in merged
        assert_nothing_lost(dest, rels)
        assert sorted(pq.read_table(layout.reports_url(dest)).column("source").to_pylist()) == sorted(rels)
        assert not os.path.exists(layout.merge_lock_url(dest, a.run_id))  # released


def test_a_report_whose_marker_may_still_come_is_kept_and_a_dead_writers_is_removed(tmp_path, monkeypatch):
    """Another attempt (another shard size) is between a shard's report and its marker: keep it."""
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    rels = make_collection(source, 10)
    a = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=3)
    live, dead, old = a.specs[:3]
    codec = shard.get_codec("jpeg")

    def report_only(spec):
        rows = [shard.compress_one(spec, codec, PARAMS, rel, size) for rel, size in spec.files]
        write_report(layout.report_url(dest, a.run_id, spec.shard_id), rows)
        return shard.summarize_rows(rows)

    live_summary = report_only(live)  # written by this (live) process just now
    monkeypatch.setattr("tasks.report.writer_id", lambda: f"{storage._HOST}-{_dead_pid()}")
    report_only(dead)  # its writer was killed before the marker
    monkeypatch.undo()
    report_only(old)  # a live writer, but minutes ago: its marker is not coming
    old_url = layout.report_url(dest, a.run_id, old.shard_id)
    os.utime(old_url, (time.time() - 2 * plan.IN_FLIGHT_S,) * 2)

    b = plan.prepare_run(source, dest, "jpeg", PARAMS, shard_size=4)
    assert set(layout.report_shards(dest, a.run_id)) == {live.shard_id}
    plan.write_marker(live, live_summary)  # the marker arrives after all
    plan.finish_run(b, [shard.compress_shard(s) for s in b.specs])
    assert_nothing_lost(dest, rels)
    assert sorted(pq.read_table(layout.reports_url(dest)).column("source").to_pylist()) == rels


def test_the_lock_is_held_by_one_at_a_time_and_a_dead_holders_is_taken_over(tmp_path, s3_endpoint, s3_bucket):
    for url, where in ((str(tmp_path / "run" / "merge.lock"), storage.Storage()),
                       (f"{s3_bucket}/run/merge.lock", storage.Storage(endpoint_url=s3_endpoint))):
        with storage.exclusive(url, where):
            with pytest.raises(TimeoutError, match="held by another"):
                with storage.exclusive(url, where, wait_s=0.3):
                    pass
        with storage.exclusive(url, where, wait_s=0.3):  # released
            fs, path = where.fs(url)
            assert fs.exists(path)
        assert not where.fs(url)[0].exists(where.fs(url)[1])
        fs, path = where.fs(url)
        fs.pipe_file(path, json.dumps({"holder": f"{storage._HOST}-{_dead_pid()}-x", "time": 0}).encode())
        with storage.exclusive(url, where, wait_s=0.3):  # its holder is gone
            assert json.loads(fs.cat_file(path))["holder"].startswith(storage.writer_id())


def test_two_cli_runs_of_one_configuration_and_a_decompress_at_once(prefect_server, dask_address, tmp_path):
    """A scheduled run and a manual one (another shard size), and a decompress while they write."""
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    rels = make_collection(source, 30, size=96, seed=5)
    run_id = plan.make_run_id(source, "jpeg", PARAMS)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    def cli(*args, log):
        cmd = [sys.executable, "-m", "imgpress.cli", *args, "--dask-address", dask_address, "--json"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)

    first = cli("compress", source, dest, "--codec", "jpeg", "--quality", "70", "--shard-size", "3",
                log=tmp_path / "first.log")
    second = cli("compress", source, dest, "--codec", "jpeg", "--quality", "70", "--shard-size", "4",
                 log=tmp_path / "second.log")
    markers = layout.markers_url(dest, run_id)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (os.path.isdir(markers) and os.listdir(markers)):
        time.sleep(0.2)
    decoded = cli("decompress", layout.artifacts_url(dest, run_id), str(tmp_path / "png"), log=tmp_path / "dec.log")
    outs = {}
    for name, proc in (("first", first), ("second", second), ("decompress", decoded)):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n" + (tmp_path / f"{name[:3] if name == 'decompress' else name}.log").read_text()[-3000:]
        outs[name] = json.loads(out[out.index("{"):])
    assert outs["decompress"]["errors"] == 0 and outs["decompress"]["ok"] > 0  # only whole artifacts were listed
    rows = assert_nothing_lost(dest, rels)
    assert len(rows) == len(rels)
    assert collections.Counter(pq.read_table(layout.reports_url(dest)).column("source").to_pylist()) == \
        collections.Counter(rels)  # the folder as other tools read it
    assert len(read_reports(dest)) == len(rels)
    assert not local_partials(dest)


def test_a_killed_compress_leaves_no_prefect_server(tmp_path):
    """SIGKILL the whole process group of an `imgpress compress` that started its own server."""
    source = str(tmp_path / "in")
    make_collection(source, 4)
    home = str(tmp_path / "prefect-home")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cmd = [sys.executable, "-m", "imgpress.cli", "compress", source, str(tmp_path / "out"), "--codec", "jpeg",
           "--workers", "1"]
    log = open(tmp_path / "cli.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def servers() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if "server" in (p.info["cmdline"] or []) and p.environ().get("PREFECT_HOME") == home:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not servers():
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            time.sleep(0.2)
        assert servers(), "the CLI never started its own server"
        time.sleep(2)  # let it get going
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and servers():
            time.sleep(0.5)
        left = servers()
        assert not left, f"left running: {[p.cmdline() for p in left]}"
    finally:
        for p in servers():
            p.kill()
        log.close()


def test_the_console_shows_progress_and_summary_and_the_logs_go_to_the_runs_log_file(
    prefect_server, dask_address, tmp_path
):
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    make_collection(source, 6)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "120"}
    base = [sys.executable, "-m", "imgpress.cli", "compress", source, dest, "--codec", "jpeg", "--shard-size", "2",
            "--dask-address", dask_address]
    quiet = subprocess.run(base, env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, lines  # the summary and the log line (the progress bar clears itself)
    assert " INFO " not in quiet.stderr and "| INFO" not in quiet.stderr
    assert lines[-2].startswith("run jpeg-") and lines[-1].startswith("log: ")
    log = lines[-1].removeprefix("log: ")
    run_id = plan.make_run_id(source, "jpeg", {"quality": 75})
    assert log.startswith(layout.logs_url(dest, run_id)) and os.path.isfile(log)
    assert "Finished in state Completed" in open(log).read()  # Prefect's own lines are there

    verbose = subprocess.run([*base, "--verbose"], env=env, capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0 and "INFO" in verbose.stderr  # --verbose: the libraries speak here

    (tmp_path / "blocked").write_text("a file where the destination folder should be")
    failed = subprocess.run([*base[:5], str(tmp_path / "blocked" / "out"), *base[6:]], env=env,
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "details: " in errors[0], failed.stderr
    assert "Traceback" not in failed.stderr


def test_runs_on_the_private_server_send_no_heartbeats_and_runs_on_a_shared_one_keep_them(monkeypatch):
    """Heartbeats tell a server that outlives a flow run that the run died; the private
    server dies with the run's process, so they would only cost time (~0.5 s a run)."""
    from prefect.settings import get_current_settings

    from imgpress import prefect_api

    def start_server(port, meanwhile):  # stands in for `prefect server start`: the settings are tested here
        meanwhile()
        return object(), f"http://127.0.0.1:{port}/api"

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(prefect_api, "start_server", start_server)
    monkeypatch.setattr(prefect_api, "stop_server", lambda proc: None)
    monkeypatch.setattr(prefect_api, "_drain_logs", lambda: None)
    default = get_current_settings().flows.heartbeat_frequency
    assert default  # Prefect's default sends them
    with prefect_api.prefect_api(echo=lambda *_: None) as url:
        assert url == os.environ["PREFECT_API_URL"] == str(get_current_settings().api.url)
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with prefect_api.prefect_api(echo=lambda *_: None):
        assert get_current_settings().flows.heartbeat_frequency == default
