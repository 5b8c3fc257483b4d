"""Flow parameters as pydantic models: the Prefect UI renders them as a form.

Nothing about a codec is written here: the codec dropdown and one section per codec
(its parameters with their kinds, bounds, defaults and help) are built from the one
codec registry (:data:`compressors.CODECS`), so a new codec or a new ``Param`` appears
in the form, the CLI (which builds its options from the same sections and from the
run-level fields of :class:`CompressRequest`) and the flows at once.

A run-level option (not a codec's) is one ``Field`` on ``_RunFields``: the form shows it
and ``imgpress compress`` gets a ``--option`` for it (str, int, float, bool or Literal).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from compressors import CODECS, Param
from compressors.models import TRAINERS

CodecName = Enum("CodecName", {name: name for name in CODECS}, type=str)


class StorageFields(BaseModel):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, Ceph ...). Empty: AWS, or AWS_ENDPOINT_URL. "
        "Credentials always come from the worker's AWS environment, never from here.",
    )


def section_name(codec: str) -> str:
    """The form field holding ``codec``'s parameters (a Python identifier)."""
    return codec.replace("-", "_")


def param_type(p: Param) -> Any:
    """The value type of a parameter in the form (and the CLI): its kind, or its choices.

    A parameter with ``keywords`` (kmeans ``colors``: 2..256 or "elbow") is its bounded kind
    or one of those words.
    """
    if p.choices:
        return Literal[tuple(p.choices)]
    if p.keywords:
        return Union[Annotated[p.kind, Field(ge=p.lo, le=p.hi)], Literal[tuple(p.keywords)]]
    return p.kind


def param_description(p: Param) -> str:
    default = "chosen by the codec" if p.default is None else p.default
    return f"{p.help or 'no help given'} (default: {default})"


def _section(codec) -> type[BaseModel]:
    fields = {
        name: (Optional[param_type(p)], Field(None, ge=None if p.keywords else p.lo, le=None if p.keywords else p.hi,
                                              description=param_description(p)))
        for name, p in codec.params.items()
    }
    model = create_model(
        f"{section_name(codec.name).title().replace('_', '')}Params",
        __config__=ConfigDict(extra="forbid", title=codec.name),
        __doc__=codec.description or codec.name,
        **fields,
    )
    return model


SECTIONS: dict[str, type[BaseModel]] = {name: _section(codec) for name, codec in CODECS.items()}


class _RunFields(StorageFields):
    """Compress every image under `source` into `dest`, with a Parquet report per shard."""

    # extra="forbid": a misspelt field is refused by the server, not ignored (flat codec
    # parameters from Python callers are moved into their section before this applies).
    model_config = ConfigDict(use_enum_values=True, extra="forbid")

    source: str = Field(..., min_length=1, description="Folder or fsspec URL of the images (read recursively), e.g. s3://bucket/photos")
    dest: str = Field(..., min_length=1, description="Folder or fsspec URL for artifacts/, reports/ and runs/")
    codec: CodecName = Field(
        "kmeans", description="Which codec compresses the images; only its section below is used"
    )
    shard_size: int = Field(64, ge=1, le=10_000, description="Images per shard (one Dask task each)")
    max_megapixels: float = Field(
        100.0, gt=0, le=2000, description="Larger images are refused as possible decompression bombs"
    )
    fail_on_error: bool = Field(False, description="Fail the run when any image gives an error row")
    postfilter: str | None = Field(
        None, description="Post-filter the decoded images (shipped name such as jpeg, model id, or URL); "
        "the metrics then describe the filtered image and the report's postfilter column names it")
    classifier: str | None = Field(
        None, description="Classify source and decoded image (shipped name such as digits, model id, or URL): "
        "labels, agreement and confidences per image; `imgpress report` shows the agreement rate")

    @model_validator(mode="before")
    @classmethod
    def _flat_codec_params(cls, data: Any) -> Any:
        """``CompressRequest(codec="jpeg", quality=60)``: put flat codec parameters in their codec's section."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        codec = data.get("codec", cls.model_fields["codec"].default)
        codec = getattr(codec, "value", codec)
        known = {name for c in CODECS.values() for name in c.params}
        sections = {section_name(n) for n in CODECS}

        def is_flat(k: str) -> bool:  # a name can be both a parameter (jxl's lossless) and a section (the lossless codec)
            return k in known and (k not in cls.model_fields
                                   or k in sections and not isinstance(data[k], (dict, BaseModel)))

        flat = {k: data.pop(k) for k in list(data) if is_flat(k)}
        flat = {k: v for k, v in flat.items() if v is not None}
        if flat and codec in CODECS:
            section = section_name(codec)
            current = data.get(section) or {}
            current = current.model_dump(exclude_none=True) if isinstance(current, BaseModel) else dict(current)
            unknown = sorted(set(flat) - set(CODECS[codec].params))
            if unknown:
                takes = ", ".join(sorted(CODECS[codec].params)) or "no parameters"
                raise ValueError(f"codec {codec!r} does not take {', '.join(unknown)} (it takes {takes})")
            data[section] = {**current, **flat}
        return data

    def codec_params(self) -> dict:
        """The chosen codec's parameters that were set (unset ones take the codec's default)."""
        section = getattr(self, section_name(self.codec))
        return section.model_dump(exclude_none=True)

    def with_codec_params(self, **params: Any):
        """A copy with some of the chosen codec's parameters changed."""
        return type(self).model_validate({**self.model_dump(), **self.codec_params(), **params})


