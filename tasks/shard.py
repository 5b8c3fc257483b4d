"""The unit of distributed work: compress (or decompress) one shard of images.

Plain functions, picklable arguments, no Prefect: the same call runs in a loop, under
Dask, or in a test. A bad image is a row with ``status="error"``, never an exception
that kills the shard: anything that goes wrong decoding, encoding or measuring one
image is that image's row. Storage that fails *does* raise, because a row is final (a
resumed run skips finished shards) and an outage must not turn good images into error
rows: a destination that refuses a write raises :class:`DestinationError`, a source
that cannot be read for a reason that is not the file's own (an S3 5xx after retries,
a dropped connection, EIO) raises :class:`SourceError`. The task is then retried or
fails loudly, and a re-run redoes the shard. A file's own problems (gone since
listing, unreadable, a FIFO or a link loop, over the size limit) are rows.

Order of writes (what makes resume safe): artifacts, then the shard's Parquet report,
then its marker. Each write is whole-or-nothing (:func:`tasks.storage.write_bytes`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compressors import CODECS, get_codec
from compressors.imageio import ImageError, decode_image, encode_png, max_file_bytes
from compressors.roundtrip import measure
from tasks.models import ensure_model
from tasks.layout import artifact_url, report_url, run_of_artifacts
from tasks.plan import ShardSpec, read_manifest, write_marker
from tasks.report import read_reports, write_report
from tasks.storage import (
    DestinationError,
    FileTooLargeError,
    NotARegularFileError,
    Storage,
    is_local,
    join,
    read_bytes,
    write_bytes,
)

__all__ = ["DestinationError", "SourceError", "compress_shard", "compress_shard_retrying", "compress_one", "retrying",
           "decompress_context", "decompress_shard"]

# Local read errors that belong to the file itself, not to the storage: they become rows.
FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ELOOP,
               errno.ENAMETOOLONG, errno.ENXIO, errno.ENODEV, errno.EINVAL}


class SourceError(RuntimeError):
    """The source could not be read for a reason that is not the file's own: retry the shard."""


# What a retry cannot fix: a bad configuration, a refused destination. Anything else that
# fails a whole shard (a storage outage after botocore's own retries, a dropped connection)
# is retried after each of these delays; shards are idempotent, so that is safe.
PERMANENT = (ValueError, FileNotFoundError, PermissionError, DestinationError)
RETRY_DELAYS_S = (2.0, 10.0)


def retrying(job: Callable[[], dict], delays: tuple[float, ...] = RETRY_DELAYS_S) -> dict:
    """``job()``, retried after each of ``delays`` when it fails transiently.

    What the flows send to Dask, one plain Dask task per shard: the same retry policy as
    the Prefect task wrappers, without a Prefect task run per shard (~200 ms each under
    DaskTaskRunner). ``job`` is a picklable zero-argument callable (a ``functools.partial``).
    """
    for delay in (*delays, None):
        try:
            return job()
        except PERMANENT:
            raise
        except Exception:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def compress_shard_retrying(spec: ShardSpec, delays: tuple[float, ...] = RETRY_DELAYS_S) -> dict:
    """:func:`compress_shard` under :func:`retrying` (the compress flow's Dask task)."""
    return retrying(functools.partial(compress_shard, spec), delays)


def compress_shard(spec: ShardSpec) -> dict:
    """Compress every image of a shard; write artifacts, the report and the marker.

    Returns a small summary (counts and sums), never the rows, so the flow's memory
    does not grow with the collection.
    """
    codec = get_codec(spec.codec)
    params = spec.params
    if spec.model_url:  # a learned codec's model kind is the codec's name (autoencoder, lossless)
        ensure_model(spec.model_url, spec.storage, kind=spec.codec)
    for kind, url in spec.helper_urls:
        ensure_model(url, spec.storage, kind=kind)
    rows = [compress_one(spec, codec, params, rel, size) for rel, size in spec.files]
    _write(report_url(spec.dest, spec.run_id, spec.shard_id), None, spec.storage, rows=rows)
    summary = summarize_rows(rows)
    write_marker(spec, summary)
    return {"shard": spec.shard_id, **summary}


