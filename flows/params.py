"""Flow parameters as pydantic models: the Prefect UI renders them as a form.

The codec dropdown is built from the one codec registry, so a new codec appears in the
CLI, the flows and the form at once.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compressors import CODECS
from compressors.models import TRAINERS

CodecName = Enum("CodecName", {name: name for name in CODECS}, type=str)


class StorageFields(BaseModel):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, Ceph ...). Empty: AWS, or AWS_ENDPOINT_URL. "
        "Credentials always come from the worker's AWS environment, never from here.",
    )


class CompressRequest(StorageFields):
    """Compress every image under `source` into `dest`, with a Parquet report per shard."""

    model_config = ConfigDict(use_enum_values=True)

    source: str = Field(..., min_length=1, description="Folder or fsspec URL of the images (read recursively), e.g. s3://bucket/photos")
    dest: str = Field(..., min_length=1, description="Folder or fsspec URL for artifacts/, reports/ and runs/")
    codec: CodecName = Field("kmeans", description="Which codec compresses the images")
    quality: int | None = Field(
        None, ge=1, le=100, description="jpeg/webp/avif/jpeg2000: 1..100; autoencoder: its quality level"
    )
    colors: int | None = Field(None, ge=2, le=256, description="kmeans: palette size")
    target_psnr: float | None = Field(
        None, ge=10, le=80, description="kmeans: the smallest palette reaching this PSNR (dB)"
    )
    model: str | None = Field(None, description="autoencoder: model id or URL of a trained model (default: shipped)")
    shard_size: int = Field(64, ge=1, le=10_000, description="Images per shard (one Dask task each)")
    max_megapixels: float = Field(
        100.0, gt=0, le=2000, description="Larger images are refused as possible decompression bombs"
    )
    fail_on_error: bool = Field(False, description="Fail the run when any image gives an error row")

    def codec_params(self) -> dict:
        """The codec parameters the user set (unset ones stay None and take the codec's default)."""
        fields = {"quality": self.quality, "colors": self.colors, "target_psnr": self.target_psnr, "model": self.model}
        return {k: v for k, v in fields.items() if v is not None}


class DecompressRequest(StorageFields):
    """Decode every artifact under `source` back to lossless PNG files under `dest`."""

    source: str = Field(..., min_length=1, description="Folder or URL of artifacts, e.g. DEST/artifacts/<run_id>")
    dest: str = Field(..., min_length=1, description="Folder or URL for the decoded PNG files")
    shard_size: int = Field(64, ge=1, le=10_000, description="Artifacts per shard (one Dask task each)")
    model: str | None = Field(None, description="autoencoder: URL of the trained model its artifacts name")


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
