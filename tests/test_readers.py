"""The reports read as one table in the tools users already have, local and on S3.

The destination holds two codecs' runs (jpeg, and kmeans with a target PSNR, which fills
``decision``), error rows, and a run written by an older imgpress with report schema 1
(``tests/fixtures/dest-schema-v1``: no ``decision`` column, a Hive-named folder that the
next run migrates). Every reader must give ``run_id`` exactly once as a string, keep
``decision`` (null in the old rows), and return every row. Each call below is the line
the README gives for that tool.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from imgpress.cli import app
from tasks import plan, shard
from tasks.storage import Storage

polars = pytest.importorskip("polars")  # a test extra only

V1_DEST = Path(__file__).parent / "fixtures" / "dest-schema-v1"
V1_RUN, V1_ROWS = "webp-d9fc0f6c47", 3
RUNS = (("jpeg", {"quality": 40}), ("kmeans", {"target_psnr": 28.0}))
IMAGES = 4
ROWS = V1_ROWS + len(RUNS) * (IMAGES + 1)  # each run: every image and one truncated file


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """Small images, so that the runs take seconds: the readers are what is tested here."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(1)
    for i in range(IMAGES):
        y, x = np.mgrid[0:48, 0:64]
        image = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1) + rng.integers(0, 24, (48, 64, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    (root / "truncated.png").write_bytes((root / "img0.png").read_bytes()[:80])
    return str(root)


def build(source: str, dest: str, storage: Storage) -> set[str]:
    """Two runs over ``dest`` where an old version's run already is; returns the run ids."""
    run_ids = {V1_RUN}
    for codec, params in RUNS:
        run = plan.prepare_run(source, dest, codec, params, shard_size=6, storage=storage)
        plan.finish_run(run, [shard.compress_shard(s) for s in run.specs], storage)
        run_ids.add(run.run_id)
    return run_ids


@pytest.fixture(scope="module")
def local_dest(source, tmp_path_factory):
    dest = tmp_path_factory.mktemp("readers") / "dest"
    shutil.copytree(V1_DEST, dest)
    return str(dest), build(source, str(dest), Storage())


@pytest.fixture(scope="module")
def s3_dest(source, s3_endpoint):
    import boto3
    import s3fs

    bucket = "imgpress-readers"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(str(V1_DEST) + "/", f"{bucket}/dest/", recursive=True)
    dest = f"s3://{bucket}/dest"
    return dest, build(source, dest, Storage(endpoint_url=s3_endpoint)), s3_endpoint


def check(table: pa.Table, run_ids: set[str]) -> None:
    """One table: every row, run_id once and a string, decision kept (null for the old run)."""
    assert table.column_names.count("run_id") == 1 and _text(table.schema.field("run_id").type)
    assert _text(table.schema.field("decision").type)
    rows = table.to_pylist()
    assert len(rows) == ROWS
    assert {r["run_id"] for r in rows} == run_ids
    assert {r["codec"] for r in rows} == {"webp", "jpeg", "kmeans"}
    assert sum(r["status"] == "error" for r in rows) == 3
    old = [r for r in rows if r["run_id"] == V1_RUN]
    assert len(old) == V1_ROWS and all(r["decision"] is None for r in old)
    kmeans = [r for r in rows if r["codec"] == "kmeans" and r["status"] == "ok"]
    assert kmeans and all(json.loads(r["decision"])["colors"] >= 2 for r in kmeans)


def _text(t: pa.DataType) -> bool:
    """A plain string column (pandas and polars hand out large or view strings: the same values)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def from_pandas(df) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


def from_polars(df) -> pa.Table:
    return df.to_arrow()


def test_pandas_read_parquet(local_dest):
    dest, run_ids = local_dest
    df = pd.read_parquet(f"{dest}/reports")
    assert pd.api.types.is_string_dtype(df["run_id"]) and list(df.columns).count("run_id") == 1
    check(from_pandas(df), run_ids)


def test_pyarrow_read_table_and_dataset(local_dest):
    dest, run_ids = local_dest
    check(pq.read_table(f"{dest}/reports"), run_ids)
    check(ds.dataset(f"{dest}/reports", format="parquet").to_table(), run_ids)


def test_polars_scan_parquet(local_dest):
    dest, run_ids = local_dest
    df = polars.scan_parquet(f"{dest}/reports", hive_partitioning=True, missing_columns="insert").collect()
    assert df.schema["run_id"] == polars.String
    check(from_polars(df), run_ids)


def test_duckdb_read_parquet(local_dest):
    dest, run_ids = local_dest
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{dest}/reports/**/*.parquet', hive_partitioning=true, "
                     "union_by_name=true)")
    assert dict(zip(rel.columns, rel.types))["run_id"] == "VARCHAR"
    check(rel.arrow().read_all() if hasattr(rel.arrow(), "read_all") else rel.arrow(), run_ids)


def test_imgpress_query(local_dest):
    dest, run_ids = local_dest
    out = CliRunner().invoke(app, ["query", dest, "SELECT * FROM reports", "--json"])
    assert out.exit_code == 0, out.output
    check(from_query(out.stdout), run_ids)


def from_query(stdout: str) -> pa.Table:
    """``imgpress query --json`` rows (JSON: lossless PSNR is the string "inf", so keep the text columns)."""
    rows = json.loads(stdout)
    keep = ("run_id", "codec", "status", "decision")
    return pa.Table.from_pylist([{k: r[k] for k in keep} for r in rows],
                                schema=pa.schema([(k, pa.string()) for k in keep]))


def test_every_reader_on_s3(s3_dest):
    import s3fs
    from pyarrow.fs import S3FileSystem

    dest, run_ids, endpoint = s3_dest
    path = dest.removeprefix("s3://") + "/reports"
    check(from_pandas(pd.read_parquet(f"{dest}/reports", storage_options={"endpoint_url": endpoint})), run_ids)
    s3 = S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    check(pq.read_table(path, filesystem=s3), run_ids)
    check(ds.dataset(path, filesystem=s3, format="parquet").to_table(), run_ids)
    options = {"aws_endpoint_url": endpoint}
    df = polars.scan_parquet(f"{dest}/reports/", hive_partitioning=True, missing_columns="insert",
                             storage_options=options).collect()
    check(from_polars(df), run_ids)
    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem(endpoint_url=endpoint))
    rel = con.sql(f"SELECT * FROM read_parquet('{dest}/reports/**/*.parquet', hive_partitioning=true, "
                  "union_by_name=true)")
    check(rel.arrow().read_all() if hasattr(rel.arrow(), "read_all") else rel.arrow(), run_ids)
    out = CliRunner().invoke(app, ["query", dest, "SELECT * FROM reports", "--json", "--endpoint-url", endpoint])
    assert out.exit_code == 0, out.output
    check(from_query(out.stdout), run_ids)
