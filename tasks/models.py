"""Model files on object storage, for every kind of trained model (codecs do no I/O themselves).

A model reference is a model id (16 hex digits: a shipped model, or one already loaded in
this process), a shipped model's name (e.g. ``jpeg`` for a post-filter), or the URL of its
``<id>.safetensors`` file (the ``<id>.json`` metadata lies beside it) or of a folder holding
exactly one model.
"""

from __future__ import annotations

from functools import lru_cache

from compressors.models import is_model_id  # noqa: F401  (re-exported)
from tasks.storage import Storage, list_files, read_bytes


def is_url(ref: str) -> bool:
    """A URL or path (has a separator or a scheme), as opposed to a model id or shipped name."""
    return "/" in ref or "\\" in ref or ref.endswith(".safetensors")


def model_files(ref: str, storage: Storage = Storage()) -> tuple[bytes, bytes]:
    """``(safetensors_bytes, metadata_json_bytes)`` of the model at URL ``ref``."""
    if not ref.endswith(".safetensors"):
        found = [rel for rel, _ in list_files(ref, storage, extensions=(".safetensors",))]
        if len(found) != 1:
            raise ValueError(f"{ref} must hold exactly one .safetensors model, found {len(found)}")
        ref = ref.rstrip("/") + "/" + found[0]
    return read_bytes(ref, storage), read_bytes(ref[: -len(".safetensors")] + ".json", storage)


def shipped_files(ref: str, kind: str) -> tuple[bytes, bytes]:
    """The two blobs of a shipped model of ``kind``, by id or name."""
    from compressors import models  # noqa: PLC0415

    path = models.shipped(kind).get(models.resolve_ref(ref, kind))
    if path is None:
        raise ValueError(f"no shipped {kind} model {ref}; pass the URL of a trained model's .safetensors")
    return path.read_bytes(), path.with_suffix(".json").read_bytes()


def model_bytes(ref: str, kind: str, storage: Storage = Storage()) -> tuple[bytes, bytes]:
    """The two blobs of model ``ref`` (shipped id/name, or URL)."""
    return model_files(ref, storage) if is_url(ref) else shipped_files(ref, kind)


@lru_cache(maxsize=16)
def ensure_model(ref: str, storage: Storage = Storage(), kind: str | None = "autoencoder") -> str:
    """Make model ``ref`` (id, shipped name or URL) of ``kind`` available in this process; return its id.

    ``kind=None`` (a URL only): whatever kind the model's metadata names.
    """
    from compressors import models  # noqa: PLC0415  (torch: only when used)

    if not is_url(ref):
        mid = models.resolve_ref(ref, kind)
        if mid not in models.known_ids(kind):
            raise ValueError(f"unknown {kind} model id {mid}; pass the URL of its .safetensors file")
        return mid
    return models.load_model(*model_files(ref, storage), kind=kind)
