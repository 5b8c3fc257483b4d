"""The ``imgpress`` command line: wiring over the flows and the report functions.

What it shows is :mod:`imgpress.render`'s business; the ``compress`` options are derived
by :mod:`imgpress.options` from the codec registry and the flow's request.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from typing import Optional

import typer

from compressors import CODECS, get_codec
from imgpress.options import with_options
from imgpress.render import (
    RunLog,
    ShardProgress,
    console,
    fail,
    library_logs,
    machine_json,
    print_query,
    print_report,
    print_summary,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)

VERBOSE_HELP = "Show the libraries' logs (Prefect, Dask) here too; they always go to the run's log file"
CODEC_HELP = "One of: " + "; ".join(f"{n} ({c.description})" if c.description else n for n, c in sorted(CODECS.items()))


def compress(
    source: str = typer.Argument(..., help="Folder or fsspec URL of images (recursive)"),
    dest: str = typer.Argument(..., help="Folder or fsspec URL for artifacts/, reports/, runs/"),
    codec: str = typer.Option("kmeans", help=CODEC_HELP),
    dask_address: Optional[str] = typer.Option(None, help="Existing Dask scheduler (default: a local cluster)"),
    workers: Optional[int] = typer.Option(None, help="Local cluster worker processes (default: one per core)"),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    **options,
) -> None:
    """Compress every image under SOURCE into DEST and write a Parquet report.

    The codec options below come from the codec registry (each lists the codecs that
    take it, with their bounds); the run options from the flow's request (the same
    fields as the Prefect UI form).
    """
    request = compress_request(source, dest, codec, options)
    summary = run_compress(request, dask_address=dask_address, workers=workers, verbose=verbose)
    print_summary(summary, json_out)
    if request.fail_on_error and summary["errors"]:
        raise typer.Exit(1)


def compress_request(source: str, dest: str, codec: str, options: dict):
    """The ``CompressRequest`` the options describe: run fields, and the chosen codec's parameters."""
    from flows.params import RUN_FIELDS, CompressRequest

    run = {k: v for k, v in options.items() if k in RUN_FIELDS}
    params = {k: v for k, v in options.items() if k not in RUN_FIELDS and v is not None}
    return _validated(CompressRequest, source=source, dest=dest, codec=codec, **run, **params)


def _compress_options() -> list:
    from flows.params import RUN_FIELDS, CompressRequest
    from imgpress.options import codec_parameters, run_parameters

    return run_parameters(CompressRequest, RUN_FIELDS) + codec_parameters()


app.command()(with_options(compress, _compress_options()))


def run_compress(request, *, dask_address: str | None = None, workers: int | None = None, progress: bool = True,
                 verbose: bool = False) -> dict:
    """Run the compress flow on a Prefect API (started if needed) and the chosen Dask cluster.

    The console shows the progress bar, then the summary; the libraries' logs go to the
    run's log file (``summary["log"]``), and to the console too with ``verbose``. Whatever
    fails is one line here, with the log file named for the details.
    """
    from flows.runner import cluster_address, dask_runner, local_cluster
    from imgpress.prefect_api import prefect_api
    from tasks.plan import make_run_id, resolve_codec_params, resolve_helpers
    from tasks.storage import Storage

    storage = Storage(endpoint_url=request.endpoint_url)
    try:
        params, _ = resolve_codec_params(request.codec, request.codec_params(), storage)
        helpers, _ = resolve_helpers(request.postfilter, request.classifier, storage)
    except (OSError, ValueError) as exc:
        fail(exc)
    run_id = make_run_id(request.source, request.codec, params, helpers)
    log, failure, address = RunLog(request.dest, run_id, storage), None, cluster_address(dask_address)
    if verbose:  # Prefect sets up its console logs on import unless the root logger has a handler (verbose adds one)
        import flows.compress  # noqa: F401
    with library_logs(log.path, verbose=verbose), contextlib.ExitStack() as cluster:
        flow = None

        def meanwhile():  # while the Prefect server starts (8-23 s): the local cluster (~5 s), the flow's imports
            nonlocal address, flow
            if address is None:
                address = cluster.enter_context(local_cluster(workers)).scheduler_address
            import fastapi.encoders  # noqa: F401  (Prefect imports it on a process's first flow run: ~0.3-0.7 s)
            from flows.compress import compress_collection

            # with_options rebuilds the flow's parameter schema (0.1-0.7 s here)
            flow = compress_collection.with_options(task_runner=dask_runner(address))

        try:
            with prefect_api(echo=console.print, meanwhile=meanwhile):
                with ShardProgress(request.dest, run_id, storage, enabled=progress):
                    summary = flow(request)
        except Exception as exc:  # noqa: BLE001  (one line here; the traceback goes to the log)
            traceback.print_exc()
            failure = exc
    if failure is not None:
        fail(failure, log.publish())
    summary["log"] = log.publish()
    return summary


