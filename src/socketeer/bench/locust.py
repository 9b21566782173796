"""A Locust user that loads any socketeer address: load from many machines (SPEC §7).

When one client machine cannot load a server, Locust spreads users over many:
``locust --master`` on one machine, ``locust --worker --master-host=HOST`` on
the others. ``SocketeerUser`` runs bench's rr and connect modes with the
blocking socketeer library (which Locust's gevent makes cooperative) and
reports every request to Locust's statistics::

    from socketeer.bench.locust import SocketeerUser

    class Echo(SocketeerUser):
        address = "tcp://server.example:7007"
        mode = "rr"  # or "connect"
        size = 64

Each user keeps one connection for rr (reconnecting after a failure) and
opens a fresh one per request for connect (connect, TLS handshake on
``tls://``, one round trip, close). Over ``udp://`` and ``unix-dgram:`` a user
keeps one datagram socket and a reply must come within ``timeout``; connect
mode needs a stream address. Each request is reported as ``request_type``
``"socketeer"`` named ``"<mode> <address>"``, its time in milliseconds; a reply
that differs from what was sent is a failure.

Locust is an optional extra: ``pip install 'socketeer[locust]'``.
"""

from __future__ import annotations

import time

from ..errors import UsageError

try:
    # An optional extra: where it is absent, type checking sees Any.
    from locust import User, task  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:
    raise UsageError(
        "socketeer.bench.locust needs Locust: pip install 'socketeer[locust]'"
    ) from exc

from .. import connection as _connection
from .. import datagram as _datagram
from ..address import Address
from ..errors import SocketeerError

__all__ = ["MODES", "Mismatch", "SocketeerUser"]

MODES = ("rr", "connect")


class Mismatch(SocketeerError):
    """The server answered with other bytes than those sent."""


class SocketeerUser(User):  # type: ignore[misc,unused-ignore]
    """Round trips (``mode = "rr"``) or whole connections (``"connect"``) to ``address``.

    Subclass it and set ``address`` (any address of SPEC §1 with an echo
    server behind it); ``size`` bytes go each way per request, ``timeout``
    seconds bound every connect and read, ``tls`` (a ``TLSConfig`` or an
    ``ssl.SSLContext``) is passed to ``socketeer.connect``.
    """

    abstract = True
    address: str = ""
    mode: str = "rr"
    size: int = 64
    timeout: float = 10.0
    tls: object | None = None

    def __init__(self, environment: object) -> None:
        super().__init__(environment)
        if not self.address:
            raise UsageError(f"{type(self).__name__} needs an address to load")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.size < 1:
            raise UsageError("size must be at least 1 byte")
        self._target = Address.parse(self.address)
        if self._target.is_datagram and self.mode != "rr":
            raise UsageError(f"mode {self.mode} needs a stream address, not {self._target}")
        self._name = f"{self.mode} {self._target}"
        seed = f"socketeer locust {id(self)} ".encode()
        self._payload = (seed * (self.size // len(seed) + 1))[: self.size]
        self._stream: _connection.Connection | None = None
        self._datagram: _datagram.DatagramEndpoint | None = None

    @task  # type: ignore[untyped-decorator,unused-ignore]
    def request(self) -> None:
        """One request, timed and reported to Locust."""
        started = time.perf_counter()
        exception: BaseException | None = None
        length = 0
        try:
            if self.mode == "connect":
                length = self._connect_once()
            elif self._target.is_datagram:
                length = self._datagram_round_trip()
            else:
                length = self._stream_round_trip()
        except (SocketeerError, OSError) as exc:
            exception = exc
            self._drop()
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.environment.events.request.fire(
            request_type="socketeer",
            name=self._name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )

    def on_stop(self) -> None:
        self._drop()

    # -- the modes --------------------------------------------------------------------------

    def _round_trip(self, conn: _connection.Connection) -> int:
        conn.send(self._payload)
        reply = conn.recv_exactly(self.size)
        if reply != self._payload:
            raise Mismatch(f"the echo differs from what was sent: {self._target}")
        return len(reply)

    def _stream_round_trip(self) -> int:
        if self._stream is None:
            self._stream = _connection.connect(self._target, timeout=self.timeout, tls=self.tls)
        return self._round_trip(self._stream)

    def _connect_once(self) -> int:
        with _connection.connect(self._target, timeout=self.timeout, tls=self.tls) as conn:
            return self._round_trip(conn)

    def _datagram_round_trip(self) -> int:
        if self._datagram is None:
            self._datagram = _datagram.open_datagram(self._target, timeout=self.timeout)
        self._datagram.send(self._payload)
        reply, _ = self._datagram.recv()
        if reply != self._payload:
            raise Mismatch(f"the reply differs from what was sent: {self._target}")
        return len(reply)

    def _drop(self) -> None:
        """Close the kept socket (after a failure, the next request starts afresh)."""
        for kept in (self._stream, self._datagram):
            if kept is not None:
                kept.close()
        self._stream = None
        self._datagram = None
