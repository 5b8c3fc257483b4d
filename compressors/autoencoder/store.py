"""Model files (safetensors + JSON metadata) and the in-process model store.

A model is two blobs: ``<id>.safetensors`` (weights; never pickle) and ``<id>.json``
(architecture, quality lambdas, tensor shapes, training record). The model id is the
first 16 hex digits of the sha256 of the safetensors bytes, so an artifact that names
its model id names exactly one set of weights. No file I/O beyond reading the shipped
models folder: callers hand bytes to :func:`load_model`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .model import MeanScaleHyperprior

SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_FILE = SHIPPED_DIR / "DEFAULT"  # one line: the id of the default shipped model
ID_HEX = 16
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024

_lock = threading.Lock()
_models: dict[str, "LoadedModel"] = {}


def model_id_of(safetensors_bytes: bytes) -> str:
    return hashlib.sha256(safetensors_bytes).hexdigest()[:ID_HEX]


def serialize(model: MeanScaleHyperprior, metadata: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """``(model_id, safetensors_bytes, metadata_json_bytes)`` for ``model``."""
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state)
    mid = model_id_of(blob)
    meta = dict(metadata)
    lineage = (meta.get("training") or {}).get("lineage")
    if lineage and lineage[-1].get("model_id") is None:  # this run's own entry learns its id here
        lineage[-1]["model_id"] = mid
        lineage[-1]["total_steps"] = sum(int(e.get("steps") or 0) for e in lineage)
    meta.update(
        model_id=mid,
        format="safetensors",
        arch={"class": "MeanScaleHyperprior", "N": model.N, "M": model.M, "qualities": model.qualities},
        tensors={k: list(v.shape) for k, v in state.items()},
    )
    return mid, blob, json.dumps(meta, indent=1, sort_keys=True).encode()


def save_model_dir(model: MeanScaleHyperprior, metadata: dict[str, Any], out_dir: str | Path) -> str:
    """Write ``<id>.safetensors`` and ``<id>.json`` into a local folder; return the id."""
    mid, blob, meta = serialize(model, metadata)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{mid}.safetensors").write_bytes(blob)
    (out / f"{mid}.json").write_bytes(meta)
    return mid


def _check_safetensors(blob: bytes) -> None:
    # safetensors = u64 header length + JSON header; a pickle starts with 0x80 and fails here.
    if len(blob) < 8:
        raise ValueError("model weights are not a safetensors file (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > min(_SAFETENSORS_MAX_HEADER, len(blob) - 8) or blob[8:9] != b"{":
        raise ValueError("model weights are not a safetensors file (pickle and other formats are refused)")


def build_model(safetensors_bytes: bytes, metadata_json: bytes | str | dict) -> tuple[MeanScaleHyperprior, dict]:
    """Validate and instantiate a model from safetensors bytes and its metadata (CPU, eval)."""
    _check_safetensors(safetensors_bytes)
    meta = metadata_json if isinstance(metadata_json, dict) else json.loads(metadata_json)
    arch = meta.get("arch") or {}
    if arch.get("class") != "MeanScaleHyperprior":
        raise ValueError(f"unknown model architecture {arch.get('class')!r}")
    mid = model_id_of(safetensors_bytes)
    if meta.get("model_id") not in (None, mid):
        raise ValueError(f"metadata names model {meta.get('model_id')} but the weights hash to {mid}")
    state = st_load(safetensors_bytes)
    expected = {k: tuple(v) for k, v in meta.get("tensors", {}).items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:5]
        raise ValueError(f"model tensors do not match the metadata shapes: {diff}")
    model = MeanScaleHyperprior(int(arch["N"]), int(arch["M"]), int(arch["qualities"]))
    model.load_state_dict(state, strict=True)  # also checks shapes against the architecture
    model.eval()
    meta = dict(meta, model_id=mid)
    return model, meta


class LoadedModel:
    """A model frozen for coding: float32 CPU weights plus integer-exact entropy tables."""

    def __init__(self, model: MeanScaleHyperprior, metadata: dict):
        from .entropy import EntropyTables

        self.model = model
        self.metadata = metadata
        self.model_id: str = metadata["model_id"]
        self.qualities: int = model.qualities
        self.tables = EntropyTables.from_model(model)


def load_model(safetensors_bytes: bytes, metadata_json_bytes: bytes | str) -> str:
    """Register a model given as bytes (e.g. read by the tasks layer via fsspec); return its id."""
    model, meta = build_model(safetensors_bytes, metadata_json_bytes)
    with _lock:
        if meta["model_id"] not in _models:
            _models[meta["model_id"]] = LoadedModel(model, meta)
    return meta["model_id"]


def shipped_ids() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.safetensors"))


def default_model_id() -> str:
    """Id of the default shipped model, or ``""`` when none is shipped."""
    if DEFAULT_FILE.exists():
        return DEFAULT_FILE.read_text().strip()
    ids = shipped_ids()
    return ids[-1] if ids else ""


def known_ids() -> set[str]:
    with _lock:
        return set(_models) | set(shipped_ids())


def get_model(model_id: str) -> LoadedModel:
    """The loaded model with this id (shipped models load on first use)."""
    with _lock:
        if model_id in _models:
            return _models[model_id]
    weights = SHIPPED_DIR / f"{model_id}.safetensors"
    if len(model_id) != ID_HEX or not weights.exists():
        raise ValueError(
            f"unknown autoencoder model id {model_id!r}; load it with load_model() first "
            f"(shipped: {', '.join(shipped_ids()) or 'none'})"
        )
    mid = load_model(weights.read_bytes(), (SHIPPED_DIR / f"{model_id}.json").read_bytes())
    if mid != model_id:
        raise ValueError(f"shipped model file {weights.name} hashes to {mid}, not {model_id}")
    return _models[mid]
