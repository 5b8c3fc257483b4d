"""``train_model``: read the training data in Dask tasks, train on a GPU worker when there is one.

One flow for every kind of model (:data:`compressors.models.TRAINERS`): the request says
the kind; the kind says whether it trains on random crops of the collection or on its raw
files, and which plain function trains it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped

from compressors.models import get_trainer
from flows.params import TrainRequest
from flows.runner import dask_runner, gpu_annotation
from tasks import prefect_tasks as t
from tasks import training
from tasks.storage import Storage, list_files


# A training run is long; its result wait is bounded anyway so nothing hangs forever.
RESULT_SLACK_S = 30 * 60


@flow(name="train-model", task_runner=dask_runner(), log_prints=True)
def train_model(request: TrainRequest) -> dict:
    """Train (or fine-tune) a model of ``request.kind`` on ``request.source``; publish it to ``model_dest``."""
    logger = get_run_logger()
    trainer = get_trainer(request.kind)
    storage = Storage(endpoint_url=request.endpoint_url)
    listing = list_files(request.source, storage, exclude=(request.model_dest,),
                         **({"extensions": None} if trainer.data == "files" else {}))  # files: every file
    files = tuple(rel for rel, _ in listing)
    if not files:
        raise ValueError(f"no training files under {request.source}")
    chunks = [files[i : i + request.shard_size] for i in range(0, len(files), request.shard_size)]
    if trainer.data == "files":
        futures = t.read_files.map(unmapped(request.source), chunks, unmapped(storage))
        data = dict(sorted(item for f in as_completed(futures) for item in f.result().items()))
        logger.info("%d files read from %s", len(data), request.source)
    else:
        per_image = max(1, -(-request.crops // len(files)))
        futures = t.sample_crops.map(
            unmapped(request.source), chunks, unmapped(per_image), unmapped(request.crop_size),
            unmapped(request.seed), unmapped(storage),
        )
        data = [c for f in as_completed(futures) for c in f.result()]
        data.sort(key=lambda a: a.tobytes()[:64])  # as_completed order varies; training must not
        if not data:
            raise ValueError(f"no image under {request.source} is at least {request.crop_size} px on each side")
        logger.info("%d crops of %d px from %d images", len(data), request.crop_size, len(files))
    init = training.init_state(request.init_model, request.kind, storage)
    with gpu_annotation(logger):
        future = t.train_model.submit(
            request.kind, data, options=request.options, minutes=request.minutes, max_steps=request.max_steps,
            seed=request.seed, init=init,
        )
    model_id, weights, meta, worker = future.result(timeout=request.minutes * 60 + RESULT_SLACK_S)
    url = t.publish_model(request.model_dest, model_id, weights, meta, storage)
    summary = training.summary_of(model_id, url, meta, worker)
    logger.info("%s model %s written to %s", request.kind, model_id, url)
    return summary
