"""One store for every kind of trained model, and one table of how each kind trains.

A model is two blobs: ``<id>.safetensors`` (weights; never pickle) and ``<id>.json``
(metadata: ``kind``, ``arch`` with the registered class name and its constructor
arguments, tensor shapes, training record). The model id is the first 16 hex digits of
the sha256 of the safetensors bytes, so an artifact that names a model id names exactly
one set of weights.

* :func:`register_architecture` declares a model class for a ``kind`` (``autoencoder``,
  ``lossless``, ``postfilter``, ``digits``, ``classifier`` ...), where that kind's shipped
  models live, and how a loaded model becomes the object its users need (``prepare``:
  e.g. the autoencoder's frozen entropy tables).
* :func:`load_model` validates and registers a model given as bytes (the tasks layer
  reads URLs); :func:`get` returns a loaded model by id or by shipped name.
* :func:`register_trainer` declares how a kind trains: a plain function, the data it
  wants (random crops of a collection, or the raw files), and its options as
  :class:`~compressors.registry.Param` s, which the train flow, its UI form and
  ``imgpress train --kind KIND`` all read.

Nothing here imports torch at import time: classes and functions are named as
``"module:attribute"`` strings and imported when a model is built or trained, so
``import compressors`` stays light.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from compressors.registry import Param

ID_HEX = 16
MODEL_ID = re.compile(r"^[0-9a-f]{16}$")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Architecture:
    """A model class that the store may build.

    ``cls``: ``"module:Class"``; the class takes its metadata ``arch`` entries (all but
    ``"class"``) as keyword arguments and gives them back from ``config()``.
    ``prepare``: ``"module:function"`` turning ``(module, metadata)`` into what the kind's
    users get from :func:`get` (default: the module itself, in eval mode).
    ``shipped_dir``: the folder of this kind's shipped models (``DEFAULT`` there names the
    default one's id).
    """

    cls: str
    kind: str
    shipped_dir: Path | None = None
    prepare: str | None = None

    @property
    def name(self) -> str:
        return self.cls.rpartition(":")[2]


@dataclass(frozen=True)
class Trainer:
    """How models of one ``kind`` train.

    ``fit``: ``"module:function"`` with the signature
    ``fit(data, *, options, minutes, max_steps, device, seed, init, log) -> (module, metadata)``
    where ``data`` is a list of uint8 (H, W, 3) crops (``data="crops"``) or a dict of
    relative path -> file bytes (``data="files"``), ``init`` the ``(safetensors, json)``
    bytes of a model to start from, or ``None``.
    """

    kind: str
    fit: str
    description: str
    data: str = "crops"
    options: Mapping[str, Param] = field(default_factory=dict)

    def canonical_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        given = {k.replace("-", "_"): v for k, v in (options or {}).items() if v is not None}
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(sorted(self.options)) or "no options"
            raise ValueError(f"training kind {self.kind!r} does not take {', '.join(unknown)} (it takes {takes})")
        out = {}
        for name, spec in self.options.items():
            value = given.get(name, spec.default)
            if value is not None:
                value = spec.coerce(name, value, owner=f"train --kind {self.kind}")
            out[name] = value
        return out


ARCHITECTURES: dict[str, Architecture] = {}  # by class name (the metadata's arch["class"])
TRAINERS: dict[str, Trainer] = {}  # by kind

_lock = threading.Lock()
_loaded: dict[str, "LoadedModel"] = {}


@dataclass(frozen=True)
class LoadedModel:
    """A validated model in this process: its module, metadata and prepared runtime object."""

    model_id: str
    kind: str
    module: Any
    metadata: dict
    runtime: Any


def register_architecture(arch: Architecture) -> Architecture:
    existing = ARCHITECTURES.get(arch.name)
    if existing is not None and existing != arch:
        raise ValueError(f"architecture {arch.name!r} registered twice")
    ARCHITECTURES[arch.name] = arch
    return arch


def register_trainer(trainer: Trainer) -> Trainer:
    if trainer.kind in TRAINERS and TRAINERS[trainer.kind] != trainer:
        raise ValueError(f"trainer for kind {trainer.kind!r} registered twice")
    TRAINERS[trainer.kind] = trainer
    return trainer


def get_trainer(kind: str) -> Trainer:
    try:
        return TRAINERS[kind]
    except KeyError:
        raise ValueError(f"no trainer for kind {kind!r}; known: {', '.join(sorted(TRAINERS))}") from None


def kinds() -> list[str]:
    return sorted({a.kind for a in ARCHITECTURES.values()})


def model_id_of(safetensors_bytes: bytes) -> str:
    return hashlib.sha256(safetensors_bytes).hexdigest()[:ID_HEX]


def is_model_id(ref: str) -> bool:
    return bool(MODEL_ID.match(ref or ""))


def _architecture_of(module: Any) -> Architecture:
    for arch in ARCHITECTURES.values():
        if type(module).__name__ == arch.name and type(module).__module__ == arch.cls.partition(":")[0]:
            return arch
    raise ValueError(f"{type(module).__name__} is not a registered model architecture")


def serialize(module: Any, metadata: Mapping[str, Any], *, dtype: str = "float32") -> tuple[str, bytes, bytes]:
    """``(model_id, safetensors_bytes, metadata_json_bytes)`` of a registered module.

    ``dtype="float16"`` stores the weights at half size (a shipped model under 8 MB); they
    load into float32 parameters, so inference is float32 either way, and the model id is
    the hash of exactly the bytes stored.
    """
    import torch  # noqa: PLC0415
    from safetensors.torch import save as st_save  # noqa: PLC0415

    if dtype not in ("float32", "float16"):
        raise ValueError(f"weights are stored as float32 or float16, not {dtype}")
    arch = _architecture_of(module)
    state = {k: v.detach().to("cpu", getattr(torch, dtype)).contiguous() for k, v in module.state_dict().items()}
    blob = st_save(state)
    mid = model_id_of(blob)
    meta = dict(metadata)
    lineage = (meta.get("training") or {}).get("lineage")
    if lineage and lineage[-1].get("model_id") is None:  # this run's own entry learns its id here
        lineage[-1]["model_id"] = mid
        lineage[-1]["total_steps"] = sum(int(e.get("steps") or 0) for e in lineage)
    meta.update(model_id=mid, kind=arch.kind, format="safetensors", arch={"class": arch.name, **module.config()},
                tensors={k: list(v.shape) for k, v in state.items()}, stored_dtype=dtype)
    return mid, blob, json.dumps(meta, indent=1, sort_keys=True).encode()


def save_model_dir(module: Any, metadata: Mapping[str, Any], out_dir: str | Path, *, dtype: str = "float32") -> str:
    """Write ``<id>.safetensors`` and ``<id>.json`` into a local folder; return the id."""
    mid, blob, meta = serialize(module, metadata, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{mid}.safetensors").write_bytes(blob)
    (out / f"{mid}.json").write_bytes(meta)
    return mid


def check_safetensors(blob: bytes) -> None:
    """Refuse anything but a safetensors file (a pickle starts with 0x80 and fails here)."""
    if len(blob) < 8:
        raise ValueError("model weights are not a safetensors file (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > min(_SAFETENSORS_MAX_HEADER, len(blob) - 8) or blob[8:9] != b"{":
        raise ValueError("model weights are not a safetensors file (pickle and other formats are refused)")


def parse_metadata(metadata_json: bytes | str | Mapping) -> dict:
    if isinstance(metadata_json, Mapping):
        return dict(metadata_json)
    try:
        meta = json.loads(metadata_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"model metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError("model metadata must be a JSON object")
    return meta


def build_model(safetensors_bytes: bytes, metadata_json: bytes | str | Mapping, *, kind: str | None = None):
    """Validate and instantiate a model from its two blobs; ``(module, metadata)`` (CPU, eval).

    Checks, before any weight is used: the bytes are safetensors, the class is registered
    (and of ``kind`` when given), the metadata's id is the weights' hash, the tensor
    shapes equal the metadata's and the architecture's.
    """
    check_safetensors(safetensors_bytes)
    meta = parse_metadata(metadata_json)
    arch_meta = meta.get("arch") or {}
    arch = ARCHITECTURES.get(str(arch_meta.get("class")))
    if arch is None:
        raise ValueError(f"unknown model architecture {arch_meta.get('class')!r} "
                         f"(registered: {', '.join(sorted(ARCHITECTURES)) or 'none'})")
    model_kind = meta.get("kind") or arch.kind  # models written before kinds existed
    if model_kind != arch.kind or (kind is not None and model_kind != kind):
        raise ValueError(f"model is a {model_kind!r} model ({arch.name}), not a {kind or arch.kind!r} model")
    mid = model_id_of(safetensors_bytes)
    if meta.get("model_id") not in (None, mid):
        raise ValueError(f"metadata names model {meta.get('model_id')} but the weights hash to {mid}")
    from safetensors.torch import load as st_load  # noqa: PLC0415

    state = st_load(safetensors_bytes)
    expected = {k: tuple(v) for k, v in (meta.get("tensors") or {}).items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:5]
        raise ValueError(f"model tensors do not match the metadata shapes: {diff}")
    try:
        module = _resolve(arch.cls)(**{k: v for k, v in arch_meta.items() if k != "class"})
    except TypeError as exc:
        raise ValueError(f"model metadata does not describe a {arch.name}: {exc}") from None
    module.load_state_dict(state, strict=True)  # also checks shapes against the architecture
    module.eval()
    return module, dict(meta, model_id=mid, kind=arch.kind)


def load_model(safetensors_bytes: bytes, metadata_json: bytes | str | Mapping, *, kind: str | None = None) -> str:
    """Validate and register a model given as bytes (e.g. read from a URL); return its id."""
    module, meta = build_model(safetensors_bytes, metadata_json, kind=kind)  # validates even when cached
    mid = meta["model_id"]
    with _lock:
        if mid in _loaded:
            return mid
    arch = ARCHITECTURES[meta["arch"]["class"]]
    runtime = _resolve(arch.prepare)(module, meta) if arch.prepare else module
    with _lock:
        _loaded.setdefault(mid, LoadedModel(mid, arch.kind, module, meta, runtime))
    return mid


def shipped_dirs(kind: str) -> list[Path]:
    return sorted({a.shipped_dir for a in ARCHITECTURES.values() if a.kind == kind and a.shipped_dir})


def shipped(kind: str) -> dict[str, Path]:
    """Shipped models of ``kind``: id -> path of its safetensors file."""
    return {p.stem: p for d in shipped_dirs(kind) for p in sorted(d.glob("*.safetensors")) if is_model_id(p.stem)}


def shipped_names(kind: str) -> dict[str, str]:
    """Shipped models of ``kind`` that have a ``name`` in their metadata: name -> id."""
    out = {}
    for mid, path in shipped(kind).items():
        name = json.loads(path.with_suffix(".json").read_text()).get("name")
        if name:
            out[str(name)] = mid
    return out


def default_model_id(kind: str) -> str:
    """The id in the shipped folder's ``DEFAULT`` file, else the only/last shipped model; ``""`` if none."""
    for d in shipped_dirs(kind):
        if (d / "DEFAULT").exists():
            return (d / "DEFAULT").read_text().strip()
    ids = sorted(shipped(kind))
    return ids[-1] if ids else ""


