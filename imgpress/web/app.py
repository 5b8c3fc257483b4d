"""`imgpress web`: try a codec on your own images in the browser.

A FastAPI app: one static page (``static/``) and a small JSON API over the same parts a run
uses — the codec registry (:data:`compressors.CODECS`, read at request time, so the form
shows every codec and parameter registered), the input rules of
:func:`compressors.imageio.decode_image` and the round trip of
:func:`compressors.roundtrip.measure` that makes every report row. There is no second
code path: what the page shows for an image is what its report row would say.

Untrusted input: the upload size is checked from ``Content-Length`` and again while the
body streams in; the pixel count claimed by the header is checked before decoding; any
failure is a JSON ``{"error": message}`` the page shows (never a traceback); at most
``workers`` images are processed at once and ``queue`` more wait, beyond which the answer
is 503 "busy". Files live only in one temporary folder, removed when the server stops.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from compressors import CODECS, get_codec
from compressors.imageio import ImageError, decode_image, encode_png, max_file_bytes
from compressors.roundtrip import measure
from tasks.storage import pid_alive

log = logging.getLogger("imgpress.web")

STATIC = Path(__file__).parent / "static"
TEMP_PREFIX = "imgpress-web-"
# The error map's colour scale: an absolute error of this many levels (or more) is white.
ERROR_MAP_FULL_SCALE = 32
_ID = re.compile(r"^[0-9a-f]{16}$")
_DROPPED = "{name} is no longer on the server (it keeps the most recent uploads); upload it again"


@dataclass(frozen=True)
class Limits:
    """What one server accepts. Defaults suit a laptop; `imgpress web --help` sets them."""

    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 25_000_000
    workers: int = 2  # images decoded/compressed at once
    queue: int = 6  # requests waiting for a worker; more are answered 503 busy
    keep_images: int = 24  # uploads kept (oldest dropped with their results)
    keep_results: int = 96  # compressed results kept


class WebError(Exception):
    """A request the page should explain: HTTP status and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Gate:
    """Bounds the work: ``workers`` at once, ``queue`` more admitted to wait, the rest refused.

    ``admit`` never blocks (an over-full server answers at once); ``run`` blocks its worker
    thread until one of the ``workers`` slots is free.
    """

    def __init__(self, workers: int, queue: int):
        if workers < 1 or queue < 0:
            raise ValueError("workers must be >= 1 and queue >= 0")
        self.capacity = workers + queue
        self._admitted = 0
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(workers)

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self.capacity:
                raise WebError(503, f"the server is busy ({self._admitted} images in progress); try again in a moment")
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    def run(self, fn, /, *args, **kwargs):
        with self._slots:
            return fn(*args, **kwargs)


@dataclass
class Upload:
    id: str
    name: str
    folder: Path
    info: dict[str, Any]
    results: list[str] = field(default_factory=list)

    @property
    def source(self) -> Path:
        return self.folder / "source"


