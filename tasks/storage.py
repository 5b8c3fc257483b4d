"""Every location is an fsspec URL: a local path, ``file://``, ``s3://bucket/prefix`` ...

S3-compatible stores (MinIO, Ceph, moto) are reached by an endpoint URL, given
explicitly or through the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
variables; credentials come from the standard AWS chain (environment variables,
profiles, instance roles) and never pass through imgpress's parameters, so they
cannot end up in a report, a manifest or a Prefect run's parameters.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import posixpath
import re
import socket
import stat
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import fsspec
from fsspec.core import url_to_fs

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k", ".tga", ".ico",
)


class DestinationError(RuntimeError):
    """The destination refused a write: what was being written cannot be trusted or completed."""


class NotARegularFileError(OSError):
    """A local path that is a FIFO, socket, device or folder: reading it could block or never end."""


class FileTooLargeError(ValueError):
    """A file bigger than the caller's limit: refused before its bytes are read."""


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
        # Every request imgpress makes is idempotent (whole-object PUT, GET, LIST, HEAD,
        # DELETE), so retrying any of them is safe, including after a dropped connection
        # whose request did reach the store. "standard" retries 5xx, throttling and
        # connection errors with jittered exponential backoff (at most 20 s a wait);
        # "adaptive" adds a client-side rate limiter that, per worker process, only
        # delays the requests after a throttle (slower here under injected faults: 26 s against
        # 21 s for the same 81 requests).
        # s3fs retries connection and payload errors on top (5 tries, short backoff).
        return {
            "client_kwargs": client,
            "config_kwargs": {
                "retries": {"max_attempts": 8, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
            },
        }

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return _fs(url, self)


@lru_cache(maxsize=32)
def _fs(url: str, storage: Storage) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(url, **storage.options(url))
    return fs, path


def join(url: str, *parts: str) -> str:
    """Join URL parts with '/', whatever the filesystem."""
    return posixpath.join(url.rstrip("/"), *(p.strip("/") for p in parts if p))


def read_bytes(url: str, storage: Storage = Storage(), *, max_bytes: int | None = None) -> bytes:
    """The whole object at ``url``.

    Local paths must be regular files (following links): a FIFO would block forever and
    a device such as ``/dev/zero`` never ends, so both raise :class:`NotARegularFileError`.
    With ``max_bytes``, a larger file raises :class:`FileTooLargeError` and at most
    ``max_bytes + 1`` bytes are ever read (a file can grow while it is read).
    """
    fs, path = storage.fs(url)
    if is_local(fs):
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(errno.EINVAL, f"not a regular file ({_kind(info.st_mode)})", path)
        _check_size(info.st_size, max_bytes, path)
        with open(path, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    elif max_bytes is None:
        return fs.cat_file(path)
    else:
        try:
            data = fs.cat_file(path, start=0, end=max_bytes + 1)
        except OSError:
            # S3 answers a range on an empty object with InvalidRange; anything else re-raises.
            if fs.size(path) != 0:
                raise
            data = b""
    _check_size(len(data), max_bytes, path)
    return data


def _check_size(size: int, max_bytes: int | None, path: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise FileTooLargeError(f"file of {size:,}{'+' if size == max_bytes + 1 else ''} bytes is over the "
                                f"limit of {max_bytes:,} bytes: {path}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def exists(url: str, storage: Storage = Storage()) -> bool:
    fs, path = storage.fs(url)
    return fs.exists(path)


def write_bytes(url: str, data: bytes, storage: Storage = Storage()) -> None:
    """Write ``data`` so that ``url`` never holds a partial object.

    Object stores publish a PUT whole (s3fs switches to a multipart upload, also
    published whole, above 50 MiB). On a local or network filesystem we write a hidden
    temporary sibling (``.<name>.<uuid>.partial``, which listings skip), fsync it, and
    rename it over the final name (atomic on POSIX); a failed write removes it.
    Any failure raises :class:`DestinationError` naming the URL and the cause.
    """
    try:
        fs, path = storage.fs(url)
        if is_local(fs):
            _write_local(path, data)
        else:
            fs.pipe_file(path, data)
    except DestinationError:
        raise
    except Exception as exc:
        raise DestinationError(f"cannot write {url}: {type(exc).__name__}: {exc}") from exc


# A local write's temporary: ``.<name>.<host>-<pid>-<uuid>.partial`` (host: a hash of the
# hostname), so a later run can tell a dead writer's leftover from a live write.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_PARTIAL = re.compile(r"^\..+\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[0-9a-f]{8,32}\.partial$")
STALE_PARTIAL_S = 3600  # a temporary this old is stale whoever wrote it (another host, a reused pid)


def _write_local(path: str, data: bytes) -> None:
    parent = posixpath.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not every filesystem allows it
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_partials(url: str, storage: Storage = Storage(), *, max_age_s: float = STALE_PARTIAL_S) -> int:
    """Remove the temporaries that writers killed mid-write left under local ``url``; return how many.

    A temporary is stale when the process that wrote it (on this host) is gone, or when it
    is older than ``max_age_s`` (written on another host, or by an older version). A live
    writer's temporary is left alone, so a run running beside this one is not disturbed.
    Object stores have no temporaries (a PUT is whole): nothing to do there.
    """
    fs, root = storage.fs(url)
    if not is_local(fs) or not os.path.isdir(root):
        return 0
    removed, now = 0, time.time()
    for dirpath, _, files in os.walk(root, followlinks=False):
        for name in files:
            m = _PARTIAL.match(name)
            if not m:
                continue
            path = os.path.join(dirpath, name)
            try:
                dead = m["host"] == _HOST and not pid_alive(int(m["pid"]))
                if dead or now - os.lstat(path).st_mtime > max_age_s:
                    os.unlink(path)
                    removed += 1
            except OSError:
                continue  # renamed or removed meanwhile: not ours to worry about
    return removed


def writer_id() -> str:
    """This process as a writer: ``<host>-<pid>`` (host: a hash of the hostname)."""
    return f"{_HOST}-{os.getpid()}"


def writer_gone(writer: str | None) -> bool:
    """Whether the process that ``writer_id()`` named is known to be dead: it ran on this
    host and is gone. Another host's writer (or none recorded) is never known to be gone."""
    host, _, pid = (writer or "").partition("-")
    return host == _HOST and pid.isdigit() and not pid_alive(int(pid))


def age_s(url: str, storage: Storage = Storage()) -> float:
    """Seconds since ``url`` was last written (its store's clock for object stores)."""
    fs, path = storage.fs(url)
    if is_local(fs):
        return time.time() - os.stat(path).st_mtime
    info = fs.info(path)
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if hasattr(modified, "timestamp"):
        modified = modified.timestamp()
    return time.time() - float(modified)


LOCK_STALE_S = 600  # a lock this old is stale whoever holds it (another host, a hung process)


@contextlib.contextmanager
def exclusive(url: str, storage: Storage = Storage(), *, wait_s: float = 300.0, stale_s: float = LOCK_STALE_S):
    """Hold the lock object ``url`` for the block: one holder at a time across processes and hosts.

    Taken by creating ``url`` only if it does not exist (``O_EXCL`` locally; a conditional
    PUT, ``If-None-Match: *``, on S3). A lock whose holder died on this host, or that is
    older than ``stale_s``, is taken over. Waits up to ``wait_s``, then raises
    :class:`TimeoutError`. For short critical sections (merging a run's shards), not for
    long work: nothing renews it. A store that refuses the conditional create itself (one
    without conditional writes) runs the block without the lock, with a warning: what
    callers did before they took it.
    """
    fs, path = storage.fs(url)
    token = f"{writer_id()}-{uuid.uuid4().hex}"
    body = json.dumps({"holder": token, "time": time.time()}).encode()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            _create_exclusive(fs, path, body)
        except FileExistsError:  # someone holds it
            if _holder(fs, path) == token:  # this call's own PUT, retried by the client after it landed
                held = True
                break
            if _stale_lock(url, storage, stale_s):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(path)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{url} is held by another process (waited {wait_s:.0f} s)") from None
            else:
                time.sleep(0.05)
            continue
        except (NotImplementedError, ValueError, OSError) as exc:
            logging.getLogger(__name__).warning("cannot take the lock %s (%s): going on without it", url, exc)
            held = False
            if _holder(fs, path) == token:  # the create landed after all: do not leave it held
                with contextlib.suppress(OSError):
                    fs.rm(path)
        else:
            held = True
        break
    try:
        yield
    finally:
        if held and _holder(fs, path) == token:  # not taken over meanwhile
            with contextlib.suppress(OSError):
                fs.rm(path)


def _holder(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """The token a lock object holds (None: absent, unreadable or being written)."""
    try:
        return json.loads(fs.cat_file(path))["holder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, body: bytes) -> None:
    if is_local(fs):
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
    else:
        with fs.open(path, "xb") as fh:  # s3fs: a PUT with If-None-Match: * (FileExistsError if taken)
            fh.write(body)


def _stale_lock(url: str, storage: Storage, stale_s: float) -> bool:
    fs, path = storage.fs(url)
    holder = _holder(fs, path)  # None: being written (a local create is not atomic with its content), or garbage
    try:
        return writer_gone(holder.rsplit("-", 1)[0] if holder else None) or age_s(url, storage) > stale_s
    except FileNotFoundError:
        return False  # released meanwhile: try again


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    Local symlinks are not followed into directories, so a link loop cannot trap a run;
    links, FIFOs and other non-regular entries are listed (reading them says why they
    cannot be used). A local folder that does not exist or cannot be listed raises
    (``FileNotFoundError``, ``PermissionError``): a run must not silently miss files.
    """
    fs, root = storage.fs(url)
    root = root.rstrip("/")
    excluded = tuple(storage.fs(u)[1].rstrip("/") + "/" for u in exclude)
    if is_local(fs):
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
    if not os.path.isdir(root):  # missing, or a path through a file (ENOTDIR): nothing is there
        raise FileNotFoundError(errno.ENOENT, "no such folder", root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_raise):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                size = os.stat(path).st_size
            except OSError:
                size = 0  # a dangling link or unreadable entry: its row will say why
            yield path.replace(os.sep, "/"), size


def _raise(exc: OSError) -> None:
    raise exc


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local filesystem (where atomic renames and ``stat`` apply)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
