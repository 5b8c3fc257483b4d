"""Plain functions behind the training flow: read crops from any URL, train, publish the model."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from compressors.imageio import ImageError, decode_image
from tasks.models import model_bytes
from tasks.storage import Storage, join, read_bytes, write_bytes


def sample_crops(
    source: str, files: tuple[str, ...], per_image: int, crop: int, seed: int, storage: Storage = Storage()
) -> list[np.ndarray]:
    """Random ``crop`` x ``crop`` RGB crops from each readable image (seeded per file).

    Images smaller than a crop, unreadable or grayscale-only files are skipped: a training
    set with a few bad files still trains.
    """
    out: list[np.ndarray] = []
    for rel in files:
        try:
            image = decode_image(read_bytes(join(source, rel), storage)).image
        except (ImageError, OSError):
            continue
        h, w, c = image.shape
        if h < crop or w < crop:
            continue
        if c == 1:
            image = np.repeat(image, 3, axis=2)
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")])
        for _ in range(per_image):
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            out.append(np.ascontiguousarray(image[y : y + crop, x : x + crop]))
    return out


def read_files(source: str, files: tuple[str, ...], storage: Storage = Storage()) -> dict[str, bytes]:
    """The raw bytes of ``files`` (for kinds that train on whole files, e.g. labelled digit sets)."""
    return {rel: read_bytes(join(source, rel), storage) for rel in files}


def init_state(ref: str | None, kind: str = "autoencoder", storage: Storage = Storage()) -> tuple[bytes, bytes] | None:
    """The ``(safetensors, json)`` bytes of the model to start from: a shipped id/name or a URL."""
    if ref is None:
        return None
    return model_bytes(ref, kind, storage)


def train_model(
    kind: str, data, *, options: dict, minutes: float, max_steps: int | None, seed: int,
    init: tuple[bytes, bytes] | None,
) -> tuple[str, bytes, bytes, str]:
    """Train a model of ``kind`` on CUDA when this worker has it, else CPU.

    Returns the model serialized ``(model_id, safetensors, json)`` and where it trained:
    the Dask worker's name (``dask worker --name``; its address when unnamed), or the host
    name outside Dask.
    """
    import torch  # noqa: PLC0415

    from compressors import models  # noqa: PLC0415

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_id, weights, meta = models.train(kind, data, options=options, minutes=minutes, max_steps=max_steps,
                                           device=device, seed=seed, init=init)
    return model_id, weights, meta, worker_name()


def worker_name() -> str:
    """The Dask worker running this call (its ``--name``, else its address), else this host's name."""
    import socket  # noqa: PLC0415

    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
    except (ImportError, ValueError):
        return socket.gethostname()
    return str(worker.name if worker.name is not None else worker.address)


def publish_model(model_dest: str, model_id: str, weights: bytes, meta: bytes, storage: Storage = Storage()) -> str:
    """Write ``<id>.safetensors`` then ``<id>.json`` (the JSON last: its presence means complete)."""
    url = join(model_dest, f"{model_id}.safetensors")
    write_bytes(url, weights, storage)
    write_bytes(join(model_dest, f"{model_id}.json"), meta, storage)
    return url


def summary_of(model_id: str, url: str, meta: bytes, worker: str | None = None) -> dict:
    data = json.loads(meta)
    training = data.get("training", {})
    return {
        "model_id": model_id, "kind": data.get("kind"), "model_url": url, "steps": training.get("steps"),
        "wall_s": training.get("wall_s"), "device": training.get("device"), "final": training.get("final"),
        "worker": worker,
    }
