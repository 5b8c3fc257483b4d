"""The ``imgpress`` command line: wiring over the flows and the report functions."""

from __future__ import annotations

import json
import threading
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compressors import CODECS, get_codec

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
console = Console(stderr=True)

CODEC_HELP = "One of: " + ", ".join(sorted(CODECS))


@app.command()
def compress(
    source: str = typer.Argument(..., help="Folder or fsspec URL of images (recursive)"),
    dest: str = typer.Argument(..., help="Folder or fsspec URL for artifacts/, reports/, runs/"),
    codec: str = typer.Option("kmeans", help=CODEC_HELP),
    quality: Optional[int] = typer.Option(None, help="jpeg/webp/avif/jpeg2000 1..100; autoencoder level"),
    colors: Optional[int] = typer.Option(None, help="kmeans palette size 2..256"),
    target_psnr: Optional[float] = typer.Option(None, help="kmeans: smallest palette reaching this PSNR"),
    model: Optional[str] = typer.Option(None, help="autoencoder: model id or URL"),
    shard_size: int = typer.Option(64, help="Images per shard (one Dask task each)"),
    dask_address: Optional[str] = typer.Option(None, help="Existing Dask scheduler (default: a local cluster)"),
    workers: Optional[int] = typer.Option(None, help="Local cluster worker processes (default: one per core)"),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL"),
    max_megapixels: float = typer.Option(100.0, help="Refuse larger images (decompression bombs)"),
    fail_on_error: bool = typer.Option(False, help="Exit non-zero when any image fails"),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON"),
) -> None:
    """Compress every image under SOURCE into DEST and write a Parquet report."""
    from flows.params import CompressRequest

    request = _validated(
        CompressRequest, source=source, dest=dest, codec=codec, quality=quality, colors=colors,
        target_psnr=target_psnr, model=model, shard_size=shard_size, endpoint_url=endpoint_url,
        max_megapixels=max_megapixels, fail_on_error=fail_on_error,
    )
    summary = run_compress(request, dask_address=dask_address, workers=workers)
    _print_summary(summary, json_out)
    if fail_on_error and summary["errors"]:
        raise typer.Exit(1)