def compress_one(spec: ShardSpec, codec, params: dict, rel: str, size: int) -> dict:
    row = {
        "run_id": spec.run_id, "shard": spec.shard_id, "source": rel, "codec": codec.name,
        "params": spec.params_json, "status": "error", "source_bytes": size,
    }
    url = join(spec.source, rel)
    try:
        data = read_file(url, spec.storage, max_bytes=max_file_bytes(spec.max_pixels))
    except _FileProblem as exc:
        row["error"] = str(exc)
        return row
    row.update(source_bytes=len(data), source_sha256=hashlib.sha256(data).hexdigest())
    try:
        src = decode_image(data, max_pixels=spec.max_pixels)
        h, w, c = src.image.shape
        row.update(source_format=src.source_format, conversion=src.conversion, width=w, height=h, channels=c)
        measured = measure(codec, src.image, params, source=data, postfilter=spec.postfilter,
                           classifier=spec.classifier)
    except Exception as exc:  # noqa: BLE001  (whatever one image does, it is that image's row)
        row["error"] = _message(exc)
        return row
    url = artifact_url(spec.dest, spec.run_id, rel, measured.extension(codec))  # auto: the chosen codec's
    _write(url, measured.encoded.data, spec.storage)
    row.update(status="ok", artifact=url, **measured.fields(row["source_bytes"], input_exact=src.pixel_exact))
    return row


def decompress_shard(
    source: str,
    dest: str,
    files: tuple[tuple[str, int], ...],
    storage: Storage = Storage(),
    model_url: str | None = None,
    codec: str | None = None,
    checksums: dict[str, str] | None = None,
    postfilter: str | None = None,
) -> dict:
    """Give back every artifact under ``source`` as a file under ``dest``, mirroring paths.

    An artifact that holds its source *file* (a JPEG transcoded to JPEG XL, or a file a
    codec kept as it is) comes back as that file, byte for byte, under the source's own
    name; ``checksums`` (source path -> SHA-256 hex, from the run's report) checks it, and
    a mismatch is that file's error, never a silent wrong file. Any other artifact is
    decoded to a lossless PNG. ``codec`` is the run's codec (:func:`decompress_context`):
    with it, a file without the codec's extension is one kept as it is; without it, the
    extension picks the codec. Artifacts name the model they need; ``model_url`` loads a
    trained one that is not shipped. ``postfilter`` (shipped name, id or URL) filters every
    decoded image before it is written (restored originals are left as they are).
    """
    if model_url:  # a URL: its metadata says which kind of model it is
        ensure_model(model_url, storage, kind=None)
    if postfilter:
        postfilter = ensure_model(postfilter, storage, kind="postfilter")
    errors: list[dict] = []
    ok = 0
    for rel, _ in files:
        try:
            owner = get_codec(codec) if codec else codec_for_path(rel)
            data = read_file(join(source, rel), storage, max_bytes=max_file_bytes())
            name, out = _give_back(owner, rel, data, kept=codec is not None, checksums=checksums or {},
                                   postfilter=postfilter)
        except _FileProblem as exc:
            errors.append({"source": rel, "error": str(exc)})
            continue
        except SourceError:
            raise  # storage, not the artifact: fail the task so it is retried
        except Exception as exc:  # noqa: BLE001  (an untrusted artifact that fails to decode is a row)
            errors.append({"source": rel, "error": _message(exc)})
            continue
        _write(join(dest, name), out, storage)
        ok += 1
    return {"images": len(files), "ok": ok, "errors": len(errors), "error_rows": errors}


def _give_back(
    codec, rel: str, data: bytes, *, kept: bool, checksums: dict[str, str], postfilter: str | None = None
) -> tuple[str, bytes]:
    """``(name, bytes)`` to write for artifact ``rel``: the original file, or a PNG of the (filtered) pixels."""
    if rel.lower().endswith(codec.extension):
        name, original = rel[: -len(codec.extension)], codec.restore(data)
    elif kept:
        name, original = rel, data  # not the codec's format: the source file, kept as it is
    else:
        raise ValueError(f"{rel!r} is not a {codec.name} artifact")
    if original is None:
        image = codec.decode(data)
        if postfilter:
            from compressors.postfilter import apply  # noqa: PLC0415  (torch: only when asked)

            image = apply(image, postfilter)
        return png_name(rel, codec.extension), encode_png(image)
    expected = checksums.get(name)
    if expected is not None and hashlib.sha256(original).hexdigest() != expected:
        raise ValueError(f"the file given back for {name!r} does not match the SHA-256 of the source in the report")
    return name, original


def original_name(rel: str, codec_name: str) -> str:
    """The source path an artifact of ``codec_name`` at ``rel`` gives back when it holds the file."""
    extension = get_codec(codec_name).extension
    return rel[: -len(extension)] if rel.lower().endswith(extension) else rel


