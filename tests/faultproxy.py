"""A fault-injecting HTTP proxy on loopback, for putting in front of a real S3 endpoint.

Clients (s3fs / botocore) talk to the proxy as if it were the endpoint; the proxy
forwards each request to ``upstream`` (moto's server) and, on a share of requests,
injects a fault instead of (or on top of) the real answer:

``500``        an S3 ``InternalError`` (the request never reaches the store)
``503``        an S3 ``SlowDown`` throttle (never reaches the store)
``drop``       the connection closes before any answer (never reaches the store)
``drop_after`` the request *is* executed, then the connection closes before the answer
               (the client cannot know it succeeded: its retry must be harmless)
``truncate``   the answer's headers promise the whole body, half of it is sent, then close
``slow``       the answer comes late (a seeded delay within ``slow_s``), then normally

Whether a request is faulted is decided from ``(seed, method, path, n)`` where ``n``
counts earlier requests with the same method and path, so the same run of requests
meets the same faults whatever the threads' interleaving. Faults are *bounded*: after
``max_consecutive`` faults in a row on one method+path the next request passes, so a
client that retries at least ``max_consecutive + 1`` times always gets through.
With ``cover_all``, a drawn fault becomes the first kind not injected yet, so a short
run still meets every kind (a ``truncate`` only counts when there was a body to cut).
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "expect",
}

S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
)

DEFAULT_RATES = {"500": 0.06, "503": 0.05, "drop": 0.04, "drop_after": 0.04, "truncate": 0.03, "slow": 0.08}


class FaultProxy:
    """``with FaultProxy(upstream, rates=..., seed=...) as proxy: ... proxy.url``."""

    def __init__(
        self,
        upstream: str,
        *,
        rates: dict[str, float] | None = None,
        seed: int = 0,
        slow_s: tuple[float, float] = (0.2, 0.8),
        max_consecutive: int = 2,
        max_faults: int | None = None,
        cover_all: bool = False,
    ):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port or 80
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        unknown = set(self.rates) - set(DEFAULT_RATES)
        if unknown or sum(self.rates.values()) > 1:
            raise ValueError(f"bad fault rates {self.rates}")
        self.seed, self.slow_s, self.max_consecutive, self.max_faults = seed, slow_s, max_consecutive, max_faults
        self.cover_all = cover_all
        self.enabled = True  # False: a plain pass-through proxy (still counting and recording)
        self.counts: collections.Counter[str] = collections.Counter()
        self.authorizations: set[str] = set()  # the "Credential=..." scopes clients signed with
        self._seen: collections.Counter[str] = collections.Counter()
        self._streak: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def faults(self) -> int:
        return sum(v for k, v in self.counts.items() if k in DEFAULT_RATES)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def decide(self, method: str, path: str) -> str | None:
        """The fault (or None) for this request; deterministic given seed and per-key order."""
        key = f"{method} {path}"
        with self._lock:
            n = self._seen[key]
            self._seen[key] += 1
            self.counts["requests"] += 1
            if not self.enabled or self._streak[key] >= self.max_consecutive:
                self._streak[key] = 0
                return None
            if self.max_faults is not None and self.faults >= self.max_faults:
                return None
            draw = random.Random(f"{self.seed}|{key}|{n}").random()
            fault = None
            for kind, rate in self.rates.items():
                if draw < rate:
                    fault = kind
                    break
                draw -= rate
            if fault is None:
                self._streak[key] = 0
            else:
                if self.cover_all:
                    fault = next((k for k in self.rates if self.rates[k] > 0 and not self.counts[k]), fault)
                self._streak[key] += 1
                self.counts[fault] += 1
            return fault

    def _recount(self, old: str, new: str) -> None:
        with self._lock:
            self.counts[old] -= 1
            self.counts[new] += 1

    def slow_delay(self, method: str, path: str) -> float:
        lo, hi = self.slow_s
        return lo + (hi - lo) * random.Random(f"{self.seed}|slow|{method} {path}").random()

    def _handler_class(self):
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle keep-alive connection's thread ends after this

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _upstream(self, method: str, body: bytes):
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or method in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                for attempt in range(2):  # a stale pooled connection gets one fresh retry
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection(
                            proxy.upstream_host, proxy.upstream_port, timeout=60
                        )
                    try:
                        conn.request(method, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        return resp.status, resp.reason, resp.getheaders(), resp.read()
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt:
                            raise
                raise AssertionError("unreachable")

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _send(self, status, reason, headers, body: bytes, *, head: bool, cut: bool = False) -> None:
                self.send_response_only(status, reason)
                for k, v in headers:
                    if k.lower() in HOP_BY_HOP or k.lower() in ("content-length", "date", "server"):
                        continue
                    self.send_header(k, v)
                if head:
                    length = next((v for k, v in headers if k.lower() == "content-length"), "0")
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                self.wfile.flush()
                if cut:
                    self._drop()

            def _handle(self) -> None:
                method = self.command
                body = self._body()
                auth = self.headers.get("Authorization", "")
                if "Credential=" in auth:
                    with proxy._lock:
                        proxy.authorizations.add(auth.split("Credential=", 1)[1].split(",", 1)[0])
                fault = proxy.decide(method, self.path)
                if fault in ("500", "503"):
                    code, msg = ("InternalError", "We encountered an internal error. Please try again.") \
                        if fault == "500" else ("SlowDown", "Please reduce your request rate.")
                    err = S3_ERROR.format(code=code, message=msg).encode()
                    reason = "Internal Server Error" if fault == "500" else "Slow Down"
                    self._send(int(fault), reason, [("Content-Type", "application/xml")], err, head=method == "HEAD")
                    return
                if fault == "drop":
                    self._drop()
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_delay(method, self.path))
                try:
                    status, reason, headers, resp_body = self._upstream(method, body)
                except (OSError, http.client.HTTPException):
                    proxy.counts["upstream_errors"] += 1
                    self._drop()
                    return
                if fault == "truncate" and (method == "HEAD" or not resp_body):
                    proxy._recount("truncate", "drop_after")  # nothing to cut: the answer is lost whole
                    fault = "drop_after"
                if fault == "drop_after":
                    self._drop()
                    return
                self._send(status, reason, headers, resp_body, head=method == "HEAD", cut=fault == "truncate")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
