"""Where everything lives under a destination: the one module every reader and writer asks.

::

    DEST/artifacts/<run_id>/<source path><codec ext>   compressed artifacts mirroring the source
    DEST/reports/<run_id>/<shard_id>.parquet           one report per shard (run_id is also a column)
    DEST/reports/0-schema.parquet                      no rows: the newest report schema (see below)
    DEST/runs/<run_id>/manifest.json                   config, codec params, versions, counts, status
    DEST/runs/<run_id>/shards/<shard_id>.json          a finished shard's marker, written last
    DEST/runs/<run_id>/report.html                     the run's visual report
    DEST/runs/<run_id>/logs/<time>-<pid>.log           library logs of one CLI invocation

Report folders are named by the bare run id, not ``run_id=<id>``: each file keeps
``run_id`` as a column, and a Hive-named folder would make pandas, pyarrow and Spark
add a second, differently typed ``run_id`` from the path. Plain folders give every
reader exactly one ``run_id``, a string, with no option to pass.

``0-schema.parquet`` holds no rows and the newest schema. Readers that take the schema
of the first file they list (pyarrow, pandas, polars, DuckDB) list it first (``0``
sorts before every run id, which starts with a codec name: a lowercase letter), so a
column added by a newer version is never dropped because an older file came first.

Destinations written before this layout have ``reports/run_id=<id>/`` folders: readers
here still find them, and :func:`migrate_legacy_reports` (called when a run is prepared)
moves them to the plain layout.
"""

from __future__ import annotations

import contextlib
import posixpath
from typing import Iterable

from tasks.storage import Storage, join, list_files

ARTIFACTS = "artifacts"
REPORTS = "reports"
RUNS = "runs"
REPORT_SUFFIX = ".parquet"
MARKER_SUFFIX = ".json"
SCHEMA_FILE = "0-schema.parquet"
LEGACY_PREFIX = "run_id="  # reports/run_id=<id>/ before report schema 2


# ---- URLs ------------------------------------------------------------------------------


def artifacts_url(dest: str, run_id: str) -> str:
    return join(dest, ARTIFACTS, run_id)


def run_of_artifacts(url: str) -> tuple[str, str] | None:
    """``(dest, run_id)`` when ``url`` is a run's artifacts folder (``DEST/artifacts/<run_id>``), else None."""
    folder = url.rstrip("/")
    parent = posixpath.dirname(folder)
    if not folder or posixpath.basename(parent) != ARTIFACTS:
        return None
    return posixpath.dirname(parent) or ".", posixpath.basename(folder)


def artifact_url(dest: str, run_id: str, rel: str, extension: str) -> str:
    """The artifact of source file ``rel``: its full name plus the codec's extension."""
    return join(dest, ARTIFACTS, run_id, rel + extension)


def reports_url(dest: str) -> str:
    return join(dest, REPORTS)


def report_folder(dest: str, run_id: str) -> str:
    return join(dest, REPORTS, run_id)


def report_url(dest: str, run_id: str, shard_id: str) -> str:
    return join(dest, REPORTS, run_id, shard_id + REPORT_SUFFIX)


def schema_url(dest: str) -> str:
    return join(dest, REPORTS, SCHEMA_FILE)


def run_url(dest: str, run_id: str) -> str:
    return join(dest, RUNS, run_id)


def manifest_url(dest: str, run_id: str) -> str:
    return join(dest, RUNS, run_id, "manifest.json")


def markers_url(dest: str, run_id: str) -> str:
    return join(dest, RUNS, run_id, "shards")


def marker_url(dest: str, run_id: str, shard_id: str) -> str:
    return join(dest, RUNS, run_id, "shards", shard_id + MARKER_SUFFIX)


def merge_lock_url(dest: str, run_id: str) -> str:
    """Held while an attempt merges the run's shards (two attempts at once merge one at a time)."""
    return join(dest, RUNS, run_id, "merge.lock")


def html_report_url(dest: str, run_id: str) -> str:
    return join(dest, RUNS, run_id, "report.html")


def logs_url(dest: str, run_id: str) -> str:
    return join(dest, RUNS, run_id, "logs")


# ---- listings --------------------------------------------------------------------------


def _names(url: str, suffix: str, storage: Storage) -> list[str]:
    """Base names (suffix removed) of the ``suffix`` files under ``url``; none if it is missing."""
    try:
        listed = list_files(url, storage, extensions=(suffix,))
    except FileNotFoundError:
        return []
    return [posixpath.basename(rel).removesuffix(suffix) for rel, _ in listed]


def finished_shards(dest: str, run_id: str, storage: Storage = Storage()) -> list[str]:
    """Shard ids of ``run_id`` whose marker exists (the shard wrote everything)."""
    return _names(markers_url(dest, run_id), MARKER_SUFFIX, storage)


def report_shards(dest: str, run_id: str, storage: Storage = Storage()) -> dict[str, str]:
    """``{shard_id: url}`` of every report file of ``run_id``, marker or not (legacy folder included)."""
    out = {}
    for folder in (join(dest, REPORTS, LEGACY_PREFIX + run_id), report_folder(dest, run_id)):
        for shard in _names(folder, REPORT_SUFFIX, storage):
            out[shard] = join(folder, shard + REPORT_SUFFIX)
    return out


def report_runs(dest: str, storage: Storage = Storage()) -> dict[str, list[str]]:
    """``{run_id: [report URLs]}`` of every report file under ``dest``, marker or not."""
    root = reports_url(dest)
    try:
        listed = list_files(root, storage, extensions=(REPORT_SUFFIX,))
    except FileNotFoundError:
        listed = []
    out: dict[str, list[str]] = {}
    for rel, _ in listed:
        folder, sep, _name = rel.partition("/")
        if not sep:  # the schema file, or anything else at the top: not a shard's report
            continue
        out.setdefault(folder.removeprefix(LEGACY_PREFIX), []).append(join(root, rel))
    return out


def finished_reports(
    dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """``(run_id, url)`` of every report file whose shard marker exists, sorted.

    With ``run_ids`` only those runs' folders are listed, so the others cost nothing.
    """
    if run_ids is None:
        found = report_runs(dest, storage)
    else:
        found = {r: list(report_shards(dest, r, storage).values()) for r in sorted(set(run_ids))}
    out = []
    for run_id, urls in sorted(found.items()):
        done = set(finished_shards(dest, run_id, storage)) if urls else set()
        out += [(run_id, u) for u in sorted(urls) if posixpath.basename(u).removesuffix(REPORT_SUFFIX) in done]
    return out


def migrate_legacy_reports(dest: str, storage: Storage = Storage()) -> int:
    """Move ``reports/run_id=<id>/*.parquet`` to ``reports/<id>/``; return how many files moved.

    Idempotent and safe to race: a file another process moved first is skipped.
    """
    fs, _ = storage.fs(dest)
    moved = 0
    for run_id, urls in report_runs(dest, storage).items():
        legacy = [u for u in urls if posixpath.basename(posixpath.dirname(u)).startswith(LEGACY_PREFIX)]
        for url in legacy:
            target = report_url(dest, run_id, posixpath.basename(url).removesuffix(REPORT_SUFFIX))
            try:
                fs.makedirs(storage.fs(report_folder(dest, run_id))[1], exist_ok=True)
                fs.mv(storage.fs(url)[1], storage.fs(target)[1])
                moved += 1
            except FileNotFoundError:
                continue
        if legacy:
            with contextlib.suppress(OSError):  # an empty local folder; object stores have none
                fs.rmdir(storage.fs(join(dest, REPORTS, LEGACY_PREFIX + run_id))[1])
    return moved