@dataclass(frozen=True)
class DecompressContext:
    """What decompressing a run's artifacts folder knows from the run: its codec and the checksums."""

    codec: str | None = None  # None: not a run's folder (or no manifest): the extensions decide
    checksums: dict[str, str] = field(default_factory=dict)  # source path -> SHA-256 hex of the file

    def extensions(self) -> tuple[str, ...] | None:
        """What to list: every file of a known run (kept files have any name), else codec extensions."""
        return None if self.codec else tuple(sorted({c.extension for c in CODECS.values() if c.extension}))

    def for_files(self, files) -> dict[str, str]:
        """The checksums of the originals these artifacts give back (a shard's share)."""
        if not self.codec:
            return {}
        names = (original_name(rel, self.codec) for rel, _ in files)
        return {n: self.checksums[n] for n in names if n in self.checksums}


def decompress_context(source: str, storage: Storage = Storage()) -> DecompressContext:
    """Read the run behind ``source`` when it is ``DEST/artifacts/<run_id>``: codec and checksums."""
    run = run_of_artifacts(source)
    manifest = read_manifest(*run, storage) if run else None
    if not manifest or not CODECS.get(manifest.get("codec")) or not CODECS[manifest["codec"]].extension:
        return DecompressContext()  # not a run, or a codec whose artifacts are other codecs' files (auto)
    table = read_reports(run[0], storage, run_ids=[run[1]]).select(["source", "status", "source_sha256"])
    checksums = {
        r["source"]: r["source_sha256"] for r in table.to_pylist() if r["status"] == "ok" and r["source_sha256"]
    }
    return DecompressContext(codec=manifest["codec"], checksums=checksums)


def codec_for_path(rel: str):
    """The codec whose artifact extension ends ``rel`` (longest match wins)."""
    from compressors import CODECS  # noqa: PLC0415

    # (``auto`` has no extension of its own: its artifacts carry the chosen codec's.)
    matches = [c for c in CODECS.values() if c.extension and rel.lower().endswith(c.extension)]
    if not matches:
        raise ValueError(f"no codec writes files like {rel!r}")
    # ".png" is both kmeans's artifact and a plain PNG: kmeans decodes any PNG.
    return max(matches, key=lambda c: len(c.extension))


def png_name(rel: str, extension: str) -> str:
    """``a/b.jpg.webp`` -> ``a/b.jpg.png``; ``a/b.png.png`` -> ``a/b.png``."""
    stem = rel[: -len(extension)] if rel.lower().endswith(extension) else rel
    return stem if stem.lower().endswith(".png") else stem + ".png"


class _FileProblem(Exception):
    """Reading this one file failed because of the file itself; the message says why."""


def read_file(url: str, storage: Storage, *, max_bytes: int | None = None) -> bytes:
    """Read one input file: its own problems raise ``_FileProblem``, storage problems :class:`SourceError`."""
    try:
        return read_bytes(url, storage, max_bytes=max_bytes)
    except (FileTooLargeError, NotARegularFileError, FileNotFoundError) as exc:
        raise _FileProblem(_read_message(exc)) from None
    except OSError as exc:
        if exc.errno in FILE_ERRNOS and is_local(storage.fs(url)[0]):
            raise _FileProblem(_read_message(exc)) from None
        raise SourceError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise SourceError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc


def _read_message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "cannot read: no such file (a dangling link, or removed since it was listed)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    return f"cannot read: {exc}"


def summarize_rows(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "images": len(rows),
        "ok": len(ok),
        "errors": len(rows) - len(ok),
        "source_bytes": sum(r.get("source_bytes") or 0 for r in rows),
        "artifact_bytes": sum(r["artifact_bytes"] for r in ok),
        "pixels": sum(r["width"] * r["height"] for r in ok),
        "sum_psnr": sum(r["psnr"] for r in ok if np.isfinite(r["psnr"])),
        "finite_psnr": sum(1 for r in ok if np.isfinite(r["psnr"])),
        "sum_ssim": sum(r["ssim"] for r in ok),
        "sum_encode_ms": sum(r["encode_ms"] for r in ok),
        "sum_decode_ms": sum(r["decode_ms"] for r in ok),
        "exact": sum(1 for r in ok if r.get("exact")),
        "bytes_saved": sum(r["bytes_saved"] for r in ok),
    }


def _write(url: str, data: bytes | None, storage: Storage, *, rows: list[dict] | None = None) -> None:
    try:
        if rows is not None:
            write_report(url, rows, storage)
        else:
            write_bytes(url, data, storage)
    except DestinationError:
        raise
    except Exception as exc:  # the destination, not the image, failed
        raise DestinationError(f"cannot write {url}: {_message(exc)}") from exc


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (ImageError, DestinationError)) else f"{type(exc).__name__}: {text}"

