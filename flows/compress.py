"""``compress_collection``: list, shard, compress on Dask, report."""

from __future__ import annotations

import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.utilities.annotations import quote

from compressors import get_codec
from flows.params import CompressRequest
from flows.runner import Progress, dask_runner, map_on_cluster
from tasks import prefect_tasks as t
from tasks.plan import resolve_codec_params, resolve_helpers
from tasks.shard import compress_shard_retrying
from tasks.storage import Storage


@contextlib.contextmanager
def _alongside():
    """``alongside(fn, *args, **kwargs)`` calls run in one thread, in this run's Prefect context,
    while the flow goes on; the block waits for them at its end and raises their errors.

    For API calls whose answer the flow does not need (artifacts): each is a round trip to the
    server, ~20-50 ms of a run's fixed cost when made one after the other."""
    calls, futures = ThreadPoolExecutor(max_workers=1), []

    def alongside(fn, *args, **kwargs):
        futures.append(calls.submit(contextvars.copy_context().run, fn, *args, **kwargs))

    try:
        yield alongside
    finally:
        calls.shutdown(wait=True)
    for future in futures:
        future.result()


@flow(name="compress-collection", task_runner=dask_runner(), log_prints=True)
def compress_collection(request: CompressRequest) -> dict:
    """Compress every image under ``request.source``; one Parquet report per shard."""
    logger = get_run_logger()
    codec = get_codec(request.codec)
    storage = Storage(endpoint_url=request.endpoint_url)
    params, model_url = resolve_codec_params(codec.name, request.codec_params(), storage)
    helpers, helper_urls = resolve_helpers(request.postfilter, request.classifier, storage)
    plan = t.prepare_run(
        request.source, request.dest, codec.name, params, shard_size=request.shard_size,
        storage=storage, max_pixels=int(request.max_megapixels * 1e6), model_url=model_url,
        helper_urls=helper_urls, **helpers,
    )
    logger.info(
        "run %s: %d images listed, %d already done, %d shards to run",
        plan.run_id, plan.listed, plan.already_done, len(plan.specs),
    )
    # Shards go to Dask as plain tasks (their retries are compress_shard_retrying's): a
    # Prefect task run per shard costs ~200 ms; the run page shows a progress bar instead.
    progress = Progress(f"compress-{plan.run_id}-progress", len(plan.specs))
    summaries = map_on_cluster(compress_shard_retrying, plan.specs, key=f"compress-{plan.run_id}",
                               on_submitted=progress.start, on_done=progress.update)
    # quote(): Prefect walks every task input looking for futures, and the plan and the
    # summaries hold an entry per image and per shard (measured: 0.6 s at 10,000 images,
    # 4.6 s at 100,000)
    summary = t.finish_run(quote(plan), quote(summaries), storage)
    with _alongside() as alongside:  # the run page's last API calls while the run report is drawn
        alongside(progress.update, len(plan.specs), force=True)
        alongside(
            create_table_artifact, key=f"compress-{plan.run_id}", table=[summary],
            description=f"imgpress {codec.name} run {plan.run_id}: {request.source} -> {request.dest}",
        )
        markdown, html_url = t.write_run_report(request.dest, plan.run_id, storage, summary)
    create_markdown_artifact(
        key=f"compress-{plan.run_id}-summary", markdown=markdown,
        description=f"HTML report: {html_url}" if html_url else "imgpress run summary",
    )
    if request.fail_on_error and summary["errors"]:
        raise RuntimeError(f"{summary['errors']} images failed; see the report under {request.dest}/reports")
    return summary