class Workspace:
    """The one temporary folder every file of this server lives in, with bounded contents.

    Layout: ``<tmp>/imgpress-web-XXXX/<image id>/source``, ``original.png`` and
    ``<result id>/{artifact, decoded.png, error.png}``. Ids are random hex; no user-given
    name ever becomes a path.
    """

    def __init__(self, limits: Limits, root: str | None = None):
        self.limits = limits
        remove_orphaned_workspaces(root)
        self.root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
        (self.root / "pid").write_text(str(os.getpid()))
        self._lock = threading.Lock()
        self._uploads: OrderedDict[str, Upload] = OrderedDict()
        self._results: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()  # id -> (image id, info)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def new_upload(self, name: str) -> Upload:
        uid = secrets.token_hex(8)
        folder = self.root / uid
        folder.mkdir()
        return Upload(uid, name, folder, {})

    def add_upload(self, upload: Upload) -> None:
        with self._lock:
            self._uploads[upload.id] = upload
            while len(self._uploads) > self.limits.keep_images:
                _, old = self._uploads.popitem(last=False)
                for rid in old.results:
                    self._results.pop(rid, None)
                shutil.rmtree(old.folder, ignore_errors=True)

    def upload(self, uid: str) -> Upload:
        with self._lock:
            upload = self._uploads.get(uid) if _ID.match(uid) else None
            if upload is None:
                raise WebError(404, _DROPPED.format(name="this image"))
            self._uploads.move_to_end(uid)
            return upload

    def new_result(self, upload: Upload) -> tuple[str, Path]:
        rid = secrets.token_hex(8)
        folder = upload.folder / rid
        folder.mkdir()
        return rid, folder

    def add_result(self, upload: Upload, rid: str, info: dict[str, Any]) -> None:
        with self._lock:
            upload.results.append(rid)
            self._results[rid] = (upload.id, info)
            while len(self._results) > self.limits.keep_results:
                old, (old_uid, _) = self._results.popitem(last=False)
                owner = self._uploads.get(old_uid)
                if owner is not None and old in owner.results:
                    owner.results.remove(old)
                    shutil.rmtree(owner.folder / old, ignore_errors=True)

    def result(self, rid: str) -> tuple[Path, dict[str, Any]]:
        with self._lock:
            found = self._results.get(rid) if _ID.match(rid) else None
            if found is None:
                raise WebError(404, "this result is no longer on the server; compress the image again")
            uid, info = found
            return self._uploads[uid].folder / rid, info


