"""Every location is an fsspec URL: a local path, ``file://``, ``s3://bucket/prefix`` ...

S3-compatible stores (MinIO, Ceph, moto) are reached by an endpoint URL, given
explicitly or through the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
variables; credentials come from the standard AWS chain (environment variables,
profiles, instance roles) and never pass through imgpress's parameters, so they
cannot end up in a report, a manifest or a Prefect run's parameters.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from functools import lru_cache

import fsspec
from fsspec.core import url_to_fs

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k", ".tga", ".ico",
)


@dataclass(frozen=True)
class Storage:
    """How to reach object storage; holds no secrets (those stay in the AWS chain)."""

    endpoint_url: str | None = None
    region: str | None = None

    def options(self, url: str) -> dict:
        if not url.startswith(("s3://", "s3a://")):
            return {}
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client: dict = {}
        if endpoint:
            client["endpoint_url"] = endpoint
        if self.region:
            client["region_name"] = self.region
        # New objects are written whole by a single PUT; a retry re-sends the same bytes.
        return {"client_kwargs": client, "config_kwargs": {"retries": {"max_attempts": 8, "mode": "adaptive"}}}

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return _fs(url, self)


@lru_cache(maxsize=32)
def _fs(url: str, storage: Storage) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(url, **storage.options(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join URL parts with '/', whatever the filesystem."""
    return posixpath.join(url.rstrip("/"), *(p.strip("/") for p in parts if p))


def read_bytes(url: str, storage: Storage = Storage()) -> bytes:
    fs, path = storage.fs(url)
    return fs.cat_file(path)


def exists(url: str, storage: Storage = Storage()) -> bool:
    fs, path = storage.fs(url)
    return fs.exists(path)


def write_bytes(url: str, data: bytes, storage: Storage = Storage()) -> None:
    """Write ``data`` so that ``url`` never holds a partial object.

    Object stores publish a PUT whole. On a local or network filesystem we write a
    temporary sibling and rename it over the final name (atomic on POSIX).
    """
    fs, path = storage.fs(url)
    parent = posixpath.dirname(path)
    if _is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.partial")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def delete(url: str, storage: Storage = Storage()) -> None:
    fs, path = storage.fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(
    url: str,
    storage: Storage = Storage(),
    *,
    extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS,
    exclude: tuple[str, ...] = (),
) -> list[tuple[str, int]]:
    """All files under ``url`` (recursively) as sorted ``(relative_path, size)``.

    Hidden files and folders (a leading dot) and anything under an ``exclude`` URL are
    skipped; ``extensions`` filters by suffix, case-insensitively (``None`` keeps all).
    Local symlinks are not followed into directories, so a link loop cannot trap a run.
    """
    fs, root = storage.fs(url)
    root = root.rstrip("/")
    excluded = tuple(storage.fs(u)[1].rstrip("/") + "/" for u in exclude)
    if _is_local(fs):
        entries = _walk_local(root)
    else:
        entries = ((p, info.get("size") or 0) for p, info in fs.find(root, detail=True).items())
    out = []
    for path, size in entries:
        rel = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if excluded and (path + "/").startswith(excluded):
            continue
        if extensions is not None and not rel.lower().endswith(extensions):
            continue
        out.append((rel, int(size)))
    out.sort()
    return out


def _walk_local(root: str):
    if os.path.isfile(root):
        yield root, os.path.getsize(root)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                size = os.stat(path).st_size
            except OSError:
                size = 0  # a dangling link or unreadable entry: its row will say why
            yield path.replace(os.sep, "/"), size


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