@app.command()
def decompress(
    source: str = typer.Argument(..., help="Artifacts folder or URL, e.g. DEST/artifacts/<run_id>"),
    dest: str = typer.Argument(..., help="Folder or URL for the original files (or PNGs of the pixels)"),
    shard_size: int = typer.Option(64),
    dask_address: Optional[str] = typer.Option(None),
    workers: Optional[int] = typer.Option(None),
    endpoint_url: Optional[str] = typer.Option(None),
    model: Optional[str] = typer.Option(None, help="autoencoder: URL of a trained (not shipped) model"),
    postfilter: Optional[str] = typer.Option(None, help="Post-filter every decoded image (name e.g. jpeg, id, or URL)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Give back every artifact under SOURCE under DEST: originals held exactly byte for byte, others as PNG.

    A JPEG transcoded by `jxl --lossless` (and a file it kept as it is) comes back as the
    original file under its own name, checked against the SHA-256 in the run's report; every
    other artifact is decoded to a lossless PNG (every codec round-trips).
    """
    from flows.decompress import decompress_collection
    from flows.params import DecompressRequest
    from flows.runner import dask_runner
    from imgpress.prefect_api import prefect_api

    request = _validated(
        DecompressRequest, source=source, dest=dest, shard_size=shard_size, endpoint_url=endpoint_url, model=model,
        postfilter=postfilter,
    )
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
    dest: str = typer.Argument(..., help="The DEST of earlier compress runs (folder or URL)"),
    run: Optional[list[str]] = typer.Option(None, "--run", help="Only this run id (repeatable)"),
    worst: int = typer.Option(0, "--worst", min=0, help="Also list the N images with the lowest PSNR"),
    errors: bool = typer.Option(False, "--errors", help="Also list every error row with its message"),
    compare: Optional[str] = typer.Option(
        None, "--compare", metavar="BASELINE_RUN",
        help="Compare every other run (or the --run ones) with this run on the images both coded",
    ),
    html: Optional[str] = typer.Option(
        None, "--html", metavar="PATH",
        help="Also write a self-contained HTML report (R-D plot, histograms, worst images) to PATH or URL",
    ),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL"),
    json_out: bool = typer.Option(
        False, "--json",
        help="Machine-readable: the list of runs; asked more, {runs, worst, errors, compare, html}",
    ),
) -> None:
    """Per-run, per-codec statistics (mean, p50/p90/p99 of bpp, PSNR, SSIM, ms) of the reports under DEST."""
    from tasks.storage import Storage

    storage = Storage(endpoint_url=endpoint_url)
    try:
        answer = _report_answers(dest, storage, run_ids=run or None, worst=worst, errors=errors,
                                 compare=compare, html=html)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if json_out:
        # Only statistics asked: the list of runs, as it always was. More asked: an object
        # with "runs" and one key per answer ("worst", "errors", "compare", "html").
        typer.echo(machine_json(answer if len(answer) > 2 else answer["runs"]))
        return
    if not answer["runs"]:
        console.print(f"no finished reports under {dest}" + (f" for run(s) {', '.join(run)}" if run else ""))
        raise typer.Exit(1)
    print_report(dest, answer)


def _report_answers(dest, storage, *, run_ids=None, worst=0, errors=False, compare=None, html=None) -> dict:
    from tasks import query as q

    if compare and run_ids and compare not in run_ids:
        run_ids = [*run_ids, compare]
    with q.open_reports(dest, storage, run_ids=run_ids, materialize=True) as reports:
        answer = {"dest": dest, "runs": q.codec_stats(reports)}
        if worst:
            answer["worst"] = q.worst_images(reports, worst)
        if errors:
            answer["errors"] = q.error_rows(reports)
        if compare:
            others = [r for r in run_ids if r != compare] if run_ids else None
            answer["compare"] = q.compare_runs(reports, compare, others)
    if html:
        from tasks.html_report import write_html_report

        answer["html"] = write_html_report(dest, html, storage, run_ids=run_ids, worst=worst or 6)
    return answer


@app.command()
def query(
    dest: str = typer.Argument(..., help="The DEST of earlier compress runs (folder or URL)"),
    sql: str = typer.Argument(
        ...,
        help="DuckDB SQL over the table `reports`, e.g. \"SELECT codec, avg(psnr) FROM reports GROUP BY 1\"",
    ),
    run: Optional[list[str]] = typer.Option(
        None, "--run", help="Only list and read this run's reports (repeatable)"
    ),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL"),
    json_out: bool = typer.Option(False, "--json", help="Rows as a JSON list of objects"),
) -> None:
    """Run SQL (DuckDB) over every finished report under DEST, exposed as the table `reports`.

    Filters on run_id (=, IN) skip the other runs' files unread; --run skips even listing them.
    """
    import duckdb

    from tasks.query import open_reports
    from tasks.storage import Storage

    try:
        with open_reports(dest, Storage(endpoint_url=endpoint_url), run_ids=run or None) as reports:
            result = reports.sql(sql)
    except duckdb.Error as exc:
        console.print(f"[red]query failed:[/red] {exc}")
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(machine_json(result.records()))
        return
    print_query(result)


@app.command()
def serve(
    names: Optional[list[str]] = typer.Argument(
        None,
        help="Deployments to serve (name, flow/name or flow name); default: all of deployments/prefect.yaml",
    ),
    limit: Optional[int] = typer.Option(None, min=1, help="Most flow runs at once in this process"),
) -> None:
    """Serve the deployments of deployments/prefect.yaml from this process: schedules run and the
    UI can start runs, with no work pool and no worker. Needs PREFECT_API_URL (see `imgpress server`)."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    from deployments.specs import runner_deployments

    if not PREFECT_API_URL.value():
        console.print("[red]PREFECT_API_URL is not set.[/red] Start a server (`imgpress server`) and export "
                      "the PREFECT_API_URL it prints, so the UI sees what this process serves.")
        raise typer.Exit(2)
    try:
        deployments = runner_deployments(names or (), warn=lambda m: console.print(f"[yellow]{m}[/yellow]"))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    prefect_serve(*deployments, limit=limit)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback: only this machine)"),
    port: int = typer.Option(4200, help="Port of the API and the UI"),
) -> None:
    """Start a Prefect server and UI (analytics off); prints the PREFECT_API_URL to export."""
    import signal
    import sys

    from imgpress.prefect_api import healthy, start_server, stop_server

    api_url = f"http://{host}:{port}/api"
    if healthy(api_url):
        console.print(f"a Prefect server already answers at {api_url}\n  export PREFECT_API_URL={api_url}")
        raise typer.Exit(1)
    try:
        log = sys.stderr if sys.stderr.fileno() >= 0 else None
    except (AttributeError, OSError, ValueError):
        log = None
    console.print(f"starting prefect server on {host}:{port} (analytics off) ...")
    try:
        proc, api_url = start_server(port, host=host, log=log)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red] (is port {port} taken? try --port)")
        raise typer.Exit(1) from None
    typer.echo(f"Prefect UI: http://{host}:{port}\nexport PREFECT_API_URL={api_url}")
    sys.stdout.flush()
    # The server runs in its own session (Ctrl-C reaches us, not it): stop it on TERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback: only this machine)"),
    port: int = typer.Option(8000, min=0, max=65535, help="Port of the page (0: any free port)"),
    max_megapixels: float = typer.Option(25.0, min=0.001, help="Refuse larger images (checked before decoding)"),
    max_upload_mb: float = typer.Option(50.0, min=0.001, help="Refuse larger files (checked before reading them)"),
    workers: int = typer.Option(2, min=1, help="Images decoded or compressed at once"),
    queue: int = typer.Option(6, min=0, help="Requests that may wait for those; more are told the server is busy"),
) -> None:
    """Try codecs on your own images in the browser: upload, compare two settings, download.

    The page uses the same codec registry, input rules and metrics as `compress`. Files stay
    in one temporary folder, removed when the server stops (Ctrl-C)."""
    import sys

    from imgpress.web import Limits, bind, serve

    limits = Limits(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1e6),
                    workers=workers, queue=queue)
    try:
        sock = bind(host, port)
    except OSError as exc:
        console.print(f"[red]cannot listen on {host}:{port}: {exc.strerror or exc}[/red] (is it taken? try --port)")
        raise typer.Exit(1) from None
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {host}: anyone who reaches this port can upload images[/yellow]")
    typer.echo(f"imgpress web: http://{shown}:{bound_port}/  (Ctrl-C stops it)")
    sys.stdout.flush()
    try:
        serve(sock, limits)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown
        pass


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Folder or URL of training data (images; for some kinds raw files)"),
    model_dest: str = typer.Argument(..., help="Folder or URL for the model (safetensors + JSON)"),
    kind: str = typer.Option("autoencoder", help="What to train (see below for each kind's own options)"),
    minutes: float = typer.Option(10.0, help="Wall-clock training budget"),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps"),
    init_model: Optional[str] = typer.Option(None, help="Start from a model: shipped id or name, or URL"),
    crops: int = typer.Option(4096, help="Random crops sampled from the collection"),
    crop_size: int = typer.Option(128),
    seed: int = typer.Option(0),
    dask_address: Optional[str] = typer.Option(None, help="Existing Dask scheduler (GPU workers are used)"),
    workers: Optional[int] = typer.Option(None),
    endpoint_url: Optional[str] = typer.Option(None),
) -> None:
    """Train a model of KIND on SOURCE (on a GPU worker when the cluster has one).

    Each kind's own options follow as --name value (a flag alone means true); they are
    listed per kind below, from the one table of trainers (compressors.models.TRAINERS).
    """
    from flows.params import TrainRequest
    from flows.runner import dask_runner
    from flows.train import train_model
    from imgpress.prefect_api import prefect_api

    try:
        options = _kind_options(ctx.args)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    request = _validated(
        TrainRequest, source=source, model_dest=model_dest, kind=kind, options=options, minutes=minutes,
        max_steps=max_steps, init_model=init_model, crops=crops, crop_size=crop_size, seed=seed,
        endpoint_url=endpoint_url,
    )
    with prefect_api(echo=console.print):
        result = train_model.with_options(task_runner=dask_runner(dask_address, workers))(request)
    typer.echo(json.dumps(result, indent=2, default=str))


