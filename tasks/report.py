"""The report: one Parquet file per shard with an explicit schema, read back as one dataset.

Layout under the destination (hive-partitioned by run so queries prune)::

    reports/run_id=<run_id>/<shard_id>.parquet
"""

from __future__ import annotations

import io
import json
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.storage import Storage, join, list_files, read_bytes, write_bytes

REPORT_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # path relative to the source root
        pa.field("codec", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),  # canonical JSON of the codec parameters
        pa.field("status", pa.string(), nullable=False),  # "ok" | "error"
        pa.field("error", pa.string()),  # why, when status == "error"
        pa.field("conversion", pa.string()),  # what was done to the input on purpose (see compressors.imageio)
        pa.field("source_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("channels", pa.int8()),  # of the compressed image: 1 (gray) or 3 (RGB)
        pa.field("source_bytes", pa.int64()),
        pa.field("artifact", pa.string()),  # URL of the compressed artifact
        pa.field("artifact_bytes", pa.int64()),
        pa.field("bpp", pa.float64()),  # artifact bits (every byte, header included) per pixel
        pa.field("compression_ratio", pa.float64()),  # source file bytes / artifact bytes
        pa.field("raw_compression_ratio", pa.float64()),  # width*height*channels bytes / artifact bytes
        pa.field("psnr", pa.float64()),  # dB, data_range 255; inf when lossless
        pa.field("ssim", pa.float64()),  # Wang et al. 2004, Gaussian sigma 1.5, data_range 255
        pa.field("encode_ms", pa.float64()),
        pa.field("decode_ms", pa.float64()),
        pa.field("metrics_ms", pa.float64()),
        pa.field("decision", pa.string()),  # canonical JSON of what the codec chose for this image, if anything
    ]
)

COLUMNS = tuple(REPORT_SCHEMA.names)


def report_url(dest: str, run_id: str, shard_id: str) -> str:
    return join(dest, "reports", f"run_id={run_id}", f"{shard_id}.parquet")


def rows_to_table(rows: Iterable[dict]) -> pa.Table:
    rows = list(rows)
    return pa.table({name: [r.get(name) for r in rows] for name in COLUMNS}, schema=REPORT_SCHEMA)


def write_report(url: str, rows: Iterable[dict], storage: Storage = Storage()) -> None:
    buf = io.BytesIO()
    pq.write_table(rows_to_table(rows), buf, compression="zstd")
    write_bytes(url, buf.getvalue(), storage)


def read_reports(dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None) -> pa.Table:
    """Every finished shard's rows under ``dest`` (optionally only some runs) as one table.

    Only report files whose shard marker exists count: a file without one belongs to an
    attempt that did not finish and will be rewritten when the run resumes.
    """
    tables = [
        pq.read_table(io.BytesIO(read_bytes(url, storage)), schema=REPORT_SCHEMA)
        for _, url in finished_reports(dest, storage, run_ids=run_ids)
    ]
    if not tables:
        return REPORT_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def finished_reports(
    dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """``(run_id, url)`` of every report file whose shard marker exists, sorted.

    With ``run_ids`` only those runs' partitions are listed, so the others cost nothing.
    """
    from tasks.plan import finished_shards  # noqa: PLC0415  (plan imports this module)

    root = join(dest, "reports")
    if run_ids is None:
        try:
            files = list_files(root, storage, extensions=(".parquet",))
        except FileNotFoundError:
            files = []
    else:
        files = []
        for run_id in sorted(set(run_ids)):
            try:
                part = list_files(join(root, f"run_id={run_id}"), storage, extensions=(".parquet",))
            except FileNotFoundError:
                continue
            files += [(f"run_id={run_id}/{rel}", size) for rel, size in part]
    out = []
    done_by_run: dict[str, set[str]] = {}
    for rel, _ in files:
        part, _, name = rel.partition("/")
        run_id = part.removeprefix("run_id=")
        if run_id not in done_by_run:
            done_by_run[run_id] = set(finished_shards(dest, run_id, storage))
        if name.removesuffix(".parquet") in done_by_run[run_id]:
            out.append((run_id, join(root, rel)))
    return out