def known_ids(kind: str | None = None) -> set[str]:
    with _lock:
        ids = {mid for mid, lm in _loaded.items() if kind is None or lm.kind == kind}
    kinds_ = [kind] if kind else kinds()
    return ids | {mid for k in kinds_ for mid in shipped(k)}


def resolve_ref(ref: str, kind: str) -> str:
    """A model id for ``ref``: an id (loaded or shipped) or a shipped model's name."""
    ref = (ref or "").strip()
    if is_model_id(ref):
        return ref
    names = shipped_names(kind)
    if ref in names:
        return names[ref]
    raise ValueError(f"unknown {kind} model {ref!r}: give a model id, a shipped name "
                     f"({', '.join(sorted(names)) or 'none'}) or the URL of its .safetensors")


def get(ref: str, kind: str) -> LoadedModel:
    """The loaded model ``ref`` (id or shipped name) of ``kind``; shipped ones load on first use."""
    mid = resolve_ref(ref, kind)
    with _lock:
        hit = _loaded.get(mid)
    if hit is None:
        path = shipped(kind).get(mid)
        if path is None:
            raise ValueError(f"unknown {kind} model id {mid!r}; load it with load_model() first "
                             f"(shipped: {', '.join(sorted(shipped(kind))) or 'none'})")
        loaded_id = load_model(path.read_bytes(), path.with_suffix(".json").read_bytes(), kind=kind)
        if loaded_id != mid:
            raise ValueError(f"shipped model file {path.name} hashes to {loaded_id}, not {mid}")
        with _lock:
            hit = _loaded[mid]
    if hit.kind != kind:
        raise ValueError(f"model {mid} is a {hit.kind!r} model, not a {kind!r} model")
    return hit


