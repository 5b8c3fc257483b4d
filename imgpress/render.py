"""What the CLI shows: tables, summaries, JSON for machines, the progress bar.

Numbers and parameters are spelt by :mod:`tasks.formatting`, as in the HTML report.
Tables go to stdout; the progress bar, summaries and errors to ``console`` (stderr).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tasks.formatting import number, params_text, percent, signed

console = Console(stderr=True)


def print_report(dest: str, answer: dict) -> None:
    from tasks.query import METRICS

    out = stdout()
    table = Table(title=f"imgpress report: {dest}")
    for c in ("codec", "params", "run_id", "images", "ok", "errors", "metric", "mean", "p50", "p90", "p99"):
        table.add_column(c, justify="left" if c in ("codec", "params", "run_id", "metric") else "right")
    for r in answer["runs"]:
        params = params_text(r["params"]) + (f" postfilter={r['postfilter']}" if r.get("postfilter") else "")
        classified = r.get("classified") or 0
        for i, m in enumerate(METRICS):
            head = [r["codec"], params, r["run_id"], str(r["images"]), str(r["ok"]),
                    str(r["errors"])] if i == 0 else [""] * 6
            table.add_row(*head, m, *(number(r[f"{k}_{m}"]) for k in ("mean", "p50", "p90", "p99")),
                          end_section=i == len(METRICS) - 1 and not classified)
        if classified:  # the classifier's labels on source and decoded image: the share that agree
            table.add_row(*[""] * 6, f"agreement ({classified} classified by {r['classifier']})",
                          number(r["agreement"]), "", "", "", end_section=True)
    out.print(table)
    routes = [{**r, "saved": percent(r["saved"])} for run in answer["runs"] for r in run.get("routes", [])]
    if routes:
        print_rows(out, "exact images (PSNR inf, SSIM 1: not in the PSNR statistics above) and bytes saved",
                   routes, ("run_id", "codec", "route", "images", "exact", "source_bytes", "artifact_bytes",
                            "bytes_saved", "saved"))
    if "worst" in answer:
        print_rows(out, f"worst {len(answer['worst'])} images by PSNR", answer["worst"],
                    ("source", "codec", "params", "run_id", "bpp", "psnr", "ssim"))
    if "errors" in answer:
        print_rows(out, f"{len(answer['errors'])} errors", answer["errors"],
                    ("source", "codec", "run_id", "error"))
    if "compare" in answer:
        table = Table(title="runs against the baseline, on the images both coded")
        for c in ("run_id", "codec", "params", "common images", "bpp", "PSNR dB", "SSIM", "lower PSNR"):
            table.add_column(c, overflow="fold")
        for r in answer["compare"]:
            change = f" ({r['bpp_change']:+.0%})" if r["bpp_change"] is not None else ""
            table.add_row(
                r["run_id"], r["codec"] or "-", params_text(r["params"]), str(r["common_images"]),
                f"{number(r['baseline_bpp'])} -> {number(r['bpp'])}{change}",
                f"{number(r['baseline_psnr'])} -> {number(r['psnr'])} ({signed(r['psnr_delta'])})",
                f"{number(r['baseline_ssim'])} -> {number(r['ssim'])} ({signed(r['ssim_delta'])})",
                str(r["images_with_lower_psnr"]),
            )
        out.print(f"baseline: {answer['compare'][0]['baseline']}" if answer["compare"]
                  else "nothing to compare")
        out.print(table)
    if "html" in answer:
        console.print(f"HTML report: {answer['html']}")


def print_query(result) -> None:
    """An ``imgpress query`` answer: one table, then the row count."""
    table = Table(show_lines=False)
    for c in result.columns:
        table.add_column(c, overflow="fold")
    for row in result.records():
        table.add_row(*(number(row[c]) for c in result.columns))
    stdout().print(table)
    console.print(f"{len(result.rows)} row(s)")


def print_rows(out: Console, title: str, rows: list[dict], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(params_text(r[c]) if c == "params" else number(r.get(c)) for c in columns))
    out.print(table)


def print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"run {summary['run_id']}: {summary['ok']} ok, {summary['errors']} errors of {summary['images']} images "
        f"({summary['images_skipped_as_done']} already done); bpp {number(summary['mean_bpp'])}, "
        f"PSNR {number(summary['mean_psnr'])} dB, SSIM {number(summary['mean_ssim'])}"
        + (f"; {summary['exact']} exact, {summary['bytes_saved']:,} bytes saved" if summary.get("exact") else ""),
        soft_wrap=True,
    )
    if summary.get("log"):
        console.print(f"log: {summary['log']}", highlight=False, soft_wrap=True)


def fail(exc: BaseException, log: str | None = None):
    """Say what went wrong in one line (the details are in the log file), and exit 1."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    where = f" (details: {log})" if log else ""
    console.print(f"[red]error:[/red] {name}: {text}{where}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


class RunLog:
    """Where a CLI invocation's library logs go: the run's ``logs/`` folder (``tasks.layout``).

    Written locally (appending from every process); for a destination on object storage
    the file is written to the temp folder and copied under the run when the run ends.
    """

    def __init__(self, dest: str, run_id: str, storage):
        from tasks.layout import logs_url  # noqa: PLC0415
        from tasks.storage import is_local, join  # noqa: PLC0415

        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
        self.url = join(logs_url(dest, run_id), name)
        self.storage = storage
        fs, path = storage.fs(self.url)
        self.local = is_local(fs)
        if self.local:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError:  # the destination cannot be written: the run will say so; log beside it
                self.local = False
        self.path = path if self.local else os.path.join(tempfile.gettempdir(), "imgpress-logs", run_id, name)

    def publish(self) -> str:
        """The log's final URL (copied there now when the destination is not local)."""
        if self.local:
            return self.url
        from tasks.storage import write_bytes  # noqa: PLC0415

        try:
            with open(self.path, "rb") as fh:
                write_bytes(self.url, fh.read(), self.storage)
        except Exception:  # noqa: BLE001  (the run's result does not depend on its log)
            return self.path
        return self.url


def _drain_prefect(timeout: float = 10) -> None:
    """Let Prefect's event and log workers finish now, while their output still goes to the log."""
    if "prefect" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        from prefect._internal.concurrency.services import QueueService  # noqa: PLC0415

        QueueService.drain_all(timeout=timeout)


@contextlib.contextmanager
def library_logs(path: str, *, verbose: bool = False):
    """Send what the libraries write to stderr (this process and its children) to ``path``.

    Prefect's and Dask's loggers, the Dask worker processes, warnings and tracebacks all
    write to file descriptor 2, which points at the log file for the block; ``console``
    (progress bar, summary, errors) keeps the terminal. With ``verbose`` nothing is
    redirected and this process's Python logs are also appended to the file.
    """
    import logging  # noqa: PLC0415

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if verbose:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            yield path
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    kept = console._file  # noqa: SLF001  (rich: None means "sys.stderr when printing")
    console.file = terminal
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield path
    finally:
        _drain_prefect()  # its background workers' last words belong in the log too
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        console._file = kept  # noqa: SLF001
        terminal.close()


def stdout() -> Console:
    """Tables on stdout; piped into a file or a pager they keep a readable width."""
    out = Console()
    return out if out.is_terminal else Console(width=160)


def machine_json(obj) -> str:
    """Strict JSON for machines: NaN becomes null, infinite PSNR (lossless) the string "inf"."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, default=str, allow_nan=False)


class ShardProgress:
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
        from tasks.layout import finished_shards
        from tasks.plan import read_manifest

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
