"""Thin Prefect tasks over the plain functions: retries and names live here, logic does not."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import plan, shard
from tasks.storage import DestinationError

PERMANENT = (ValueError, FileNotFoundError, PermissionError, DestinationError)


def transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix: a bad config or a refused destination stays refused.

    (Storage hiccups are already retried with backoff inside botocore/s3fs.)
    """
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return True


# Shards are idempotent (content-addressed ids, whole-object writes), so retrying is safe.
RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient, cache_policy=NO_CACHE)

prepare_run = task(plan.prepare_run, name="prepare_run", **RETRIES)
compress_shard = task(shard.compress_shard, name="compress_shard", task_run_name="compress {spec.shard_id}", **RETRIES)
decompress_shard = task(shard.decompress_shard, name="decompress_shard", **RETRIES)
finish_run = task(plan.finish_run, name="finish_run", **RETRIES)