def _kind_options(args: list[str]) -> dict[str, str | bool]:
    """``--for jpeg --quality-range 30-90 --adversarial`` -> ``{"for": "jpeg", ..., "adversarial": True}``."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--") or len(word) < 3:
            raise ValueError(f"unexpected argument {word!r}")
        name, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        out[name.replace("-", "_")] = value
        i += 1
    return out


def _train_epilog() -> str:
    from compressors.models import TRAINERS

    lines = ["Kinds and their options:"]
    for kind, trainer in sorted(TRAINERS.items()):
        opts = ", ".join(f"--{n.replace('_', '-')} ({p.help or p.kind.__name__})" for n, p in trainer.options.items())
        lines.append(f"  {kind}: {trainer.description}" + (f". Options: {opts}" if opts else ""))
    return "\n\n".join(lines)


train.__doc__ = (train.__doc__ or "") + "\n\n" + _train_epilog()


@app.command()
def demo(
    dest: str = typer.Argument("imgpress-demo", help="Where the demo writes its collection and results"),
    workers: Optional[int] = typer.Option(None),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
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
        print_summary(run_compress(request, workers=workers, verbose=verbose), False)
    from tasks.storage import Storage

    print_report(results, _report_answers(results, Storage(), errors=True))


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


if __name__ == "__main__":
    app()
