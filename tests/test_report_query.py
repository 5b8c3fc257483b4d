"""Report questions (statistics, worst images, errors, comparisons), SQL, and the HTML report.

Real runs throughout: shards compressed by the plain functions (no Prefect needed for
the numbers), one run through the flow on the real Prefect server and Dask cluster for
its run-page summary, and one destination on moto's S3.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgpress.cli import app
from imgpress.demo import SAMPLES
from tasks import plan, shard
from tasks.html_report import ERROR_GAIN, error_map, markdown_summary, render_html
from tasks.plan import ShardSpec, write_marker
from tasks.query import codec_stats, compare_runs, error_rows, open_reports, worst_images
from tasks.layout import report_url
from tasks.report import read_reports, write_report
from tasks.storage import Storage, write_bytes

runner = CliRunner()


def compress(source: str, dest: str, quality: int, storage: Storage = Storage()) -> str:
    """One real jpeg run through the plain shard functions; returns its run id."""
    run = plan.prepare_run(source, dest, "jpeg", {"quality": quality}, shard_size=5, storage=storage)
    plan.finish_run(run, [shard.compress_shard(spec) for spec in run.specs], storage)
    return run.run_id


@pytest.fixture(scope="module")
def two_runs(sample_collection, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("reports"))
    low, high = compress(sample_collection, dest, 30), compress(sample_collection, dest, 85)
    return dest, low, high


def cli(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def ok_rows(dest: str, run_id: str) -> list[dict]:
    return [r for r in read_reports(dest, run_ids=[run_id]).to_pylist() if r["status"] == "ok"]


def test_statistics_per_run_give_means_and_p50_p90_p99_of_every_metric(two_runs):
    dest, low, high = two_runs
    with open_reports(dest, materialize=True) as reports:
        stats = {s["run_id"]: s for s in codec_stats(reports)}
    assert set(stats) == {low, high}
    for run_id, s in stats.items():
        rows = ok_rows(dest, run_id)
        assert (s["images"], s["ok"], s["errors"]) == (len(SAMPLES) + 1, len(SAMPLES), 1)
        for metric in ("bpp", "psnr", "ssim", "encode_ms", "decode_ms"):
            values = np.array([r[metric] for r in rows])
            assert s[f"mean_{metric}"] == pytest.approx(values.mean())
            for p in (50, 90, 99):  # DuckDB's quantile_cont is numpy's linear interpolation
                assert s[f"p{p}_{metric}"] == pytest.approx(np.percentile(values, p))
    assert (
        stats[high]["mean_psnr"] > stats[low]["mean_psnr"]
        and stats[high]["mean_bpp"] > stats[low]["mean_bpp"]
    )


def test_worst_images_are_the_lowest_psnr_first(two_runs):
    dest, low, _ = two_runs
    with open_reports(dest, run_ids=[low], materialize=True) as reports:
        worst = worst_images(reports, 3)
    expected = sorted(ok_rows(dest, low), key=lambda r: r["psnr"])[:3]
    assert [w["source"] for w in worst] == [r["source"] for r in expected]


def test_errors_come_with_their_messages(two_runs):
    dest, low, high = two_runs
    with open_reports(dest, materialize=True) as reports:
        errors = error_rows(reports)
    assert {(e["run_id"], e["source"]) for e in errors} == {
        (low, "misc/truncated.png"),
        (high, "misc/truncated.png"),
    }
    assert all("truncated" in e["error"] for e in errors)


def test_a_comparison_uses_only_the_images_both_runs_coded(two_runs):
    dest, low, high = two_runs
    with open_reports(dest, materialize=True) as reports:
        [cmp] = compare_runs(reports, low)
    low_rows = {r["source"]: r for r in ok_rows(dest, low)}
    high_rows = {r["source"]: r for r in ok_rows(dest, high)}
    common = sorted(set(low_rows) & set(high_rows))
    assert cmp["run_id"] == high and cmp["baseline"] == low and cmp["common_images"] == len(common)
    assert cmp["psnr_delta"] == pytest.approx(
        np.mean([high_rows[s]["psnr"] - low_rows[s]["psnr"] for s in common])
    )
    assert cmp["bpp_change"] == pytest.approx(
        np.mean([high_rows[s]["bpp"] for s in common]) / np.mean([low_rows[s]["bpp"] for s in common]) - 1
    )
    with open_reports(dest) as reports, pytest.raises(ValueError, match="not in these reports"):
        compare_runs(reports, "jpeg-nosuchrun")


def test_report_command_answers_in_json_for_machines(two_runs):
    dest, low, high = two_runs
    out = json.loads(cli("report", dest, "--worst", "2", "--errors", "--compare", low, "--json").stdout)
    assert {r["run_id"] for r in out["runs"]} == {low, high}
    assert {"p50_psnr", "p90_bpp", "p99_ssim", "mean_encode_ms"} <= set(out["runs"][0])
    assert len(out["worst"]) == 2 and len(out["errors"]) == 2 and out["compare"][0]["run_id"] == high
    text = cli("report", dest, "--run", high, "--worst", "1").stdout
    assert high in text and low not in text and "p99" in text


def test_query_exposes_the_reports_as_a_sql_table(two_runs):
    dest, low, high = two_runs
    sql = (
        "SELECT run_id, count(*) AS n, count(*) FILTER (WHERE status = 'ok') AS ok "
        "FROM reports GROUP BY 1 ORDER BY 1"
    )
    rows = json.loads(cli("query", dest, sql, "--json").stdout)
    assert rows == sorted(
        [{"run_id": r, "n": len(SAMPLES) + 1, "ok": len(SAMPLES)} for r in (low, high)],
        key=lambda r: r["run_id"],
    )
    assert low in cli("query", dest, "SELECT DISTINCT run_id FROM reports").stdout
    bad = runner.invoke(app, ["query", dest, "SELECT nope FROM reports"])
    assert bad.exit_code == 2 and "nope" in bad.output


@pytest.fixture
def run_with_a_corrupt_report(two_runs, tmp_path):
    """A destination holding a good run and a finished shard whose Parquet file is garbage."""
    dest = str(tmp_path / "dest")
    rows = [
        {
            "run_id": "jpeg-good",
            "shard": "shard-a",
            "source": f"{i}.png",
            "codec": "jpeg",
            "params": "{}",
            "status": "ok",
            "bpp": 1.0 + i,
            "psnr": 30.0 + i,
            "ssim": 0.9,
        }
        for i in range(3)
    ]
    good = ShardSpec("jpeg-good", "shard-a", "/src", dest, "jpeg", "{}", ())
    write_report(report_url(dest, "jpeg-good", "shard-a"), rows)
    write_marker(good, {"images": 3})
    broken = ShardSpec("jpeg-broken", "shard-b", "/src", dest, "jpeg", "{}", ())
    write_bytes(report_url(dest, "jpeg-broken", "shard-b"), b"not parquet at all")
    write_marker(broken, {"images": 1})
    unfinished = ShardSpec("jpeg-good", "shard-c", "/src", dest, "jpeg", "{}", ())  # report, no marker
    write_report(report_url(dest, unfinished.run_id, unfinished.shard_id), rows)
    return dest


def test_query_never_opens_the_files_of_runs_its_sql_excludes(run_with_a_corrupt_report):
    dest = run_with_a_corrupt_report
    for sql in (
        "SELECT count(*) AS n FROM reports WHERE run_id = 'jpeg-good'",
        "SELECT count(*) AS n FROM reports WHERE run_id IN ('jpeg-good')",
    ):
        assert json.loads(cli("query", dest, sql, "--json").stdout) == [{"n": 3}]
    assert json.loads(
        cli("query", dest, "SELECT count(*) AS n FROM reports", "--run", "jpeg-good", "--json").stdout
    ) == [{"n": 3}]
    # Reading everything does reach the corrupt file: the pruning above is real.
    assert runner.invoke(app, ["query", dest, "SELECT count(*) FROM reports"]).exit_code == 2


def test_html_report_is_self_contained_with_plots_and_worst_image_triptychs(two_runs, tmp_path):
    dest, low, high = two_runs
    out = tmp_path / "report.html"
    cli("report", dest, "--html", str(out), "--worst", "3")
    page = out.read_text()
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", page)  # nothing outside the file
    assert page.count("<svg") == 2 and "<circle" in page  # R-D plot and histograms, inline
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3 * 3  # original|decoded|error map x 3
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    for row in sorted(ok_rows(dest, low) + ok_rows(dest, high), key=lambda r: r["psnr"])[:3]:
        assert row["source"] in page
    assert "corrupt or truncated" in page and low in page and high in page


def test_the_error_map_is_black_where_the_decoded_image_is_exact_and_bright_where_it_is_not():
    original = np.zeros((4, 4, 3), np.uint8)
    decoded = original.copy()
    decoded[0, 0] = 255
    emap = error_map(original, decoded)
    assert emap.shape == (4, 4, 3) and emap.dtype == np.uint8
    assert emap[0, 0].sum() > 600 and emap[3, 3].sum() < 20


def test_the_error_map_has_matplotlibs_inferno_colours_without_importing_matplotlib():
    import matplotlib  # the reference only: the report itself no longer imports it

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    decoded = np.clip(original.astype(int) + rng.integers(-90, 90, original.shape), 0, 255).astype(np.uint8)
    decoded[0, :3] = original[0, :3]  # exact pixels, and full-scale ones below
    decoded[1, :3] = 255 - original[1, :3]
    err = np.abs(original.astype(np.int16) - decoded.astype(np.int16)).mean(axis=2)
    scaled = np.clip(err * ERROR_GAIN / 255.0, 0.0, 1.0)
    expected = (matplotlib.colormaps["inferno"](scaled)[..., :3] * 255).round().astype(np.uint8)
    assert np.array_equal(error_map(original, decoded), expected)


def test_an_empty_destination_says_so(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "no finished reports" in result.output
    assert "No finished reports" in render_html(str(tmp_path))


def test_reports_on_s3_are_queried_and_rendered_through_fsspec(
    sample_collection, s3_endpoint, s3_bucket, tmp_path
):
    storage = Storage(endpoint_url=s3_endpoint)
    dest = f"{s3_bucket}/results"
    run_id = compress(sample_collection, dest, 50, storage)
    rows = json.loads(
        cli(
            "query",
            dest,
            "SELECT source, psnr FROM reports WHERE status = 'ok' ORDER BY psnr",
            "--endpoint-url",
            s3_endpoint,
            "--json",
        ).stdout
    )
    assert len(rows) == len(SAMPLES) and all(math.isfinite(r["psnr"]) for r in rows)
    out = tmp_path / "s3-report.html"
    answer = json.loads(
        cli(
            "report", dest, "--endpoint-url", s3_endpoint, "--worst", "1", "--html", str(out), "--json"
        ).stdout
    )
    assert answer["runs"][0]["run_id"] == run_id and answer["html"] == str(out)
    assert "cannot show this image" not in out.read_text()  # source and artifact read back from S3


def test_a_flow_run_writes_its_html_report_and_a_markdown_summary_artifact(
    prefect_server, dask_address, sample_collection, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.compress import compress_collection
    from flows.params import CompressRequest
    from flows.runner import dask_runner

    dest = str(tmp_path / "dest")
    request = CompressRequest(source=sample_collection, dest=dest, codec="jpeg", quality=40, shard_size=7)
    state = compress_collection.with_options(task_runner=dask_runner(dask_address))(
        request, return_state=True
    )
    summary = state.result()
    run_id = summary["run_id"]
    assert os.path.isfile(os.path.join(dest, "runs", run_id, "report.html"))
    with get_client(sync_client=True) as client:
        [markdown] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"compress-{run_id}-summary"]))
        )
        # the summary table and the progress bar's last update are sent from a thread beside the
        # report: they still belong to this flow run
        [table] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"compress-{run_id}"]))
        )
        [progress] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"compress-{run_id}-progress"]))
        )
    flow_run_id = str(state.state_details.flow_run_id)
    assert markdown.type == "markdown" and str(markdown.flow_run_id) == flow_run_id
    assert table.type == "table" and str(table.flow_run_id) == flow_run_id and run_id in str(table.data)
    assert progress.type == "progress" and str(progress.flow_run_id) == flow_run_id
    assert float(progress.data) == 100.0
    assert markdown.data == markdown_summary(
        dest, run_id, html_url=os.path.join(dest, "runs", run_id, "report.html")
    )