def describe(ref: str, kind: str) -> str:
    """``name@id`` of model ``ref`` (its id alone when it has no name), as report columns name models."""
    lm = get(ref, kind)
    name = lm.metadata.get("name")
    return f"{name}@{lm.model_id}" if name else lm.model_id


def train(kind: str, data: Any, *, options: Mapping[str, Any] | None = None, minutes: float,
          max_steps: int | None = None, device: str = "cpu", seed: int = 0,
          init: tuple[bytes, bytes] | None = None, log: Callable[[str], None] = print) -> tuple[str, bytes, bytes]:
    """Train a model of ``kind`` with its registered plain function; return it serialized."""
    trainer = get_trainer(kind)
    module, metadata = _resolve(trainer.fit)(
        data, options=trainer.canonical_options(options), minutes=minutes, max_steps=max_steps,
        device=device, seed=seed, init=init, log=log,
    )
    return serialize(module, metadata)


def main(argv: list[str] | None = None) -> None:
    """``python -m compressors.models ship MODEL.safetensors OUT_DIR [--float16]``: re-store a model to ship."""
    import argparse  # noqa: PLC0415

    # Run as __main__ this file is a second module object: use the package's (where kinds register).
    from compressors import models as store  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m compressors.models", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ship = sub.add_parser("ship", help="write a model again (e.g. with float16 weights) under a new id")
    ship.add_argument("weights", type=Path)
    ship.add_argument("out", type=Path)
    ship.add_argument("--float16", action="store_true")
    ship.add_argument("--name", default=None, help="a shipped name to record in the metadata")
    a = p.parse_args(argv)
    module, meta = store.build_model(a.weights.read_bytes(), a.weights.with_suffix(".json").read_bytes())
    meta.pop("model_id", None)
    if a.name:
        meta["name"] = a.name
    meta["derived_from"] = store.model_id_of(a.weights.read_bytes())
    mid = store.save_model_dir(module, meta, a.out, dtype="float16" if a.float16 else "float32")
    print(json.dumps({"model_id": mid, "out": str(a.out)}))


if __name__ == "__main__":
    main()
