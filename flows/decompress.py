"""``decompress_collection``: give back originals (or PNGs of the pixels), sharded on Dask."""

from __future__ import annotations

from prefect import flow
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped

from flows.params import DecompressRequest
from flows.runner import dask_runner
from tasks import prefect_tasks as t
from tasks.shard import decompress_context
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
    futures = t.decompress_shard.map(
        unmapped(request.source), unmapped(request.dest), chunks, unmapped(storage), unmapped(request.model),
        unmapped(context.codec), [context.for_files(chunk) for chunk in chunks],
        unmapped(request.postfilter),
    )
    results = [f.result() for f in as_completed(futures)]
    return {
        "images": sum(r["images"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_rows": [e for r in results for e in r["error_rows"]][:100],
    }
