"""Thin Prefect tasks over the plain functions: retries and names live here, logic does not."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import plan, shard

# Shards are idempotent (content-addressed ids, whole-object writes), so retrying is safe.
SHARD_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)

prepare_run = task(plan.prepare_run, name="prepare_run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
compress_shard = task(shard.compress_shard, name="compress_shard", task_run_name="compress {spec.shard_id}", **SHARD_RETRIES)
decompress_shard = task(shard.decompress_shard, name="decompress_shard", **SHARD_RETRIES)
finish_run = task(plan.finish_run, name="finish_run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
