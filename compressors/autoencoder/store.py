"""The autoencoder's models in the one model store (:mod:`compressors.models`).

A model is two blobs: ``<id>.safetensors`` (weights; never pickle) and ``<id>.json``
(architecture, quality lambdas, tensor shapes, training record); the id is the first 16
hex digits of the sha256 of the weights. This module keeps the autoencoder's names for
the store's functions and defines what a loaded model is for coding (:class:`LoadedModel`:
float32 weights plus the frozen entropy tables).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from compressors import models
from compressors.models import ID_HEX, model_id_of  # noqa: F401  (re-exported)

from .model import MeanScaleHyperprior

KIND = "autoencoder"
SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_FILE = SHIPPED_DIR / "DEFAULT"  # one line: the id of the default shipped model
_legacy_lock = threading.Lock()


class LoadedModel:
    """A model frozen for coding: float32 CPU weights plus its entropy tables (the integer
    version-2 tables; the version-1 tables are built on first use)."""

    def __init__(self, model: MeanScaleHyperprior, metadata: dict):
        from .entropy import EntropyTables

        self.model = model
        self.metadata = metadata
        self.model_id: str = metadata["model_id"]
        self.qualities: int = model.qualities
        self.tables = EntropyTables(model)
        self._legacy = None
        # The float transforms run in channels_last: measured 1.6x (g_a) and 1.8x (g_s) faster
        # on this project's CPUs for a 768x512 image; the integer entropy path does not care.
        import torch

        model.to(memory_format=torch.channels_last)

    @property
    def legacy_tables(self):
        """Tables of container version 1 (artifacts written before version 2)."""
        from .entropy import LegacyTables

        with _legacy_lock:
            if self._legacy is None:
                self._legacy = LegacyTables(self.model)
            return self._legacy


def serialize(model: MeanScaleHyperprior, metadata: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """``(model_id, safetensors_bytes, metadata_json_bytes)`` for ``model``."""
    return models.serialize(model, metadata)


def save_model_dir(model: MeanScaleHyperprior, metadata: dict[str, Any], out_dir: str | Path) -> str:
    """Write ``<id>.safetensors`` and ``<id>.json`` into a local folder; return the id."""
    return models.save_model_dir(model, metadata, out_dir)


def build_model(safetensors_bytes: bytes, metadata_json: bytes | str | dict) -> tuple[MeanScaleHyperprior, dict]:
    """Validate and instantiate a model from safetensors bytes and its metadata (CPU, eval)."""
    return models.build_model(safetensors_bytes, metadata_json, kind=KIND)


def load_model(safetensors_bytes: bytes, metadata_json_bytes: bytes | str) -> str:
    """Register a model given as bytes (e.g. read by the tasks layer via fsspec); return its id."""
    return models.load_model(safetensors_bytes, metadata_json_bytes, kind=KIND)


def shipped_ids() -> list[str]:
    return sorted(models.shipped(KIND))


def default_model_id() -> str:
    """Id of the default shipped model, or ``""`` when none is shipped."""
    return models.default_model_id(KIND)


def known_ids() -> set[str]:
    return models.known_ids(KIND)


def get_model(model_id: str) -> LoadedModel:
    """The loaded model with this id (shipped models load on first use)."""
    return models.get(model_id, KIND).runtime
