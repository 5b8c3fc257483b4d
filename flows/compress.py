"""``compress_collection``: list, shard, compress on Dask, report."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from compressors import get_codec
from flows.params import CompressRequest
from flows.runner import dask_runner
from tasks import html_report
from tasks import prefect_tasks as t
from tasks.models import ensure_model, is_url
from tasks.storage import Storage


# The run's summary for people (markdown on the run page, HTML next to the manifest).
write_run_report = task(html_report.publish_run_views, name="write_run_report", cache_policy=NO_CACHE)


@flow(name="compress-collection", task_runner=dask_runner(), log_prints=True)
def compress_collection(request: CompressRequest) -> dict:
    """Compress every image under ``request.source``; one Parquet report per shard."""
    logger = get_run_logger()
    codec = get_codec(request.codec)
    storage = Storage(endpoint_url=request.endpoint_url)
    wanted, model_url = request.codec_params(), None
    if request.model and is_url(request.model):
        model_url, wanted["model"] = request.model, ensure_model(request.model, storage)
    params = codec.canonical_params(wanted)
    plan = t.prepare_run(
        request.source, request.dest, codec.name, params, shard_size=request.shard_size,
        storage=storage, max_pixels=int(request.max_megapixels * 1e6), model_url=model_url,
    )
    logger.info(
        "run %s: %d images listed, %d already done, %d shards to run",
        plan.run_id, plan.listed, plan.already_done, len(plan.specs),
    )
    summaries = [f.result() for f in as_completed(t.compress_shard.map(plan.specs))]
    summary = t.finish_run(plan, summaries, storage)
    create_table_artifact(
        key=f"compress-{plan.run_id}", table=[summary],
        description=f"imgpress {codec.name} run {plan.run_id}: {request.source} -> {request.dest}",
    )
    markdown, html_url = write_run_report(request.dest, plan.run_id, storage, summary)
    create_markdown_artifact(
        key=f"compress-{plan.run_id}-summary", markdown=markdown,
        description=f"HTML report: {html_url}" if html_url else "imgpress run summary",
    )
    if request.fail_on_error and summary["errors"]:
        raise RuntimeError(f"{summary['errors']} images failed; see the report under {request.dest}/reports")
    return summary
