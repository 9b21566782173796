"""Serving one connection in the blocking models: handshake, handler, close, log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import SocketeerError
from . import _log, proxied

if TYPE_CHECKING:
    from ..connection import Connection
    from .core import Server


def run_handler(server: Server, conn: Connection) -> None:
    """Serve one connection to the end, close it, log it (thread and fork models)."""
    started = time.monotonic()
    error: BaseException | None = None
    conn.timeout = server.idle_timeout
    try:
        if server.accept_proxy_protocol:
            header, rest = proxied.read_header(conn)
            proxied.take_header(conn, header, rest)
            conn.timeout = server.idle_timeout
        if server.tls_context is not None:
            conn.start_tls(server.tls_context, server.idle_timeout)
        server.handler.serve(conn)
    except SocketeerError as exc:
        error = exc
    except Exception as exc:  # a bug in a user handler: log it, keep serving others
        _log.log.exception("handler %s failed for %s", server.handler.name, conn.peer)
        error = exc
    finally:
        conn.close()
        _log.closed(conn.peer, started, conn.bytes_received, conn.bytes_sent, error)
