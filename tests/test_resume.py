"""Resume and idempotence: a run can die anywhere, be re-run, and end with every image once.

A run's id is a hash of (source, codec, canonical params); a shard's id is a hash of its
files. Writes go artifacts -> report -> marker, each whole or not at all. These tests
kill runs at the awkward moments and check what a re-run makes of what is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.params import CompressRequest
from tasks import storage
from tasks.layout import finished_shards, marker_url
from tasks.plan import make_run_id, prepare_run
from tasks.layout import report_url
from tasks.report import read_reports, write_report
from tasks.shard import compress_one, compress_shard
from tasks.storage import DestinationError, list_files, write_bytes
from compressors import get_codec

from reliability import assert_nothing_lost, local_partials, make_collection, run_flow

PARAMS = {"quality": 70}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resume-src"))
    return root, make_collection(root, 14, size=48)


def _digest_tree(root: str) -> dict[str, tuple[str, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def test_a_rerun_skips_finished_shards_and_rewrites_nothing(prefect_server, dask_address, collection, tmp_path):
    source, rels = collection
    dest = str(tmp_path / "out")
    request = CompressRequest(source=source, dest=dest, codec="jpeg", quality=70, shard_size=4)
    first = run_flow(request, dask_address)
    assert first["images"] == len(rels) and first["shards"] == 4
    before = _digest_tree(os.path.join(dest, "artifacts")) | _digest_tree(os.path.join(dest, "reports"))
    markers = {m: os.stat(os.path.join(dest, "runs", first["run_id"], "shards", m + ".json")).st_mtime_ns
               for m in finished_shards(dest, first["run_id"])}

    again = run_flow(request, dask_address)
    assert again["run_id"] == first["run_id"]
    assert again["images"] == 0 and again["shards"] == 0 and again["images_skipped_as_done"] == len(rels)
    after = _digest_tree(os.path.join(dest, "artifacts")) | _digest_tree(os.path.join(dest, "reports"))
    assert after == before  # same bytes, same mtimes: nothing was redone
    assert {m: os.stat(os.path.join(dest, "runs", first["run_id"], "shards", m + ".json")).st_mtime_ns
            for m in markers} == markers
    assert_nothing_lost(dest, rels)


def test_a_changed_codec_config_is_a_new_run_that_never_touches_the_old_one(
    prefect_server, dask_address, collection, tmp_path
):
    source, rels = collection
    dest = str(tmp_path / "out")
    base = CompressRequest(source=source, dest=dest, codec="jpeg", quality=70, shard_size=7)
    first = run_flow(base, dask_address)
    old = _digest_tree(os.path.join(dest, "artifacts", first["run_id"]))
    old_manifest = Path(dest, "runs", first["run_id"], "manifest.json").read_bytes()

    second = run_flow(base.with_codec_params(quality=40), dask_address)
    assert second["run_id"] != first["run_id"] and second["images"] == len(rels)
    assert _digest_tree(os.path.join(dest, "artifacts", first["run_id"])) == old
    assert Path(dest, "runs", first["run_id"], "manifest.json").read_bytes() == old_manifest
    for run_id in (first["run_id"], second["run_id"]):
        assert_nothing_lost(dest, rels, run_id=run_id)
    # the run id follows the configuration, not its spelling or the shard size
    assert make_run_id(source + "/", "jpeg", {"quality": 70}) == first["run_id"]
    assert make_run_id(source, "jpeg", {"quality": 71}) != first["run_id"]
    assert make_run_id(source, "webp", {"quality": 70}) != first["run_id"]


def test_an_attempt_that_died_at_every_stage_is_completed_by_a_rerun_with_each_image_once(
    prefect_server, dask_address, collection, tmp_path
):
    """Shards left finished, reported-but-unmarked, half-written, and never started."""
    source, rels = collection
    dest = str(tmp_path / "out")
    codec = get_codec("jpeg")
    plan = prepare_run(source, dest, "jpeg", PARAMS, shard_size=3)
    assert len(plan.specs) == 5
    done, unmarked, half, _, _ = plan.specs
    compress_shard(done)  # finished: artifacts, report, marker
    compress_shard(done)  # and a straggler ran it again: same bytes, same names
    rows = [compress_one(unmarked, codec, PARAMS, rel, size) for rel, size in unmarked.files]
    write_report(report_url(dest, plan.run_id, unmarked.shard_id), rows)  # died before its marker
    rel, size = half.files[0]
    compress_one(half, codec, PARAMS, rel, size)  # one artifact written ...
    dead = subprocess.Popen(["true"])  # the writer the kill took: a pid that is gone
    dead.wait()
    partial = os.path.join(dest, "artifacts", plan.run_id, os.path.dirname(half.files[1][0]),
                           f".{os.path.basename(half.files[1][0])}.jpg.{storage._HOST}-{dead.pid}-0123abcd.partial")
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    with open(partial, "wb") as fh:  # ... and the next one cut off mid-write by the kill
        fh.write(b"\xff\xd8\xff\xe0 cut off")
    assert [r["source"] for r in read_reports(dest).to_pylist()] == [r for r, _ in done.files]

    summary = run_flow(CompressRequest(source=source, dest=dest, codec="jpeg", quality=70, shard_size=3),
                       dask_address)
    assert summary["run_id"] == plan.run_id
    assert summary["images_skipped_as_done"] == len(done.files)
    assert summary["images"] == len(rels) - len(done.files)
    assert_nothing_lost(dest, rels)
    assert local_partials(dest) == []  # the dead writer's hidden leftover was removed by the re-run


def test_a_marker_without_its_report_does_not_count_as_done(tmp_path, collection):
    source, rels = collection
    dest = str(tmp_path / "out")
    plan = prepare_run(source, dest, "jpeg", PARAMS, shard_size=5)
    for spec in plan.specs:
        compress_shard(spec)
    lost = plan.specs[1]
    os.remove(report_url(dest, plan.run_id, lost.shard_id))  # e.g. removed by hand, or a racing attempt
    write_bytes(marker_url(dest, plan.run_id, plan.specs[2].shard_id), b"{not json")  # unreadable marker
    again = prepare_run(source, dest, "jpeg", PARAMS, shard_size=5)
    assert [s.files for s in again.specs] == [lost.files, plan.specs[2].files]
    for spec in again.specs:
        compress_shard(spec)
    rows = read_reports(dest).to_pylist()
    assert sorted(r["source"] for r in rows) == rels


def test_a_failed_write_leaves_neither_a_final_name_nor_a_temporary_file(tmp_path, monkeypatch):
    target = str(tmp_path / "deep" / "artifact.jpg")
    write_bytes(target, b"old and whole")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DestinationError, match="No space left on device"):
        write_bytes(target, b"new but never finished")
    with pytest.raises(DestinationError):
        write_bytes(str(tmp_path / "deep" / "fresh.jpg"), b"never finished")
    monkeypatch.undo()
    assert Path(target).read_bytes() == b"old and whole"
    assert sorted(os.listdir(tmp_path / "deep")) == ["artifact.jpg"]


def test_a_killed_cli_run_is_finished_by_a_rerun_with_each_image_once(prefect_server, dask_address, tmp_path):
    """SIGKILL a real ``imgpress compress`` (its own Dask cluster too) midway, then run again."""
    source, dest = str(tmp_path / "in"), str(tmp_path / "out")
    rels = make_collection(source, 36, size=96, seed=3)
    run_id = make_run_id(source, "jpeg", {"quality": 75})
    cmd = [sys.executable, "-m", "imgpress.cli", "compress", source, dest, "--codec", "jpeg", "--quality", "75",
           "--shard-size", "2", "--workers", "1", "--json"]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    shards_dir = os.path.join(dest, "runs", run_id, "shards")
    log = open(tmp_path / "cli.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.isdir(shards_dir) and len(os.listdir(shards_dir)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for p in family:  # anything of ours that escaped the process group
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
        log.close()
    time.sleep(0.5)
    finished_before = len(finished_shards(dest, run_id))
    assert 0 < finished_before < len(rels) // 2, "the kill should land midway"

    summary = run_flow(CompressRequest(source=source, dest=dest, codec="jpeg", quality=75, shard_size=2),
                       dask_address)
    assert summary["run_id"] == run_id
    assert summary["images_skipped_as_done"] + summary["images"] == len(rels)
    assert summary["images_skipped_as_done"] >= 2 * 2
    assert_nothing_lost(dest, rels)
    for rel, _ in list_files(os.path.join(dest, "artifacts", run_id), extensions=None):
        assert not rel.endswith(".partial")
    manifest = json.loads(Path(dest, "runs", run_id, "manifest.json").read_text())
    assert manifest["status"] == "completed"


def test_prepare_run_refuses_a_source_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_run(str(tmp_path / "no-such-folder"), str(tmp_path / "out"), "jpeg", PARAMS)
    assert not os.path.exists(tmp_path / "out")