CompressRequest = create_model(
    "CompressRequest",
    __base__=_RunFields,
    __doc__=_RunFields.__doc__,
    **{
        section_name(name): (
            model,
            Field(default_factory=model, title=name, description=f"{name}: {model.__doc__}"),
        )
        for name, model in SECTIONS.items()
    },
)
CODEC_SECTIONS = frozenset(section_name(n) for n in CODECS)
RUN_FIELDS = tuple(n for n in _RunFields.model_fields if n not in ("source", "dest", "codec"))


class DecompressRequest(StorageFields):
    """Give back every artifact under `source` under `dest`: exact originals byte for byte, others as PNG."""

    source: str = Field(..., min_length=1, description="Folder or URL of artifacts, e.g. DEST/artifacts/<run_id>")
    dest: str = Field(..., min_length=1, description="Folder or URL for the original files (or PNGs of the pixels)")
    shard_size: int = Field(64, ge=1, le=10_000, description="Artifacts per shard (one Dask task each)")
    model: str | None = Field(None, description="autoencoder: URL of the trained model its artifacts name")
    postfilter: str | None = Field(
        None, description="Post-filter every decoded image (shipped name such as jpeg, model id, or URL)")


TrainKind = Enum("TrainKind", {kind: kind for kind in TRAINERS}, type=str)


class TrainRequest(StorageFields):
    """Train (or fine-tune) a model of one kind on a collection; write safetensors + JSON."""

    model_config = ConfigDict(use_enum_values=True)

    source: str = Field(..., min_length=1, description="Folder or URL of training images (never the test set)")
    model_dest: str = Field(..., min_length=1, description="Folder or URL where the model files are written")
    kind: TrainKind = Field("autoencoder", description="What to train: " + "; ".join(
        f"{k}: {t.description}" for k, t in sorted(TRAINERS.items())))
    options: dict[str, str | float | int | bool] = Field(
        default_factory=dict, description="Options of that kind (see `imgpress train --help`), e.g. {\"lr\": 0.0001}")
    minutes: float = Field(10.0, gt=0, le=7 * 24 * 60, description="Wall-clock training budget")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (whichever comes first)")
    init_model: str | None = Field(
        None, description="Start from this model (shipped id or name, or URL of a trained one)"
    )
    crops: int = Field(4096, ge=16, le=1_000_000, description="Random crops sampled from the collection")
    crop_size: int = Field(128, ge=16, le=1024, description="Crop side in pixels")
    seed: int = Field(0, description="Seed for crop sampling and initialisation")
    shard_size: int = Field(64, ge=1, le=10_000, description="Images read per Dask task")

    @model_validator(mode="after")
    def _options_fit_the_kind(self):
        self.options = TRAINERS[self.kind].canonical_options(self.options)
        return self
