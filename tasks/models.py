"""Model files on object storage, for the autoencoder codec (which does no I/O itself).

A model reference is either a model id (16 hex digits: a shipped model, or one already
loaded in this process) or the URL of its ``<id>.safetensors`` file (the ``<id>.json``
metadata lies beside it) or of a folder holding exactly one model.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tasks.storage import Storage, list_files, read_bytes

MODEL_ID = re.compile(r"^[0-9a-f]{16}$")


def is_model_id(ref: str) -> bool:
    return bool(MODEL_ID.match(ref))


def model_files(ref: str, storage: Storage = Storage()) -> tuple[bytes, bytes]:
    """``(safetensors_bytes, metadata_json_bytes)`` of the model at URL ``ref``."""
    if not ref.endswith(".safetensors"):
        found = [rel for rel, _ in list_files(ref, storage, extensions=(".safetensors",))]
        if len(found) != 1:
            raise ValueError(f"{ref} must hold exactly one .safetensors model, found {len(found)}")
        ref = ref.rstrip("/") + "/" + found[0]
    return read_bytes(ref, storage), read_bytes(ref[: -len(".safetensors")] + ".json", storage)


@lru_cache(maxsize=16)
def ensure_model(ref: str, storage: Storage = Storage()) -> str:
    """Make the model ``ref`` available to the autoencoder codec in this process; return its id."""
    from compressors.autoencoder import known_ids, load_model  # noqa: PLC0415  (torch: only when used)

    if is_model_id(ref):
        if ref not in known_ids():
            raise ValueError(f"unknown model id {ref}; pass the URL of its .safetensors file")
        return ref
    return load_model(*model_files(ref, storage))
