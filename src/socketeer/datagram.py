"""Datagram endpoints: UDP and Unix datagram sockets (SPEC §2).

The tutorial's pitfall is built in away: a Unix datagram client that never
binds has no address, so the server cannot reply. ``open_datagram`` gives such
a client an address of its own (an autobound abstract name on Linux, a
temporary file elsewhere, removed on close).
"""

from __future__ import annotations

import socket
import sys

from ._deadline import Deadline
from ._resource import SocketResource, discard
from ._sockio import (
    SocketFile,
    address_of,
    autobind_unix,
    bound_socket,
    local_address,
    peer_address,
    resolve,
    translate_errors,
)
from ._sockopts import SocketOptions
from ._sockopts import apply as apply_options
from ._static import final
from .address import Address
from .errors import FrameTooLarge, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._sockopts import Membership

__all__ = ["MAX_DATAGRAM", "DatagramEndpoint", "open_datagram"]

# The largest datagram received whole: UDP's own limit is 65,507 bytes of
# payload; Unix datagrams may be larger, up to the socket buffer.
MAX_DATAGRAM = 256 * 1024
_TRUNC = getattr(socket, "MSG_TRUNC", 0) if sys.platform.startswith("linux") else 0


def open_datagram(
    address: str | Address | None = None,
    *,
    bind: str | Address | None = None,
    timeout: float | None = None,
    bind_device: str | None = None,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    ttl: int | None = None,
    hop_limit: int | None = None,
    ipv6_only: bool | None = None,
    broadcast: bool = False,
    join: Iterable[str | Membership] | str | Membership = (),
    multicast_ttl: int | None = None,
    multicast_loop: bool | None = None,
) -> DatagramEndpoint:
    """A datagram socket: a client of ``address``, a server on ``bind``, or both.

    With ``address`` the socket is connected, so sends need no destination and
    an ICMP "port unreachable" surfaces as ``ConnectError`` on the next call.

    Socket options are set before the bind or connect: those of ``listen``,
    plus ``broadcast`` (SO_BROADCAST, to send to a broadcast address),
    ``join`` (multicast groups ``"GROUP[@IFACE]"`` to receive, joined after
    ``bind``), ``multicast_ttl`` (how many routers a sent group datagram
    crosses; the system's default is 1) and ``multicast_loop`` (whether this
    host's own group members see it).

    Raises:
        AddressError, UsageError: a malformed or non-datagram address, neither
            given, an option that does not fit (``join`` without ``bind``).
        AddressInUse: ``bind`` is taken.
        ConnectError: ``address`` does not resolve.
        NetworkError: the system refused an option (permission, no such interface).
    """
    remote = Address.parse(address) if address is not None else None
    local = Address.parse(bind) if bind is not None else None
    if remote is None and local is None:
        raise UsageError("open_datagram needs an address to talk to, one to bind, or both")
    for given in (remote, local):
        if given is not None and not given.is_datagram:
            raise UsageError(f"a datagram socket needs udp:// or unix-dgram:, not {given}")
    options = SocketOptions.of(
        bind_device=bind_device,
        rcvbuf=rcvbuf,
        sndbuf=sndbuf,
        ttl=ttl,
        hop_limit=hop_limit,
        ipv6_only=ipv6_only,
        broadcast=broadcast,
        join=join,
        multicast_ttl=multicast_ttl,
        multicast_loop=multicast_loop,
    )
    if options.join and local is None:
        raise UsageError("join needs a bound socket: give bind= (the group's port)")
    target = resolve(remote, passive=False)[0] if remote is not None else None
    socket_file: SocketFile | None = None
    if local is not None:
        sock, socket_file = bound_socket(local, options=options)
    else:
        assert target is not None
        sock = socket.socket(target.family, target.type, target.proto)
        try:
            apply_options(sock, options)
        except BaseException:
            sock.close()
            raise
    try:
        like = remote or local
        assert like is not None
        if remote is not None and target is not None:
            with translate_errors("connect", remote):
                if local is None and remote.is_unix:
                    socket_file = autobind_unix(sock)
                sock.connect(target.sockaddr)
        return DatagramEndpoint(sock, timeout=timeout, like=like, socket_file=socket_file)
    except BaseException:
        discard(sock, socket_file)
        raise


@final
class DatagramEndpoint(SocketResource):
    """One datagram socket; every ``send`` is one datagram, every ``recv`` one back."""

    _kind = "datagram endpoint"

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = None,
        like: Address | None = None,
        socket_file: SocketFile | None = None,
    ) -> None:
        self._sock = sock
        self._like = like or Address("udp", port=0)
        self._socket_file = socket_file
        self._closed = False
        self._buffer: bytearray | None = None  # made by the first recv: senders need none
        self.timeout = timeout
        self.local = local_address(sock, self._like)
        self.peer = peer_address(sock, self._like)

    @classmethod
    def from_socket(cls, sock: socket.socket, *, timeout: float | None = None) -> DatagramEndpoint:
        return cls(sock, timeout=timeout)

    @property
    def like(self) -> Address:
        """The address kind (scheme) this endpoint reports its peers in."""
        return self._like

    def __repr__(self) -> str:
        return f"<DatagramEndpoint {'closed' if self._closed else self.local}>"

    def send(self, data: bytes | bytearray | memoryview, to: str | Address | None = None) -> None:
        """Send one datagram, to ``to`` or else to the connected peer.

        Raises:
            FrameTooLarge: larger than the socket allows (UDP: 65,507 bytes).
            ConnectError: the peer's port is closed (reported by an earlier ICMP).
        """
        self._check_open()
        dest = Address.parse(to) if to is not None else self.peer
        if dest is None:
            raise UsageError("send needs a destination: this endpoint is not connected")
        deadline = Deadline(self.timeout)
        with translate_errors("send", dest, self.timeout):
            self._sock.settimeout(deadline.remaining())
            if to is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, resolve(dest, passive=False)[0].sockaddr)

    def recv(self, timeout: float | None = None) -> tuple[bytes, Address | None]:
        """The next datagram and its sender (None: an unnamed Unix socket).

        ``timeout`` overrides the endpoint's timeout for this call.

        Raises:
            Timeout: nothing arrived in time.
            FrameTooLarge: the datagram was larger than ``MAX_DATAGRAM`` (it is dropped).
        """
        self._check_open()
        limit = self.timeout if timeout is None else timeout
        deadline = Deadline(limit)
        where = self.peer or self.local
        with translate_errors("recv", where, limit):
            # timeout=0 polls: take a waiting datagram or fail at once.
            self._sock.settimeout(0.0 if limit == 0 else deadline.remaining())
            if self._buffer is None:
                self._buffer = bytearray(MAX_DATAGRAM)
            size, sender = self._sock.recvfrom_into(self._buffer, MAX_DATAGRAM, _TRUNC)
        if size > MAX_DATAGRAM:
            raise FrameTooLarge(f"datagram of {size} bytes is larger than {MAX_DATAGRAM}")
        data = bytes(memoryview(self._buffer)[:size])
        return data, address_of(sender, self._like) if sender else None
