"""``train_autoencoder``: read crops in Dask tasks, train on a GPU worker when there is one."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped

from flows.params import TrainRequest
from flows.runner import dask_runner, gpu_annotation
from tasks import training
from tasks.storage import Storage, list_files

sample_crops = task(training.sample_crops, name="sample_crops", cache_policy=NO_CACHE, retries=2)
train_model = task(training.train_model, name="train_model", cache_policy=NO_CACHE)
publish_model = task(training.publish_model, name="publish_model", cache_policy=NO_CACHE, retries=2)

# A training run is long; its result wait is bounded anyway so nothing hangs forever.
RESULT_SLACK_S = 30 * 60


@flow(name="train-autoencoder", task_runner=dask_runner(), log_prints=True)
def train_autoencoder(request: TrainRequest) -> dict:
    """Train (or fine-tune) the autoencoder codec on ``request.source``; publish it to ``model_dest``."""
    logger = get_run_logger()
    storage = Storage(endpoint_url=request.endpoint_url)
    files = tuple(rel for rel, _ in list_files(request.source, storage, exclude=(request.model_dest,)))
    if not files:
        raise ValueError(f"no images under {request.source}")
    per_image = max(1, -(-request.crops // len(files)))
    chunks = [files[i : i + request.shard_size] for i in range(0, len(files), request.shard_size)]
    futures = sample_crops.map(
        unmapped(request.source), chunks, unmapped(per_image), unmapped(request.crop_size),
        unmapped(request.seed), unmapped(storage),
    )
    crops = [c for f in as_completed(futures) for c in f.result()]
    crops.sort(key=lambda a: a.tobytes()[:64])  # as_completed order varies; training must not
    if not crops:
        raise ValueError(f"no image under {request.source} is at least {request.crop_size} px on each side")
    logger.info("%d crops of %d px from %d images", len(crops), request.crop_size, len(files))
    init = training.init_state(request.init_model, storage)
    with gpu_annotation(logger):
        future = train_model.submit(
            crops, minutes=request.minutes, max_steps=request.max_steps, crop=request.crop_size,
            seed=request.seed, init=init,
        )
    model_id, weights, meta = future.result(timeout=request.minutes * 60 + RESULT_SLACK_S)
    url = publish_model(request.model_dest, model_id, weights, meta, storage)
    summary = training.summary_of(model_id, url, meta)
    logger.info("model %s written to %s", model_id, url)
    return summary
