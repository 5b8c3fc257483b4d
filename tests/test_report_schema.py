"""The report schema is explicit, versioned and append-only; old destinations stay readable.

``tests/fixtures/dest-schema-v1`` is a destination written by imgpress at commit de51569
(report schema 1: no ``decision`` column, reports under ``reports/run_id=<id>/``): one
webp run of three images, one of them an error row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import layout, plan, shard
from tasks.report import (
    REPORT_COLUMNS,
    REPORT_SCHEMA,
    SCHEMA_VERSION,
    read_reports,
    schema_json,
    schema_of_version,
    schema_version_of,
)

FIXTURES = Path(__file__).parent / "fixtures"
V1_DEST = FIXTURES / "dest-schema-v1"
V1_RUN = "webp-d9fc0f6c47"
README = Path(__file__).parents[1] / "README.md"


def test_columns_are_only_ever_appended():
    released = json.loads((FIXTURES / "report_schema.json").read_text())
    current = schema_json()
    assert current[: len(released)] == released, "a released column was renamed, retyped, moved or removed"
    # (a new column is appended to REPORT_COLUMNS and then to the fixture, never inserted)


def test_versions_only_grow_and_later_columns_are_nullable():
    since = [c.since for c in REPORT_COLUMNS]
    assert since == sorted(since) and since[0] == 1
    assert all(c.nullable for c in REPORT_COLUMNS if c.since > 1)
    assert schema_of_version(SCHEMA_VERSION) == REPORT_SCHEMA


def test_every_column_is_in_the_readme_table():
    text = README.read_text()
    for c in REPORT_COLUMNS:
        assert f"| {c.name} |" in text or f"| {c.name}," in text or f", {c.name} |" in text or f", {c.name}," in text, c.name


def test_the_committed_v1_file_is_a_prefix_of_the_current_schema():
    (old,) = (V1_DEST / "reports" / f"run_id={V1_RUN}").glob("*.parquet")
    schema = pq.read_schema(old)
    assert schema_version_of(schema) == 1
    assert schema.remove_metadata() == schema_of_version(1)


def test_new_files_carry_the_schema_version(tmp_path):
    url = layout.report_url(str(tmp_path), "jpeg-0123456789", "shard-x")
    from tasks.report import write_report

    write_report(url, [{"run_id": "jpeg-0123456789", "shard": "shard-x", "source": "a.png", "codec": "jpeg",
                        "params": "{}", "status": "ok", "decision": '{"quality":3}', "not_a_column": 1}])
    schema = pq.read_schema(url)
    assert schema_version_of(schema) == SCHEMA_VERSION and schema.names == REPORT_SCHEMA.names


def test_a_run_on_an_old_destination_migrates_its_reports_and_reads_them_with_nulls(sample_collection, tmp_path):
    dest = tmp_path / "dest"
    shutil.copytree(V1_DEST, dest)
    run = plan.prepare_run(sample_collection, str(dest), "jpeg", {"quality": 50}, shard_size=50)
    plan.finish_run(run, [shard.compress_shard(s) for s in run.specs])

    assert not (dest / "reports" / f"run_id={V1_RUN}").exists()
    assert list((dest / "reports" / V1_RUN).glob("*.parquet"))
    schema_file = pq.read_schema(layout.schema_url(str(dest)))
    assert schema_version_of(schema_file) == SCHEMA_VERSION and schema_file.names == REPORT_SCHEMA.names

    table = read_reports(str(dest))
    assert table.schema == REPORT_SCHEMA
    rows = table.to_pylist()
    old = [r for r in rows if r["run_id"] == V1_RUN]
    assert len(old) == 3 and all(r["decision"] is None for r in old)
    assert sorted(r["status"] for r in old) == ["error", "ok", "ok"]
    assert {r["run_id"] for r in rows} == {V1_RUN, run.run_id}
    # migrating again finds nothing to move
    assert layout.migrate_legacy_reports(str(dest)) == 0


def test_a_newer_schema_file_is_not_replaced_by_an_older_version(tmp_path):
    from tasks.report import VERSION_KEY, ensure_schema_file, to_parquet

    dest = str(tmp_path)
    newer = REPORT_SCHEMA.append(pa.field("from_the_future", pa.string()))
    newer = newer.with_metadata({VERSION_KEY: str(SCHEMA_VERSION + 1).encode()})
    Path(layout.schema_url(dest)).parent.mkdir(parents=True)
    Path(layout.schema_url(dest)).write_bytes(to_parquet(newer.empty_table()))
    assert ensure_schema_file(dest) is False
    assert "from_the_future" in pq.read_schema(layout.schema_url(dest)).names


@pytest.mark.parametrize("name", ["Jpeg", "9jpeg", "jpeg xl", ""])
def test_codec_names_start_with_a_lowercase_letter(name):
    from compressors.registry import Codec, register

    with pytest.raises(ValueError, match="must match"):
        register(Codec(name, ".x", lambda im: b"", lambda b: None))
