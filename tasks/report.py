"""The report: one Parquet file per shard with one explicit, versioned, append-only schema.

Where the files live is :mod:`tasks.layout`'s business; this module says what is in them.

**Adding a column** (the only place to do it): append a :class:`Column` at the end of
:data:`REPORT_COLUMNS`, nullable, with ``since`` = main's ``SCHEMA_VERSION + 1`` when you land
(columns landed together share one version), and add its line to the README's column table.
Never rename, retype, reorder or remove a column: files written by older versions stay
in destinations, and every reader must read old and new files as one table (a column
that an older file lacks reads as null). ``tests/test_report_schema.py`` enforces this
against ``tests/fixtures/report_schema.json``, the record of every released column.

Each file carries its schema version in its Parquet key-value metadata
(``imgpress.schema_version``; files without it are version 1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.layout import finished_reports, schema_url
from tasks.storage import Storage, read_bytes, write_bytes, writer_id


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str  # unit and meaning; the README's column table says the same
    since: int = 1  # the schema version that added it
    nullable: bool = True  # every column added after version 1 must be (older files lack it)

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


REPORT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "hash of source, codec and params", nullable=False),
    Column("shard", pa.string(), "content-addressed shard id", nullable=False),
    Column("source", pa.string(), "path relative to the source root", nullable=False),
    Column("codec", pa.string(), "codec registry name", nullable=False),
    Column("params", pa.string(), "canonical JSON of the codec parameters", nullable=False),
    Column("status", pa.string(), '"ok" | "error"', nullable=False),
    Column("error", pa.string(), 'why, when status == "error"'),
    Column("conversion", pa.string(), "what was done to the input on purpose (see compressors.imageio)"),
    Column("source_format", pa.string(), "PNG, JPEG, ..."),
    Column("width", pa.int32(), "pixels"),
    Column("height", pa.int32(), "pixels"),
    Column("channels", pa.int8(), "of the compressed image: 1 (gray) or 3 (RGB)"),
    Column("source_bytes", pa.int64(), "source file size"),
    Column("artifact", pa.string(), "URL of the compressed artifact"),
    Column("artifact_bytes", pa.int64(), "artifact size, every byte counted"),
    Column("bpp", pa.float64(), "artifact bits (every byte, header included) per pixel"),
    Column("compression_ratio", pa.float64(), "source file bytes / artifact bytes"),
    Column("raw_compression_ratio", pa.float64(), "width*height*channels bytes / artifact bytes"),
    Column("psnr", pa.float64(), "dB, data_range 255; inf when lossless"),
    Column("ssim", pa.float64(), "Wang et al. 2004, Gaussian sigma 1.5, data_range 255"),
    Column("encode_ms", pa.float64(), "milliseconds"),
    Column("decode_ms", pa.float64(), "milliseconds"),
    Column("metrics_ms", pa.float64(), "milliseconds"),
    # -- version 2 --
    Column("decision", pa.string(), "canonical JSON of what the codec chose for this image, if anything", since=2),
    # -- version 3 --
    Column("exact", pa.bool_(), "the artifact gives back the source: its bytes, or every pixel", since=3),
    Column("route", pa.string(), "which way the image went, for codecs with several (transcode/lossless/stored)",
           since=3),
    Column("bytes_saved", pa.int64(), "source_bytes - artifact_bytes (negative: the artifact is bigger)", since=3),
    Column("source_sha256", pa.string(), "SHA-256 of the source file (hex); decompress checks restored files",
           since=3),
    # -- version 4 --
    Column("postfilter", pa.string(), "name@id of the post-filter the metrics describe (compress --postfilter), else null", since=4),
    Column("postfilter_ms", pa.float64(), "milliseconds the post-filter took on the decoded image", since=4),
    Column("classifier", pa.string(), "name@id of the classifier run on source and decoded image (--classifier), else null", since=4),
    Column("label_source", pa.int16(), "classifier's top-1 label on the source image (null: the classifier does not take its shape)", since=4),
    Column("label_decoded", pa.int16(), "classifier's top-1 label on the decoded (and post-filtered) image", since=4),
    Column("labels_agree", pa.bool_(), "label_source == label_decoded", since=4),
    Column("confidence_source", pa.float64(), "top-1 softmax probability on the source image", since=4),
    Column("confidence_decoded", pa.float64(), "top-1 softmax probability on the decoded image", since=4),
)

SCHEMA_VERSION = max(c.since for c in REPORT_COLUMNS)
VERSION_KEY = b"imgpress.schema_version"


def schema_of_version(version: int = SCHEMA_VERSION) -> pa.Schema:
    """The report schema as version ``version`` wrote it (no metadata)."""
    return pa.schema([c.field for c in REPORT_COLUMNS if c.since <= version])


REPORT_SCHEMA = schema_of_version()
COLUMNS = tuple(REPORT_SCHEMA.names)  # the column names, in order
_STAMPED = REPORT_SCHEMA.with_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode()})


def rows_to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows (dicts; missing keys are null, extra keys ignored) as a table of the current schema."""
    rows = list(rows)
    return pa.table({name: [r.get(name) for r in rows] for name in COLUMNS}, schema=_STAMPED)


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


WRITER_KEY = b"imgpress.writer"  # storage.writer_id() of the process that wrote a report


def write_report(url: str, rows: Iterable[dict], storage: Storage = Storage()) -> None:
    table = rows_to_table(rows)
    table = table.replace_schema_metadata({**table.schema.metadata, WRITER_KEY: writer_id().encode()})
    write_bytes(url, to_parquet(table), storage)


def report_writer(url: str, storage: Storage = Storage()) -> str | None:
    """The ``storage.writer_id()`` a report file names (``None``: written before it was recorded)."""
    writer = (pq.read_schema(io.BytesIO(read_bytes(url, storage))).metadata or {}).get(WRITER_KEY)
    return writer.decode() if writer else None


def schema_version_of(schema: pa.Schema) -> int:
    """The version a file's schema says it was written with (files without the key: 1)."""
    return int((schema.metadata or {}).get(VERSION_KEY, b"1"))


def ensure_schema_file(dest: str, storage: Storage = Storage()) -> bool:
    """Write ``reports/0-schema.parquet`` (no rows, this version's schema) unless a newer one is there.

    Returns whether it was written. See :mod:`tasks.layout` for why readers need it.
    """
    url = schema_url(dest)
    try:
        present = schema_version_of(pq.read_schema(io.BytesIO(read_bytes(url, storage))))
    except (FileNotFoundError, OSError, ValueError, pa.ArrowException):
        present = 0
    if present >= SCHEMA_VERSION:
        return False
    write_bytes(url, to_parquet(_STAMPED.empty_table()), storage)
    return True


def read_report(url: str, storage: Storage = Storage()) -> pa.Table:
    """One report file in the current schema (columns it predates are null)."""
    return pq.read_table(io.BytesIO(read_bytes(url, storage)), schema=REPORT_SCHEMA)


def read_reports(dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None) -> pa.Table:
    """Every finished shard's rows under ``dest`` (optionally only some runs) as one table.

    Only report files whose shard marker exists count: a file without one belongs to an
    attempt that did not finish and will be rewritten when the run resumes.
    """
    tables = [read_report(url, storage) for _, url in finished_reports(dest, storage, run_ids=run_ids)]
    return pa.concat_tables(tables) if tables else REPORT_SCHEMA.empty_table()


def schema_json() -> list[dict]:
    """The column record kept in ``tests/fixtures/report_schema.json`` (append-only)."""
    return [
        {"name": c.name, "type": str(c.type), "nullable": c.nullable, "since": c.since} for c in REPORT_COLUMNS
    ]