def remove_orphaned_workspaces(root: str | None = None) -> None:
    """Remove the temporary folders of earlier servers that died without cleaning up (SIGKILL)."""
    base = Path(root or tempfile.gettempdir())
    for folder in base.glob(TEMP_PREFIX + "*"):
        try:
            pid = int((folder / "pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created: leave it
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- the codecs form


def codec_form() -> list[dict[str, Any]]:
    """Every registered codec and its parameters, as the page builds its form from them."""
    return [
        {
            "name": codec.name,
            "description": codec.description,
            "extension": codec.extension,
            "params": [_param_form(name, spec) for name, spec in codec.params.items()],
        }
        for codec in sorted(CODECS.values(), key=lambda c: c.name)
    ]


def postfilter_form() -> list[dict[str, Any]]:
    """The shipped post-filters (run option ``--postfilter``): name, id and what each restores."""
    import json  # noqa: PLC0415

    from compressors import models  # noqa: PLC0415

    out = []
    for mid, path in models.shipped("postfilter").items():
        meta = json.loads(path.with_suffix(".json").read_text())
        if not meta.get("name"):
            continue
        spec = meta.get("postfilter", {})
        lo, hi = (spec.get("range") or [None, None])[:2]
        restores = f"{spec.get('for', '?')} output" + (f", {spec.get('parameter')} {lo}-{hi}" if lo is not None else "")
        out.append({"name": str(meta["name"]), "id": mid, "description": f"restores {restores}"})
    return sorted(out, key=lambda f: f["name"])


def default_codec() -> str:
    """The codec a run uses when none is named (the flow parameters' default)."""
    from flows.params import CompressRequest  # noqa: PLC0415

    return str(CompressRequest.model_fields["codec"].default)


def _param_form(name: str, spec) -> dict[str, Any]:
    kind = {int: "int", float: "float", bool: "bool"}.get(spec.kind, "str")
    return {
        "name": name,
        "kind": kind,
        "default": _jsonable(spec.default),
        "min": spec.lo,
        "max": spec.hi,
        "help": spec.help,
        "choices": [_jsonable(c) for c in spec.choices] or None,
        # words a numeric parameter takes besides its range (e.g. kmeans colors "elbow"), where a Param has them
        "keywords": list(getattr(spec, "keywords", ())) or None,
    }


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (np.generic,)):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# ------------------------------------------------------------------------------- the work


def display_name(raw: str | None) -> str:
    """A safe, short label for an uploaded file's name (never used as a path)."""
    name = unicodedata.normalize("NFC", raw or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip() or "upload"
    return name[-120:]


def accept_upload(ws: Workspace, name: str, data: bytes) -> dict[str, Any]:
    """Decode an upload by the pipeline's input rules and keep it for compressing."""
    try:
        src = decode_image(data, max_pixels=ws.limits.max_pixels)
    except ImageError as exc:
        raise WebError(415 if str(exc).startswith("not an image") else 422, f"{name}: {exc}") from None
    upload = ws.new_upload(name)
    upload.source.write_bytes(data)
    (upload.folder / "original.png").write_bytes(encode_png(src.image, compress_level=1))
    h, w, c = src.image.shape
    upload.info = {
        "id": upload.id, "name": name, "bytes": len(data), "width": w, "height": h, "channels": c,
        "format": src.source_format, "mode": src.source_mode, "conversion": src.conversion,
        "original": f"api/images/{upload.id}/original.png",
    }
    ws.add_upload(upload)
    return upload.info


def compress_upload(ws: Workspace, upload: Upload, codec_name: str, params: dict[str, Any],
                    postfilter: str | None = None) -> dict[str, Any]:
    """Run the pipeline's round trip on an uploaded image; keep the artifact, decoded PNG and error map.

    ``postfilter``: a shipped post-filter's name; the decoded image, its metrics and error map
    are then the filtered ones (as ``--postfilter`` makes them in a run's report).
    """
    try:
        codec = get_codec(codec_name)
        canonical = codec.canonical_params(params)
    except ValueError as exc:
        raise WebError(400, str(exc)) from None
    if postfilter is not None:
        known = [f["name"] for f in postfilter_form()]
        if postfilter not in known:
            raise WebError(400, f"unknown post-filter {postfilter!r} (shipped: {', '.join(known) or 'none'})")
    try:
        data = upload.source.read_bytes()
    except FileNotFoundError:
        raise WebError(404, _DROPPED.format(name=upload.name)) from None
    src = decode_image(data, max_pixels=ws.limits.max_pixels)  # accepted once: the same rules again
    try:
        m = measure(codec, src.image, canonical, source=data, postfilter=postfilter)
    except MemoryError:
        raise WebError(507, f"{upload.name}: not enough memory to compress this image with {codec.name}") from None
    except Exception as exc:  # noqa: BLE001  (a codec refusing an image is a message, as in a report row)
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, ImageError)):
            text = f"{type(exc).__name__}: {text}"
        raise WebError(422, f"{upload.name}: {codec.name} failed: {text}") from None
    try:
        rid, folder = ws.new_result(upload)
        (folder / "artifact").write_bytes(m.encoded.data)
        (folder / "decoded.png").write_bytes(encode_png(m.decoded, compress_level=1))
        (folder / "error.png").write_bytes(encode_png(error_map(m.reference, m.decoded), compress_level=1))
    except FileNotFoundError:  # newer uploads pushed this one out meanwhile
        raise WebError(404, _DROPPED.format(name=upload.name)) from None
    h, w, c = src.image.shape
    # The pipeline's naming: <source name><codec ext>, or the suffix this image's artifact got.
    extension = m.extension(codec)
    artifact_name = upload.name + extension
    info = {
        "id": rid, "image": upload.id, "name": upload.name, "codec": codec.name, "params": _jsonable(canonical),
        "extension": extension or "original file", "route": m.encoded.route, "width": w, "height": h, "channels": c,
        "conversion": src.conversion, "source_bytes": len(data),
        "decision": _jsonable(dict(m.encoded.decision)) or None,
        **_jsonable({k: v for k, v in m.fields(len(data), input_exact=src.pixel_exact).items() if k != "decision"}),
        "artifact_name": artifact_name,
        "decoded_name": artifact_name + ".png",
        "artifact": f"api/results/{rid}/artifact",
        "decoded": f"api/results/{rid}/decoded.png",
        "error_map": f"api/results/{rid}/error.png",
        "error_map_full_scale": ERROR_MAP_FULL_SCALE,
    }
    ws.add_result(upload, rid, info)
    return info


