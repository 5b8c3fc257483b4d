"""The one model store and the one table of trainers, for every kind of model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from compressors import models
from compressors.registry import Param
from imgpress.cli import _kind_options


class Tiny(nn.Module):
    """A registered toy architecture (any kind's model is built the same way)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(1, width, 3)

    def config(self) -> dict:
        return {"width": self.width}


@pytest.fixture(scope="module")
def tiny_kind(tmp_path_factory):
    shipped = tmp_path_factory.mktemp("shipped")
    models.register_architecture(models.Architecture(cls=f"{__name__}:Tiny", kind="toy", shipped_dir=shipped))
    torch.manual_seed(0)
    mid, blob, meta = models.serialize(Tiny(4), {"name": "small"})
    (shipped / f"{mid}.safetensors").write_bytes(blob)
    (shipped / f"{mid}.json").write_bytes(meta)
    return mid, blob, meta


def test_metadata_names_the_kind_the_class_and_the_content_hash(tiny_kind):
    mid, blob, meta = tiny_kind
    m = json.loads(meta)
    assert (m["kind"], m["arch"], m["model_id"]) == ("toy", {"class": "Tiny", "width": 4}, models.model_id_of(blob))


def test_a_shipped_model_is_found_by_name_and_by_id(tiny_kind):
    mid = tiny_kind[0]
    assert models.get("small", "toy").model_id == mid
    assert models.get(mid, "toy").module.width == 4
    assert mid in models.known_ids("toy") and models.default_model_id("toy") == mid


def test_a_model_of_another_kind_is_refused(tiny_kind):
    mid, blob, meta = tiny_kind
    with pytest.raises(ValueError, match="not a 'autoencoder' model"):
        models.load_model(blob, meta, kind="autoencoder")
    with pytest.raises(ValueError, match="unknown autoencoder model"):
        models.get("small", "autoencoder")


def test_unregistered_classes_and_wrong_shapes_are_refused_before_loading(tiny_kind):
    _, blob, meta = tiny_kind
    m = json.loads(meta)
    with pytest.raises(ValueError, match="unknown model architecture"):
        models.build_model(blob, {**m, "arch": {"class": "Pickle"}})
    with pytest.raises(ValueError, match="shapes"):
        models.build_model(blob, {**m, "tensors": {**m["tensors"], "conv.weight": [1, 1, 1, 1]}})
    with pytest.raises(ValueError, match="not a safetensors"):
        models.build_model(b"\x80\x04pickle" + bytes(16), meta)


def test_trainer_options_are_typed_bounded_and_closed():
    trainer = models.Trainer(kind="toy", fit="x:y", description="", options={
        "for_codec": Param("jpeg", kind=str, choices=("jpeg", "webp")),
        "adversarial": Param(False, kind=bool), "lr": Param(1e-3, 1e-6, 1.0, kind=float)})
    assert trainer.canonical_options({"adversarial": "true", "lr": "0.01"}) == {
        "for_codec": "jpeg", "adversarial": True, "lr": 0.01}
    for bad, message in (({"color": 1}, "does not take color"), ({"lr": 5}, "outside"),
                         ({"for_codec": "gif"}, "not one of"), ({"adversarial": "maybe"}, "true or false")):
        with pytest.raises(ValueError, match=message):
            trainer.canonical_options(bad)


def test_the_cli_reads_each_kinds_options_as_flags():
    assert _kind_options(["--for", "jpeg", "--quality-range=30-90", "--adversarial"]) == {
        "for": "jpeg", "quality_range": "30-90", "adversarial": "true"}
    with pytest.raises(ValueError, match="unexpected"):
        _kind_options(["stray"])


def test_float16_storage_halves_the_file_and_loads_as_float32(tiny_kind):
    torch.manual_seed(1)
    module = Tiny(64)
    _, full, _ = models.serialize(module, {})
    mid, half, meta = models.serialize(module, {}, dtype="float16")
    assert len(half) < 0.6 * len(full) and json.loads(meta)["stored_dtype"] == "float16"
    loaded, _ = models.build_model(half, meta)
    assert loaded.conv.weight.dtype == torch.float32
    assert torch.equal(loaded.conv.weight, module.conv.weight.half().float())
