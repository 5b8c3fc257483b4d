"""Helpers shared by the reliability tests: collections, runs, and the "nothing lost" check."""

from __future__ import annotations

import collections
import io
import os

import numpy as np
from PIL import Image

from compressors import get_codec
from flows.compress import compress_collection
from flows.runner import dask_runner
from tasks.layout import artifacts_url, finished_shards
from tasks.plan import read_manifest
from tasks.report import read_reports
from tasks.storage import Storage, join, list_files, read_bytes, write_bytes


def make_collection(url: str, n: int, *, size: int = 64, storage: Storage = Storage(), seed: int = 0) -> list[str]:
    """``n`` small generated photos-like PNG/JPEG files in two folders; returns their relative paths."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    rels = []
    for i in range(n):
        base = (np.sin(xx / (3 + i % 7)) * 60 + np.cos(yy / (4 + i % 5)) * 60 + 128)[..., None]
        image = np.clip(base + rng.normal(0, 12, (size, size, 3)) + rng.integers(-40, 40, 3), 0, 255).astype(np.uint8)
        fmt, ext = ("PNG", "png") if i % 3 else ("JPEG", "jpg")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt)
        rel = f"{'a' if i % 2 else 'b'}/img-{i:03d}.{ext}"
        write_bytes(join(url, rel), buf.getvalue(), storage)
        rels.append(rel)
    return sorted(rels)


def run_flow(request, dask_address: str, **kwargs):
    """The real compress flow on the given Dask scheduler (``return_state=True`` etc. pass through)."""
    return compress_collection.with_options(task_runner=dask_runner(dask_address))(request, **kwargs)


def assert_nothing_lost(dest: str, expected_sources: list[str], *, storage: Storage = Storage(),
                        run_id: str | None = None, codec: str = "jpeg") -> list[dict]:
    """Every expected image has exactly one row; every ok row's artifact exists whole and decodes.

    Also: every finished shard has its report, the manifest says completed, and no file
    under a final (non-hidden) name in the run's artifacts is anything but a whole artifact.
    Returns the rows.
    """
    table = read_reports(dest, storage, run_ids=[run_id] if run_id else None)
    rows = table.to_pylist()
    counts = collections.Counter(r["source"] for r in rows)
    dupes = {s: c for s, c in counts.items() if c > 1}
    assert not dupes, f"images with more than one row: {dupes}"
    assert sorted(counts) == sorted(expected_sources), (
        f"missing: {sorted(set(expected_sources) - set(counts))}, extra: {sorted(set(counts) - set(expected_sources))}"
    )
    run_ids = {r["run_id"] for r in rows}
    assert len(run_ids) == 1, run_ids
    rid = run_ids.pop()
    decode = get_codec(codec).decode
    for row in rows:
        if row["status"] == "ok":
            blob = read_bytes(row["artifact"], storage)
            assert len(blob) == row["artifact_bytes"], row["artifact"]
            image = decode(blob)
            assert image.shape[:2] == (row["height"], row["width"])
    manifest = read_manifest(dest, rid, storage)
    assert manifest is not None and manifest["status"] == "completed", manifest
    shards = set(finished_shards(dest, rid, storage))
    reported = {r["shard"] for r in rows}
    assert reported == shards, f"shards with rows but no marker: {sorted(reported - shards)}; markers without rows: {sorted(shards - reported)}"
    artifacts = list_files(artifacts_url(dest, rid), storage, extensions=None)
    ok_artifacts = {r["artifact"] for r in rows if r["status"] == "ok"}
    for rel, _ in artifacts:  # nothing under a final name that the report does not account for
        assert join(artifacts_url(dest, rid), rel) in ok_artifacts, rel
    return rows


def local_partials(root: str) -> list[str]:
    """Temporary files left by writes that never finished (hidden, never under a final name)."""
    out = []
    for dirpath, _, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".partial")]
    return out
