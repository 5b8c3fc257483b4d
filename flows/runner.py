"""Where the shards run: a local Dask cluster by default, an existing one by address.

``IMGPRESS_DASK_ADDRESS`` (or the ``address`` argument) points every flow at an
existing scheduler, so a deployment moves to a bigger cluster with no code change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid

from prefect_dask import DaskTaskRunner

ADDRESS_ENV = "IMGPRESS_DASK_ADDRESS"
WORKERS_ENV = "IMGPRESS_DASK_WORKERS"


def dask_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    address = cluster_address(address)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(workers))


def cluster_address(address: str | None = None) -> str | None:
    """The existing scheduler to use: ``address``, else ``IMGPRESS_DASK_ADDRESS``, else none."""
    return address or os.environ.get(ADDRESS_ENV) or None


def local_cluster_kwargs(workers: int | None = None) -> dict:
    """The local cluster a run starts when it is given none."""
    n = workers or int(os.environ.get(WORKERS_ENV, 0)) or os.cpu_count() or 1
    # One single-threaded process per core: codecs and metrics hold the GIL in places.
    # Without the worker's statistical profiler (a stack sample every 10 ms on the worker's
    # event loop, which takes the GIL from the shard it interrupts): the workers' CPU on the same
    # 128-px JPEG shards measured 10 % lower without it (README, pipeline overhead). A cluster of your own
    # (--dask-address) keeps whatever its configuration says.
    return {"n_workers": n, "threads_per_worker": 1, "processes": True,
            "dashboard_address": ":0", "silence_logs": logging.WARNING,
            "config": {"distributed.worker.profile.enabled": False}}


def local_cluster(workers: int | None = None):
    """Start that local cluster now (a context manager that stops it), e.g. while a Prefect
    server starts: the CLI then runs its flow on it by address."""
    from distributed import LocalCluster  # noqa: PLC0415

    return LocalCluster(**local_cluster_kwargs(workers))


class Progress:
    """The run page's progress bar (a Prefect progress artifact), updated at most every 2 s.

    Created by ``start()`` once the shards are submitted, so that API call overlaps their work.
    """

    def __init__(self, key: str, total: int) -> None:
        self.key, self.total, self.last, self.id = key, max(total, 1), time.monotonic(), None

    def start(self) -> None:
        from prefect.artifacts import create_progress_artifact  # noqa: PLC0415

        self.id = create_progress_artifact(progress=0.0, key=self.key, description="shards finished (%)")
        self.last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        from prefect.artifacts import update_progress_artifact  # noqa: PLC0415

        if self.id is None:
            self.start()
        if force or time.monotonic() - self.last >= 2.0:
            update_progress_artifact(self.id, progress=100.0 * done / self.total)
            self.last = time.monotonic()


def map_on_cluster(fn, items, *, key: str, on_submitted=None, on_done=None) -> list:
    """Inside a flow on Dask: ``fn`` over ``items`` as plain Dask tasks, results as they finish.

    For many short units of work (shards): a Prefect task run per item costs ~200 ms
    under DaskTaskRunner, a plain Dask task a few ms. ``fn`` must handle its own retries;
    a worker that dies is replaced by the scheduler, which reruns its tasks elsewhere.
    ``on_submitted()`` is called once every item is on the cluster (work that can overlap
    theirs), ``on_done(finished)`` after each result (e.g. to show progress).
    """
    from distributed import as_completed  # noqa: PLC0415
    from prefect.context import FlowRunContext  # noqa: PLC0415

    if not items:
        return []
    client = FlowRunContext.get().task_runner.client  # the flow's own (started on first use)
    call = uuid.uuid4().hex[:8]  # two runs at once on one cluster must not share task keys
    futures = client.map(fn, items, key=[f"{key}-{call}-{i}" for i in range(len(items))], pure=False)
    if on_submitted is not None:
        on_submitted()
    results = []
    for future in as_completed(futures, loop=client.loop):  # the flow's client is not the default one
        results.append(future.result())
        future.release()  # results are small, but 100,000 of them need not stay on the cluster
        if on_done is not None:
            on_done(len(results))
    return results


@contextlib.contextmanager
def gpu_annotation(logger=None):
    """Inside a flow on Dask: route the enclosed submits to GPU workers, if the cluster has any.

    A task annotated with a resource no worker has waits forever, so the annotation is
    applied only when some worker advertises ``GPU`` (``dask worker --resources GPU=1``).
    """
    import dask  # noqa: PLC0415
    from prefect_dask import get_dask_client  # noqa: PLC0415

    with get_dask_client() as client:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        gpus = sum(1 for w in workers if w.get("resources", {}).get("GPU", 0) > 0)
    if logger:
        logger.info("cluster has %d GPU worker(s): training runs on %s", gpus, "a GPU worker" if gpus else "any worker")
    if gpus:
        with dask.annotate(resources={"GPU": 1}):
            yield True
    else:
        yield False
