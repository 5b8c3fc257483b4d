"""`imgpress web`: a page to try codecs on uploaded images (see :mod:`imgpress.web.app`)."""

from __future__ import annotations

import socket

from imgpress.web.app import Limits, create_app

__all__ = ["Limits", "create_app", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one). Raises OSError with the reason when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket, limits: Limits = Limits(), *, log_level: str = "warning") -> None:
    """Serve the app on an already bound socket until SIGINT/SIGTERM; the workspace is removed on exit."""
    import uvicorn

    config = uvicorn.Config(
        create_app(limits), log_level=log_level, access_log=False, server_header=False,
        # a backstop below the app's own bound on work: idle and slow connections
        limit_concurrency=64, timeout_keep_alive=5, timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
