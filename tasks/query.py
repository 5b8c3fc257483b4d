"""Questions people ask of the reports, answered by DuckDB over the Parquet dataset.

The dataset is read through pyarrow and fsspec (local folders, ``s3://`` ...), never
through DuckDB's own filesystems: its httpfs extension would have to be downloaded.
The table is always named ``reports`` and has :data:`tasks.report.REPORT_SCHEMA`.

Run pruning: every report file sits in its run's folder (:mod:`tasks.layout`) and becomes a
fragment that carries ``run_id == '<id>'`` as its partition expression. DuckDB pushes
``WHERE run_id = ...`` / ``run_id IN (...)`` into the pyarrow scan, which then skips the
other runs' files without opening them; ``run_ids=`` skips even listing them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

from tasks.layout import finished_reports
from tasks.report import REPORT_SCHEMA
from tasks.storage import Storage, is_local

TABLE = "reports"
METRICS = ("bpp", "psnr", "ssim", "encode_ms", "decode_ms")
# What codec_stats, exact_routes, worst_images and error_rows read: a report that asks only
# these questions reads only these columns (open_reports(..., columns=SUMMARY_COLUMNS)).
SUMMARY_COLUMNS = (
    "run_id", "codec", "params", "status", "source", "artifact", "error", "width", "height", *METRICS,
    "source_bytes", "artifact_bytes", "exact", "route", "bytes_saved", "postfilter", "classifier", "labels_agree",
)
PERCENTILES = (0.5, 0.9, 0.99)


def report_dataset(
    dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None
) -> ds.Dataset:
    """The finished report files under ``dest`` as one lazy pyarrow dataset (nothing read yet)."""
    return _dataset(finished_reports(dest, storage, run_ids=run_ids), storage, storage.fs(dest)[0])


def _dataset(found: list[tuple[str, str]], storage: Storage, fs) -> ds.Dataset:
    """``found`` (``(run_id, url)`` of report files on ``fs``) as a lazy dataset pruned by run."""
    return ds.FileSystemDataset.from_paths(
        [storage.fs(url)[1] for _, url in found],
        schema=REPORT_SCHEMA,
        format=ds.ParquetFileFormat(),
        # local folders through Arrow's own reader (~2x faster than through Python's fsspec)
        filesystem=LocalFileSystem() if is_local(fs) else PyFileSystem(FSSpecHandler(fs)),
        partitions=[ds.field("run_id") == run_id for run_id, _ in found],
    )


@dataclass
class Reports:
    """A DuckDB connection with the reports registered as the table ``reports``."""

    con: duckdb.DuckDBPyConnection
    source: ds.Dataset | pa.Table | None  # kept alive while the connection scans it (None: a DuckDB table)

    def sql(self, sql: str, params: Sequence | None = None) -> "Result":
        cur = self.con.execute(sql, params or [])
        columns = [d[0] for d in cur.description] if cur.description else []
        return Result(columns, cur.fetchall())

    def close(self) -> None:
        self.con.close()
        self.source = None
        _return_freed_memory()

    def __enter__(self) -> "Reports":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, map(plain, row))) for row in self.rows]


def open_reports(
    dest: str,
    storage: Storage = Storage(),
    *,
    run_ids: Iterable[str] | None = None,
    materialize: bool = False,
    columns: Sequence[str] | None = None,
) -> Reports:
    """Register the reports under ``dest`` as ``reports``.

    ``materialize=True`` reads them once into memory (for several questions in a row), only
    ``columns`` of them if given; the default scans lazily so one query reads only what its
    filters keep.
    """
    found = finished_reports(dest, storage, run_ids=run_ids)
    fs, _ = storage.fs(dest)
    con = _database().cursor()  # a connection of its own (tables registered here stay here)
    if materialize and found and is_local(fs):
        _read_local(con, [storage.fs(url)[1] for _, url in found], columns)
        return Reports(con, None)
    dataset = _dataset(found, storage, fs)
    source = dataset.to_table(columns=list(columns) if columns else None) if materialize else dataset
    con.register(TABLE, source)
    return Reports(con, source)


READ_FILES_AT_ONCE = 200


def _read_local(con: duckdb.DuckDBPyConnection, paths: list[str], columns: Sequence[str] | None) -> None:
    """Local report files read into a DuckDB table of this connection (columnar, outside Python).

    DuckDB's own Parquet reader takes ~1 ms a report file here, pyarrow's dataset ~8 ms (a
    100,000-image run has ~1,600 files). One thread, READ_FILES_AT_ONCE files at a time: DuckDB
    holds every open file's metadata while it reads, which for 1,600 files at once (two threads)
    cost ~3x the memory of the rows read (a third). Older files lack newer columns: the empty
    schema table first, UNION BY NAME, gives every column of the schema, null where a file has none.
    """
    con.register("report_schema", REPORT_SCHEMA.empty_table())
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    select = (f"SELECT {', '.join(columns or REPORT_SCHEMA.names)} FROM (SELECT * FROM report_schema "
              "UNION ALL BY NAME SELECT * FROM read_parquet(?, union_by_name = true))")
    try:
        con.execute("SET threads = 1")
        for start in range(0, len(paths), READ_FILES_AT_ONCE):
            into = f"CREATE TEMP TABLE {TABLE} AS " if start == 0 else f"INSERT INTO {TABLE} "
            con.execute(into + select, [paths[start : start + READ_FILES_AT_ONCE]])
    finally:
        con.execute(f"SET threads = {int(threads)}")
        con.unregister("report_schema")


def _return_freed_memory() -> None:
    """Give the memory freed after reading reports back to the system (glibc only).

    Arrow's reader threads leave most of what they allocated free but held in glibc's
    per-thread arenas: reading 100,000 rows left the process 206 MB larger, 25 MB after
    this. Without it a long-lived process (a flow run's, a worker's) grows with the
    largest run it has reported on (Dask calls the same on its workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_DATABASE: tuple[int, duckdb.DuckDBPyConnection] | None = None


def _database() -> duckdb.DuckDBPyConnection:
    """This process's in-memory DuckDB (opening one costs 15-90 ms here; a cursor on it ~0).

    Per process id: a forked child must not use its parent's (DuckDB is not fork-safe).
    """
    global _DATABASE
    if _DATABASE is None or _DATABASE[0] != os.getpid():
        _DATABASE = (os.getpid(), duckdb.connect())
    return _DATABASE[1]


def codec_stats(reports: Reports) -> list[dict]:
    """Per run and codec: counts, then mean and p50/p90/p99 of every metric over ok rows.

    PSNR statistics skip lossless images (PSNR = inf); ``lossless`` counts them. Exact
    images (the artifact gives back the source: its file byte for byte, or every pixel)
    have PSNR inf and SSIM 1 by definition; ``exact`` counts them, ``bytes_saved`` sums
    what the run saved, and ``routes`` (:func:`exact_routes`) says which way they went.
    ``postfilter`` / ``classifier`` name the run's helpers (null without); ``agreement`` is
    the share of ``classified`` images whose label the decoded image kept.
    """
    aggregates = []
    for m in METRICS:
        keep = f"status = 'ok' AND isfinite({m})"
        qs = ", ".join(str(p) for p in PERCENTILES)
        aggregates.append(f"avg({m}) FILTER (WHERE {keep}) AS mean_{m}")
        aggregates.append(f"quantile_cont({m}, [{qs}]) FILTER (WHERE {keep}) AS q_{m}")
    sql = f"""
        SELECT run_id, codec, any_value(params) AS params, count(*) AS images,
               count(*) FILTER (WHERE status = 'ok') AS ok,
               count(*) FILTER (WHERE status <> 'ok') AS errors,
               count(*) FILTER (WHERE status = 'ok' AND psnr = 'inf'::DOUBLE) AS lossless,
               sum(source_bytes) AS source_bytes,
               sum(artifact_bytes) FILTER (WHERE status = 'ok') AS artifact_bytes,
               count(*) FILTER (WHERE status = 'ok' AND exact) AS exact,
               sum(bytes_saved) FILTER (WHERE status = 'ok') AS bytes_saved,
               any_value(postfilter) AS postfilter, any_value(classifier) AS classifier,
               count(labels_agree) FILTER (WHERE status = 'ok') AS classified,
               avg(labels_agree::INTEGER) FILTER (WHERE status = 'ok') AS agreement,
               {", ".join(aggregates)}
        FROM {TABLE} GROUP BY run_id, codec ORDER BY codec, mean_bpp NULLS LAST, run_id
    """
    routes: dict[tuple, list[dict]] = {}
    for r in exact_routes(reports):
        routes.setdefault((r["run_id"], r["codec"]), []).append(r)
    out = []
    for rec in reports.sql(sql).records():
        for m in METRICS:
            qs = rec.pop(f"q_{m}") or [None] * len(PERCENTILES)
            for p, v in zip(PERCENTILES, qs):
                rec[f"p{round(p * 100)}_{m}"] = plain(v)
        rec["routes"] = routes.get((rec["run_id"], rec["codec"]), [])
        out.append(rec)
    return out


def exact_routes(reports: Reports) -> list[dict]:
    """What exact recompression gave, per run, codec and route, over ok rows that are exact or routed.

    ``route`` is the codec's (``transcode`` / ``lossless`` / ``stored`` for ``jxl
    --lossless``), ``None`` for an exact image of a codec with one way (e.g. a K-means
    palette that kept every colour). ``saved`` = bytes_saved / source_bytes.
    """
    sql = f"""
        SELECT run_id, codec, route, count(*) AS images, count(*) FILTER (WHERE exact) AS exact,
               sum(source_bytes) AS source_bytes, sum(artifact_bytes) AS artifact_bytes,
               sum(bytes_saved) AS bytes_saved, sum(bytes_saved) / sum(source_bytes) AS saved
        FROM {TABLE} WHERE status = 'ok' AND (exact OR route IS NOT NULL)
        GROUP BY run_id, codec, route ORDER BY run_id, codec, route NULLS LAST
    """
    return reports.sql(sql).records()


def worst_images(reports: Reports, n: int = 10, *, by: str = "psnr") -> list[dict]:
    """The ``n`` ok images with the lowest ``by`` (psnr or ssim), worst first; exact images have no error to show."""
    if by not in ("psnr", "ssim"):
        raise ValueError(f"worst images are ranked by psnr or ssim, not {by!r}")
    sql = f"""
        SELECT run_id, codec, params, source, artifact, width, height, bpp, psnr, ssim, encode_ms
        FROM {TABLE} WHERE status = 'ok' AND isfinite(psnr)
        ORDER BY {by} ASC, source, run_id LIMIT ?
    """
    return reports.sql(sql, [n]).records()


def error_rows(reports: Reports, limit: int | None = None) -> list[dict]:
    """Every error row with its message, grouped messages first by how often they occur."""
    sql = f"""
        SELECT run_id, codec, source, error, count(*) OVER (PARTITION BY error) AS same_message
        FROM {TABLE} WHERE status <> 'ok' ORDER BY same_message DESC, error, run_id, source
    """
    rows = reports.sql(sql + (" LIMIT ?" if limit else ""), [limit] if limit else None).records()
    return rows


def compare_runs(reports: Reports, baseline: str, others: Iterable[str] | None = None) -> list[dict]:
    """Each other run against ``baseline`` on the images both coded successfully.

    Means are over those common images only, so a run that skipped or failed hard images
    does not look better for it. ``bpp_change`` is relative (-0.25 = 25 % fewer bits).
    """
    runs = [r[0] for r in reports.sql(f"SELECT DISTINCT run_id FROM {TABLE} ORDER BY run_id").rows]
    if baseline not in runs:
        raise ValueError(f"run {baseline!r} is not in these reports; runs: {', '.join(runs) or 'none'}")
    wanted = [r for r in (others if others is not None else runs) if r != baseline]
    missing = sorted(set(wanted) - set(runs))
    if missing:
        raise ValueError(f"run(s) {', '.join(missing)} not in these reports; runs: {', '.join(runs)}")
    sql = f"""
        WITH b AS (SELECT * FROM {TABLE} WHERE run_id = ? AND status = 'ok'),
             o AS (SELECT * FROM {TABLE} WHERE run_id = ? AND status = 'ok')
        SELECT any_value(o.run_id) AS run_id, any_value(o.codec) AS codec, any_value(o.params) AS params,
               count(*) AS common_images,
               avg(b.bpp) AS baseline_bpp, avg(o.bpp) AS bpp,
               avg(o.bpp) / avg(b.bpp) - 1 AS bpp_change,
               avg(b.psnr) FILTER (WHERE isfinite(b.psnr) AND isfinite(o.psnr)) AS baseline_psnr,
               avg(o.psnr) FILTER (WHERE isfinite(b.psnr) AND isfinite(o.psnr)) AS psnr,
               avg(o.psnr - b.psnr) FILTER (WHERE isfinite(b.psnr) AND isfinite(o.psnr)) AS psnr_delta,
               avg(b.ssim) AS baseline_ssim, avg(o.ssim) AS ssim, avg(o.ssim - b.ssim) AS ssim_delta,
               count(*) FILTER (WHERE o.psnr < b.psnr) AS images_with_lower_psnr,
               avg(o.encode_ms) / avg(b.encode_ms) AS encode_time_ratio
        FROM b JOIN o USING (source)
    """
    out = []
    for run in wanted:
        rec = reports.sql(sql, [baseline, run]).records()[0]
        rec.update(baseline=baseline, run_id=run)
        out.append(rec)
    return out


def plain(value):
    """DuckDB values as JSON-friendly Python: NaN -> None (inf stays, callers decide)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
