"""Plain functions behind the training flow: read crops from any URL, train, publish the model."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from compressors.imageio import ImageError, decode_image
from tasks.models import is_model_id, model_files
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


def init_state(ref: str | None, storage: Storage = Storage()) -> tuple[bytes, bytes] | None:
    """The ``(safetensors, json)`` bytes of the model to fine-tune from: a shipped id or a URL."""
    if ref is None:
        return None
    if is_model_id(ref):
        from compressors.autoencoder.store import SHIPPED_DIR  # noqa: PLC0415

        path = SHIPPED_DIR / f"{ref}.safetensors"
        if not path.exists():
            raise ValueError(f"no shipped model {ref}; pass the URL of a trained model's .safetensors")
        return path.read_bytes(), path.with_suffix(".json").read_bytes()
    return model_files(ref, storage)


def train_model(
    crops: list[np.ndarray], *, minutes: float, max_steps: int | None, crop: int, seed: int,
    init: tuple[bytes, bytes] | None,
) -> tuple[str, bytes, bytes]:
    """Train on ``crops`` on CUDA when this worker has it, else CPU; return the serialized model."""
    import torch  # noqa: PLC0415

    from compressors.autoencoder.store import serialize  # noqa: PLC0415
    from compressors.autoencoder.train import TrainConfig, train  # noqa: PLC0415

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TrainConfig(crop=crop, minutes=minutes, steps=max_steps or 0)
    model, metadata = train(crops, config, device=device, seed=seed, init_state=init)
    return serialize(model, metadata)


def publish_model(model_dest: str, model_id: str, weights: bytes, meta: bytes, storage: Storage = Storage()) -> str:
    """Write ``<id>.safetensors`` then ``<id>.json`` (the JSON last: its presence means complete)."""
    url = join(model_dest, f"{model_id}.safetensors")
    write_bytes(url, weights, storage)
    write_bytes(join(model_dest, f"{model_id}.json"), meta, storage)
    return url


def summary_of(model_id: str, url: str, meta: bytes) -> dict:
    training = json.loads(meta).get("training", {})
    return {
        "model_id": model_id, "model_url": url, "steps": training.get("steps"), "wall_s": training.get("wall_s"),
        "device": training.get("device"), "final": training.get("final"),
    }