def error_map(reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Per pixel, the largest absolute error over the channels, as a black-red-yellow-white heat map.

    The scale is fixed (``ERROR_MAP_FULL_SCALE`` levels = white) so two settings compare by eye.
    """
    err = np.abs(reference.astype(np.int16) - decoded.astype(np.int16)).max(axis=2)
    t = np.minimum(err, ERROR_MAP_FULL_SCALE).astype(np.float32) / ERROR_MAP_FULL_SCALE
    rgb = np.stack([np.clip(3 * t - k, 0, 1) for k in range(3)], axis=2)
    return (rgb * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------- the app


def create_app(limits: Limits = Limits(), *, temp_root: str | None = None) -> FastAPI:
    """The ASGI app. Its workspace (temporary folder) lives from startup to shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ws = Workspace(limits, temp_root)
        app.state.workspace = ws
        log.info("working files in %s (removed on exit)", ws.root)
        try:
            yield
        finally:
            ws.close()

    app = FastAPI(title="imgpress web", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.limits = limits
    app.state.gate = gate = Gate(limits.workers, limits.queue)
    upload_limit = min(limits.max_upload_bytes, max_file_bytes(limits.max_pixels))

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)  # the traceback stays in the server log
        return JSONResponse({"error": f"unexpected server error ({type(exc).__name__}); see the server log"},
                            status_code=500)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'",
        )
        return response

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    async def health():
        return {"ok": True}

    @app.get("/api/codecs")
    async def codecs():
        """Built from the registry on every request: a codec registered later shows up."""
        return {
            "codecs": codec_form(),
            "default_codec": default_codec(),
            "postfilters": postfilter_form(),
            "limits": {"max_upload_bytes": upload_limit, "max_pixels": limits.max_pixels,
                       "workers": limits.workers, "queue": limits.queue},
            "error_map_full_scale": ERROR_MAP_FULL_SCALE,
        }

    @app.post("/api/images")
    async def upload_image(request: Request):
        """The raw file is the body (``X-Filename`` names it); answers what the pipeline sees."""
        from urllib.parse import unquote

        name = display_name(unquote(request.headers.get("x-filename", "")))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > upload_limit:
            raise WebError(413, f"{name}: {int(declared):,} bytes is over this server's limit of {upload_limit:,}")
        with gate.admit():
            data = await _read_body(request, upload_limit, name)
            if not data:
                raise WebError(400, f"{name}: empty file (0 bytes)")
            return await run_in_threadpool(gate.run, accept_upload, app.state.workspace, name, data)

    @app.post("/api/images/{image_id}/compress")
    async def compress(image_id: str, request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise WebError(400, "the request body must be JSON: {\"codec\": ..., \"params\": {...}}") from None
        if not isinstance(body, dict) or not isinstance(body.get("codec"), str) \
                or not isinstance(body.get("params", {}), dict) \
                or not isinstance(body.get("postfilter") or "", str):
            raise WebError(400, "the request body must be {\"codec\": name, \"params\": {name: value}, "
                                "\"postfilter\": name or null}")
        ws: Workspace = app.state.workspace
        upload = ws.upload(image_id)
        params = {k: v for k, v in body.get("params", {}).items() if v is not None and v != ""}
        with gate.admit():
            return await run_in_threadpool(gate.run, compress_upload, ws, upload, body["codec"], params,
                                           body.get("postfilter") or None)

    @app.get("/api/images/{image_id}/original.png")
    async def original(image_id: str):
        upload = app.state.workspace.upload(image_id)
        return FileResponse(upload.folder / "original.png", media_type="image/png")

    @app.get("/api/results/{result_id}/{what}")
    async def result_file(result_id: str, what: str):
        folder, info = app.state.workspace.result(result_id)
        if what == "artifact":
            return FileResponse(folder / "artifact", media_type="application/octet-stream",
                                filename=info["artifact_name"])
        if what == "decoded.png":
            return FileResponse(folder / "decoded.png", media_type="image/png", filename=info["decoded_name"],
                                content_disposition_type="inline")
        if what == "error.png":
            return FileResponse(folder / "error.png", media_type="image/png")
        raise WebError(404, f"no such file: {what}")

    return app


async def _read_body(request: Request, limit: int, name: str) -> bytes:
    """The request body, refused as soon as it grows past ``limit`` (whatever Content-Length said)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebError(413, f"{name}: over this server's upload limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