def run_compress(request, *, dask_address: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Run the compress flow on a Prefect API (started if needed) and the chosen Dask cluster."""
    from flows.compress import compress_collection
    from flows.runner import dask_runner
    from imgpress.prefect_api import prefect_api
    from tasks.plan import make_run_id
    from tasks.storage import Storage

    codec = get_codec(request.codec)
    run_id = make_run_id(request.source, codec.name, codec.canonical_params(request.codec_params()))
    flow = compress_collection.with_options(task_runner=dask_runner(dask_address, workers))
    with prefect_api(echo=console.print):
        with _ShardProgress(request.dest, run_id, Storage(endpoint_url=request.endpoint_url), enabled=progress):
            try:
                return flow(request)
            except RuntimeError as exc:
                if request.fail_on_error:
                    console.print(f"[red]{exc}[/red]")
                    raise typer.Exit(1) from None
                raise


@app.command()
def decompress(
    source: str = typer.Argument(..., help="Artifacts folder or URL, e.g. DEST/artifacts/<run_id>"),
    dest: str = typer.Argument(..., help="Folder or URL for the decoded PNG files"),
    shard_size: int = typer.Option(64),
    dask_address: Optional[str] = typer.Option(None),
    workers: Optional[int] = typer.Option(None),
    endpoint_url: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Decode every artifact under SOURCE to PNG under DEST (every codec round-trips)."""
    from flows.decompress import decompress_collection
    from flows.params import DecompressRequest
    from flows.runner import dask_runner
    from imgpress.prefect_api import prefect_api

    request = _validated(DecompressRequest, source=source, dest=dest, shard_size=shard_size, endpoint_url=endpoint_url)
    with prefect_api(echo=console.print):
        result = decompress_collection.with_options(task_runner=dask_runner(dask_address, workers))(request)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        console.print(f"decoded {result['ok']} of {result['images']} artifacts, {result['errors']} errors")
        for row in result["error_rows"][:20]:
            console.print(f"  [red]{row['source']}[/red]: {row['error']}")
    if result["errors"]:
        raise typer.Exit(1)


@app.command()
def report(
    dest: str = typer.Argument(..., help="The DEST of earlier compress runs"),
    endpoint_url: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Per-run, per-codec summary from the Parquet reports under DEST."""
    from tasks.report import read_reports, summarize
    from tasks.storage import Storage

    rows = summarize(read_reports(dest, Storage(endpoint_url=endpoint_url)))
    if json_out:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print(f"no finished reports under {dest}")
        raise typer.Exit(1)
    table = Table(title=f"imgpress report: {dest}")
    cols = ["codec", "run_id", "images", "ok", "errors", "mean_bpp", "median_bpp", "mean_psnr", "median_psnr",
            "mean_ssim", "mean_encode_ms", "mean_decode_ms"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("codec", "run_id") else "right")
    for r in rows:
        table.add_row(*(_fmt(r[c]) for c in cols))
    Console().print(table)


@app.command()
def train(
    source: str = typer.Argument(..., help="Folder or URL of training images"),
    model_dest: str = typer.Argument(..., help="Folder or URL for the model (safetensors + JSON)"),
    minutes: float = typer.Option(10.0, help="Wall-clock training budget"),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps"),
    init_model: Optional[str] = typer.Option(None, help="Fine-tune from a model id or URL"),
    crops: int = typer.Option(4096, help="Random crops sampled from the collection"),
    crop_size: int = typer.Option(128),
    seed: int = typer.Option(0),
    dask_address: Optional[str] = typer.Option(None, help="Existing Dask scheduler (GPU workers are used)"),
    workers: Optional[int] = typer.Option(None),
    endpoint_url: Optional[str] = typer.Option(None),
) -> None:
    """Train the autoencoder on SOURCE (on a GPU worker when the cluster has one)."""
    from flows.params import TrainRequest
    from flows.runner import dask_runner
    from flows.train import train_autoencoder
    from imgpress.prefect_api import prefect_api

    request = _validated(
        TrainRequest, source=source, model_dest=model_dest, minutes=minutes, max_steps=max_steps,
        init_model=init_model, crops=crops, crop_size=crop_size, seed=seed, endpoint_url=endpoint_url,
    )
    with prefect_api(echo=console.print):
        result = train_autoencoder.with_options(task_runner=dask_runner(dask_address, workers))(request)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def demo(
    dest: str = typer.Argument("imgpress-demo", help="Where the demo writes its collection and results"),
    workers: Optional[int] = typer.Option(None),
) -> None:
    """Build a small collection from images shipped in installed packages; compress it; report."""
    from flows.params import CompressRequest
    from imgpress.demo import build_demo_collection
    from tasks.storage import join

    source = build_demo_collection(join(dest, "collection"))
    console.print(f"demo collection: {source}")
    results = join(dest, "results")
    for codec, params in (("kmeans", {"colors": 64}), ("jpeg", {"quality": 75})):
        request = CompressRequest(source=source, dest=results, codec=codec, shard_size=4, **params)
        run_compress(request, workers=workers)
    report(results, endpoint_url=None, json_out=False)


def _validated(request_model, /, **fields):
    from pydantic import ValidationError

    try:
        request = request_model(**fields)
        if hasattr(request, "codec_params"):
            get_codec(request.codec).canonical_params(request.codec_params())
        return request
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]invalid arguments:[/red] {exc}")
        raise typer.Exit(2) from None


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"run {summary['run_id']}: {summary['ok']} ok, {summary['errors']} errors of {summary['images']} images "
        f"({summary['images_skipped_as_done']} already done); bpp {_fmt(summary['mean_bpp'])}, "
        f"PSNR {_fmt(summary['mean_psnr'])} dB, SSIM {_fmt(summary['mean_ssim'])}"
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return "-" if v is None else str(v)


class _ShardProgress:
    """A progress bar fed by the shard markers the run writes (works for any cluster)."""

    def __init__(self, dest, run_id, storage, *, enabled=True):
        self.dest, self.run_id, self.storage, self.enabled = dest, run_id, storage, enabled
        self._stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)

    def _poll(self):
        from tasks.plan import finished_shards, read_manifest

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"shards of {self.run_id}", total=None)
            while not self._stop.wait(1.0):
                try:
                    manifest = read_manifest(self.dest, self.run_id, self.storage)
                    if manifest is None:
                        continue
                    base = manifest["shards_already_done"]
                    done = len(finished_shards(self.dest, self.run_id, self.storage)) - base
                    bar.update(task, total=manifest["shards_planned"], completed=max(done, 0))
                except Exception:  # progress is best-effort; the run's result is what counts
                    continue


if __name__ == "__main__":
    app()
