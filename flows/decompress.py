"""``decompress_collection``: give back originals (or PNGs of the pixels), sharded on Dask."""

from __future__ import annotations

import functools

from prefect import flow
from prefect.runtime import flow_run

from flows.params import DecompressRequest
from flows.runner import Progress, dask_runner, map_on_cluster
from tasks.shard import decompress_context, decompress_shard, retrying
from tasks.storage import Storage, list_files


@flow(name="decompress-collection", task_runner=dask_runner(), log_prints=True)
def decompress_collection(request: DecompressRequest) -> dict:
    """Give back every artifact under ``request.source`` into ``request.dest``.

    Originals an artifact holds exactly come back byte for byte under their own names
    (checked against the run's report); other artifacts come back as PNG.
    """
    storage = Storage(endpoint_url=request.endpoint_url)
    context = decompress_context(request.source, storage)
    files = list_files(request.source, storage, extensions=context.extensions(), exclude=(request.dest,))
    chunks = [tuple(files[i : i + request.shard_size]) for i in range(0, len(files), request.shard_size)]
    # Shards go to Dask as plain tasks (retried by tasks.shard.retrying), like compress's:
    # a Prefect task run per shard costs ~200 ms; the run page shows a progress bar instead.
    jobs = [functools.partial(decompress_shard, request.source, request.dest, chunk, storage, request.model,
                              context.codec, context.for_files(chunk), request.postfilter) for chunk in chunks]
    progress = Progress(f"decompress-{flow_run.get_id()}-progress", len(jobs))
    results = map_on_cluster(retrying, jobs, key="decompress", on_submitted=progress.start, on_done=progress.update)
    if jobs:
        progress.update(len(jobs), force=True)
    return {
        "images": sum(r["images"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_rows": [e for r in results for e in r["error_rows"]][:100],
    }
