"""``Relay``: for each client on FROM, open TO and copy both ways (SPEC §6).

FROM is listened on (a stream address), or is standard I/O (one pair); TO is
connected to for every client (a stream address), run for every client
(``exec:``), or is standard I/O (one client at a time makes sense: use
``once``). Each pair runs in its own threads (``stream.Pair``); the accept
loop, stop signals and limits are the server's (``server.core``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable

from .. import proxyproto
from .._deadline import Deadline
from .._sockio import translate_errors
from ..access import AccessList
from ..address import Address
from ..connection import Connection, connect
from ..errors import NetworkError, SocketeerError, UsageError
from ..hexdump import HexDumper
from ..listener import Listener, listen
from ..server import _log
from ..server.core import Stopper
from ..server.threaded import accept_loop, accept_ready
from .endpoints import Endpoint, Program, Stdio
from .stream import HAS_SPLICE, Pair, Side

__all__ = ["Relay"]

PROXY_HEADER_TIMEOUT = 5.0
log = logging.getLogger("socketeer.relay")


class Relay:
    """A stream relay from ``source`` to ``target``.

    Raises:
        UsageError: endpoints that cannot be relayed (a datagram address on one
            side only, ``exec:`` as FROM).
        AddressInUse: FROM is taken.
    """

    def __init__(
        self,
        source: Endpoint,
        target: Endpoint,
        *,
        once: bool = False,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        connect_timeout: float | None = 10.0,
        zero_copy: bool = HAS_SPLICE,
        proxy_protocol: str | None = None,
        accept_proxy_protocol: bool = False,
        hexdump: HexDumper | None = None,
        hexdump_write: object = None,
        tls_server: object = None,
        tls_client: object = None,
    ) -> None:
        if isinstance(source, Program):
            raise UsageError("exec: can only be the TO side of a relay")
        for end in (source, target):
            if isinstance(end, Address) and end.is_datagram:
                raise UsageError(
                    f"{end} is a datagram address: a datagram relay needs datagram "
                    "addresses on both sides"
                )
        self.tls_client = tls_client
        if isinstance(target, Program) and shutil.which(target.argv[0]) is None:
            raise UsageError(f"exec: program not found: {target.argv[0]}")
        if proxy_protocol not in (None, "v1", "v2"):
            raise UsageError(f"--proxy-protocol takes v1 or v2, not {proxy_protocol!r}")
        self.source = source
        self.target = target
        self.once = once or isinstance(source, Stdio)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.access = AccessList(allow, deny)
        self.connect_timeout = connect_timeout
        self.zero_copy = zero_copy
        self.proxy_protocol = proxy_protocol
        self.accept_proxy_protocol = accept_proxy_protocol
        self._dumper = hexdump
        self._dump_write = hexdump_write
        self._dump_lock = threading.Lock()
        self.stopper = Stopper()
        self.pairs: set[Pair] = set()
        self._lock = threading.Lock()
        self.listener: Listener | None = None
        if isinstance(source, Address):
            self.listener = listen(source, tls=tls_server if source.is_tls else None)
            self.address: Address | None = self.listener.address
        else:
            self.address = None

    # -- running ------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Relay until SIGTERM/SIGINT (or, with ``once``, until the first pair is done)."""
        self.stopper.install_signals()
        watchdog = None
        if self.idle_timeout is not None:
            watchdog = threading.Thread(target=self._watch_idle, daemon=True)
            watchdog.start()
        try:
            if self.listener is None:
                self._in_background(self._serve_stdio)
            elif self.once:
                conn = self._accept_first()
                if conn is not None:
                    self.listener.close()
                    self._in_background(lambda: self._serve_client(conn))
            else:
                accept_loop(self.listener, self.stopper, self._accept)
        finally:
            self.close()

    def _in_background(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread and return when it is done or a stop is asked for.

        A thread blocked reading a terminal cannot be woken; the main thread
        stays free to answer SIGINT and SIGTERM.
        """
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()
                self.stopper.wake()

        threading.Thread(target=run, daemon=True).start()
        while not done.is_set() and not self.stopper.requested():
            self.stopper.wait()
        if failure:
            raise failure[0]

    def _accept_first(self) -> Connection | None:
        """``--once``: the first admitted client, or None if stopped before one came."""
        assert self.listener is not None
        first: list[Connection] = []

        def on_ready() -> None:
            assert self.listener is not None
            conn = accept_ready(self.listener)
            if conn is not None and self._admit(conn):
                first.append(conn)
                self.stopper.stop()  # ends the accept loop

        accept_loop(self.listener, self.stopper, on_ready)
        if not first:
            return None
        self.stopper.stopping = False  # that stop was ours; a signal may still stop us
        return first[0]

    def _admit(self, conn: Connection) -> bool:
        with self._lock:
            open_pairs = len(self.pairs)
        if not self.access.permits(conn.peer):
            _log.refused(conn.peer, "denied by --allow/--deny")
        elif self.max_connections is not None and open_pairs >= self.max_connections:
            _log.refused(conn.peer, f"{self.max_connections} connections open (--max-conns)")
        else:
            return True
        conn.close()
        return False

    def _accept(self) -> None:
        assert self.listener is not None
        conn = accept_ready(self.listener)
        if conn is not None and self._admit(conn):
            threading.Thread(target=self._serve_client, args=(conn,), daemon=True).start()

    def _serve_stdio(self) -> None:
        upstream = self._open_target(None)
        self._run_pair(Side.of_stdio(), upstream, "stdio")

    # -- one client -------------------------------------------------------------------

    def _serve_client(self, conn: Connection) -> None:
        client_name = str(conn.peer or conn.local or "client")
        prefix = b""
        try:
            if self.listener is not None and self.listener.tls_context is not None:
                conn.start_tls(self.listener.tls_context)  # here, not in the accept loop
            if self.accept_proxy_protocol:
                header, prefix = self._read_proxy_header(conn)
                if header.source is not None:
                    client_name = f"{header.source} via {client_name}"
            upstream = self._open_target(conn)
        except SocketeerError as exc:
            log.warning("%s: %s; closing", client_name, exc)
            conn.close()
            return
        try:
            if prefix:  # bytes that came with the PROXY header belong to the stream
                with translate_errors("send", str(self.target)):
                    if upstream.sock is not None:
                        upstream.sock.sendall(prefix)  # through TLS when TO is tls://
                    else:
                        _write_all(upstream.write_fd, prefix)
        except SocketeerError as exc:
            log.warning("%s: %s; closing", client_name, exc)
            conn.close()
            upstream.close()
            return
        sock, _ = conn.detach()  # the Side owns the socket now
        self._run_pair(Side.of_socket(sock, client_name), upstream, client_name)

    def _read_proxy_header(self, conn: Connection) -> tuple[proxyproto.ProxyHeader, bytes]:
        """The client's PROXY header and whatever bytes came after it.

        Raises:
            ProxyProtocolError: missing or malformed. Timeout: it did not come.
        """
        deadline = Deadline(PROXY_HEADER_TIMEOUT)
        buffer = b""
        while True:
            found = proxyproto.parse_proxy_header(buffer)
            if found is not None:
                header, used = found
                return header, buffer[used:]
            conn.timeout = deadline.remaining()
            data = conn.recv()
            if not data:
                raise proxyproto.ProxyProtocolError("connection closed before a PROXY header")
            buffer += data

    def _open_target(self, conn: Connection | None) -> Side:
        target = self.target
        if isinstance(target, Stdio):
            return Side.of_stdio()
        if isinstance(target, Program):
            try:
                proc = subprocess.Popen(target.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except OSError as exc:
                raise NetworkError(f"exec: cannot run {target.argv[0]}: {exc.strerror}") from None
            return Side.of_program(proc, str(target))
        tls = self.tls_client if target.is_tls else None
        upstream = connect(target, timeout=self.connect_timeout, tls=tls)
        if self.proxy_protocol is not None and conn is not None:
            encode = proxyproto.encode_v1 if self.proxy_protocol == "v1" else proxyproto.encode_v2
            upstream.send(encode(conn.peer, conn.local))
        sock, _ = upstream.detach()
        return Side.of_socket(sock, str(target))

    def _observe(self, data: bytes, marker: str) -> None:
        if self._dumper is not None and callable(self._dump_write):
            with self._dump_lock:
                self._dump_write(self._dumper.dump(data, marker))

    def _run_pair(self, client: Side, upstream: Side, name: str) -> None:
        observe = self._observe if self._dumper is not None else None
        pair = Pair(client, upstream, zero_copy=self.zero_copy, observe=observe)
        with self._lock:
            self.pairs.add(pair)
        try:
            pair.run()
        finally:
            with self._lock:
                self.pairs.discard(pair)
            duration = time.monotonic() - pair.started
            if pair.error is not None:
                log.warning("%s: %s", name, pair.error)
            log.info(
                "pair %s <-> %s ended after %.3fs: %d bytes up, %d bytes down",
                name,
                self.target,
                duration,
                pair.bytes_up,
                pair.bytes_down,
                extra={
                    "event": "pair",
                    "peer": name,
                    "duration": round(duration, 6),
                    "bytes_in": pair.bytes_up,
                    "bytes_out": pair.bytes_down,
                },
            )
            if self.once:
                self.stopper.stop()

    def _watch_idle(self) -> None:
        assert self.idle_timeout is not None
        idle = self.idle_timeout
        while not self.stopper.stopping:
            time.sleep(min(idle / 4, 1.0))
            now = time.monotonic()
            with self._lock:
                stale = [p for p in self.pairs if now - p.last_activity >= idle]
            for pair in stale:
                log.info("pair idle for %gs: closing", idle)
                pair.abort()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        with self._lock:
            pairs = list(self.pairs)
        for pair in pairs:
            pair.abort()
        self.stopper.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
