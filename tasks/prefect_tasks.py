"""Every Prefect task of imgpress: thin wrappers over the plain functions.

Retries, names and caching live here, logic does not; flows import their tasks from here
and nowhere else (a new task is one line below).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import html_report, plan, shard, training
from tasks.shard import PERMANENT


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
RETRIES = dict(retries=len(shard.RETRY_DELAYS_S), retry_delay_seconds=list(shard.RETRY_DELAYS_S),
               retry_condition_fn=transient, cache_policy=NO_CACHE)

prepare_run = task(plan.prepare_run, name="prepare_run", **RETRIES)
compress_shard = task(shard.compress_shard, name="compress_shard", task_run_name="compress {spec.shard_id}", **RETRIES)
finish_run = task(plan.finish_run, name="finish_run", **RETRIES)

# The run's summary for people (markdown on the run page, HTML next to the manifest).
write_run_report = task(html_report.publish_run_views, name="write_run_report", cache_policy=NO_CACHE)

# Training: reading is idempotent (retried); training itself is long and not retried.
sample_crops = task(training.sample_crops, name="sample_crops", cache_policy=NO_CACHE, retries=2)
read_files = task(training.read_files, name="read_files", cache_policy=NO_CACHE, retries=2)
train_model = task(training.train_model, name="train_model", cache_policy=NO_CACHE)
publish_model = task(training.publish_model, name="publish_model", cache_policy=NO_CACHE, retries=2)
