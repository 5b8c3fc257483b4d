"""Registry, CLI and Prefect form agree on every codec parameter, because two of them are derived.

For each codec and each of its ``Param``s: the form (CompressRequest's JSON schema, which
the Prefect server validates runs against) has the field in that codec's section with the
same kind, bounds and help; ``imgpress compress --<name> value`` puts the value in that
codec's parameters; a value just outside the codec's bounds is refused by both.
"""

from __future__ import annotations

import json
import shutil

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from compressors import CODECS
from flows.params import RUN_FIELDS, CompressRequest, section_name
from imgpress import cli

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
CASES = [(c.name, n, p) for c in CODECS.values() for n, p in c.params.items()]


def a_value(p):
    """An allowed value different from the default where possible."""
    if p.choices:
        return p.choices[-1]
    if p.kind is bool:
        return not p.default
    if p.kind is str:
        return p.default or "x"
    return p.kind(p.hi if p.hi is not None else (p.lo if p.lo is not None else 3))


def too_big(p):
    return None if p.hi is None or p.kind not in (int, float) else p.kind(p.hi + 1)


@pytest.fixture
def captured(monkeypatch):
    """Run the CLI's compress up to the request it would run (the flow itself is tested elsewhere)."""
    seen = []

    def fake_run(request, **kwargs):
        seen.append(request)
        return {"run_id": "x", "ok": 0, "errors": 0, "images": 0, "images_skipped_as_done": 0,
                "mean_bpp": None, "mean_psnr": None, "mean_ssim": None}

    monkeypatch.setattr(cli, "run_compress", fake_run)
    return seen


def invoke(*args):
    return CliRunner().invoke(cli.app, ["compress", "src", "dst", *map(str, args)])


@pytest.mark.parametrize("codec,name,param", CASES, ids=[f"{c}.{n}" for c, n, _ in CASES])
def test_the_form_has_each_param_in_its_codecs_section_with_its_bounds_and_help(codec, name, param):
    schema = CompressRequest.model_json_schema()
    ref = schema["properties"][section_name(codec)]["$ref"].rsplit("/", 1)[1]
    prop = schema["$defs"][ref]["properties"][name]
    typed = [t for t in prop["anyOf"] if t.get("type") != "null"]
    if param.keywords:  # a number in bounds, or one of the words
        words = [t for t in typed if "const" in t]
        assert [t["const"] for t in words] == list(param.keywords)
        typed = [t for t in typed if "const" not in t]
    (typed,) = typed
    if param.choices:
        assert typed["enum"] == list(param.choices)
    else:
        assert typed["type"] == JSON_TYPES[param.kind]
    assert typed.get("minimum") == param.lo and typed.get("maximum") == param.hi
    assert param.help in prop["description"]


@pytest.mark.parametrize("codec,name,param", CASES, ids=[f"{c}.{n}" for c, n, _ in CASES])
def test_the_cli_sets_each_param_of_the_chosen_codec(codec, name, param, captured):
    value = a_value(param)
    flag = "--" + name.replace("_", "-")
    args = [flag if value else "--no-" + flag[2:]] if param.kind is bool else [flag, value]
    result = invoke("--codec", codec, *args)
    assert result.exit_code == 0, result.output
    (request,) = captured
    assert request.codec == codec and request.codec_params() == {name: value}
    assert CODECS[codec].canonical_params(request.codec_params())[name] == value


@pytest.mark.parametrize("codec,name,param", [c for c in CASES if too_big(c[2]) is not None],
                         ids=[f"{c}.{n}" for c, n, p in CASES if too_big(p) is not None])
def test_a_value_outside_the_codecs_bounds_is_refused_by_form_and_cli(codec, name, param, captured):
    with pytest.raises(ValidationError):
        CompressRequest(source="s", dest="d", codec=codec, **{section_name(codec): {name: too_big(param)}})
    result = invoke("--codec", codec, "--" + name.replace("_", "-"), too_big(param))
    assert result.exit_code == 2 and not captured, result.output


def test_a_keyword_of_a_numeric_param_goes_through_cli_and_form(captured):
    assert invoke("--codec", "kmeans", "--colors", "elbow").exit_code == 0
    assert captured[0].codec_params() == {"colors": "elbow"}
    result = invoke("--codec", "kmeans", "--colors", "knee")
    assert result.exit_code == 2 and len(captured) == 1, result.output


def test_a_param_the_chosen_codec_does_not_take_is_refused(captured):
    result = invoke("--codec", "jpeg", "--colors", "16")
    assert result.exit_code == 2 and "does not take colors" in result.output and not captured


def test_every_run_field_is_a_cli_option(captured):
    help_text = CliRunner().invoke(cli.app, ["compress", "--help"], env={"COLUMNS": "200"}).output
    for name in RUN_FIELDS:
        assert "--" + name.replace("_", "-") in help_text
    assert invoke("--codec", "jpeg", "--shard-size", "7", "--fail-on-error").exit_code == 0
    assert captured[0].shard_size == 7 and captured[0].fail_on_error is True


def test_the_cli_and_the_flow_resolve_a_model_url_to_the_same_run(tmp_path):
    """``--model URL`` and the flow give one run id (the model's content hash, not its URL)."""
    from compressors import models
    from tasks.plan import make_run_id, resolve_codec_params

    mid = models.default_model_id("autoencoder")
    folder = tmp_path / "trained"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(models.shipped("autoencoder")[mid].with_suffix(suffix), folder / f"{mid}{suffix}")
    params, url = resolve_codec_params("autoencoder", {"model": str(folder), "quality": 2})
    assert params == {"model": mid, "quality": 2} and url == str(folder)
    by_id, _ = resolve_codec_params("autoencoder", {"model": mid, "quality": 2})
    assert make_run_id("src", "autoencoder", params) == make_run_id("src", "autoencoder", by_id)


def test_the_cli_progress_watches_the_run_the_flow_makes_with_a_model_url(
    prefect_server, dask_address, tmp_path, monkeypatch
):
    import numpy as np
    from PIL import Image

    from compressors import models

    mid = models.default_model_id("autoencoder")
    folder = tmp_path / "trained"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(models.shipped("autoencoder")[mid].with_suffix(suffix), folder / f"{mid}{suffix}")
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(src / "a.png")
    watched = []
    real = cli.ShardProgress

    def spy(dest, run_id, storage, **kw):
        watched.append(run_id)
        return real(dest, run_id, storage, **kw)

    monkeypatch.setattr(cli, "ShardProgress", spy)
    result = CliRunner().invoke(cli.app, ["compress", str(src), str(tmp_path / "out"), "--codec", "autoencoder",
                                          "--model", str(folder), "--quality", "1", "--json",
                                          "--dask-address", dask_address])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["ok"] == 1 and watched == [summary["run_id"]]
