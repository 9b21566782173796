"""The one boundary between socketeer and the operating system's sockets.

Everything that resolves names, creates, binds or connects sockets, and turns
``OSError`` into socketeer's errors lives here, so the blocking and asyncio
layers share it and no raw ``OSError`` leaks past it (STYLE R6).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import os
import socket
import stat
import struct
import sys

from ._deadline import Deadline
from .address import Address
from .errors import (
    AddressError,
    AddressInUse,
    ConnectError,
    ConnectionReset,
    FrameTooLarge,
    NetworkError,
    SocketeerError,
    Timeout,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal, NamedTuple

    from ._sockopts import SocketOptions

HAS_ABSTRACT = sys.platform.startswith("linux")

_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENOENT: "no such socket",
    errno.ENOTSOCK: "not a socket",
    # The listener closed while our connection waited in its backlog.
    errno.ECONNRESET: "connection reset while connecting",
}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN}


def error_for(exc: OSError, op: str, where: str, timeout: float | None) -> SocketeerError:
    """The socketeer error for an ``OSError`` that ``op`` on ``where`` raised."""
    code = exc.errno
    if type(exc).__module__ == "ssl":  # an ssl.SSLError: name the TLS cause
        from .tls import tls_error

        return tls_error(exc, where)
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"host not found: {where} ({exc.strerror})")
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        after = f" after {timeout:g}s" if timeout is not None else ""
        return Timeout(f"{op} timed out{after}: {where}")
    error: SocketeerError
    if code == errno.EADDRINUSE:
        error = AddressInUse(f"address in use: {where}")
    elif code == errno.EMSGSIZE:
        error = FrameTooLarge(f"datagram too large for {where}")
    elif op == "connect" and code in _CONNECT_ERRNOS:
        error = ConnectError(f"{_CONNECT_ERRNOS[code]}: {where}")
    elif code == errno.ECONNREFUSED:  # a UDP peer's ICMP "port unreachable"
        error = ConnectError(f"connection refused: {where}")
    elif code in _RESET_ERRNOS:
        error = ConnectionReset(f"connection reset by peer: {where}")
    elif code == errno.EADDRNOTAVAIL:
        error = NetworkError(f"address not available: {where}")
    elif code in (errno.EACCES, errno.EPERM):
        error = NetworkError(f"permission denied: {where}")
    else:
        reason = exc.strerror or str(exc)
        error = NetworkError(f"{op} failed: {where}: {reason.lower()}")
    if isinstance(error, OSError):
        error.errno = code
    return error


class translate_errors:  # lower case: used like contextlib.suppress
    """Re-raise any ``OSError`` from the block as the matching socketeer error.

    The original is chained as ``__cause__`` so ``--debug`` shows it. A class
    rather than ``@contextmanager``: it wraps every send and recv, and a
    generator per call shows there.
    """

    __slots__ = ("op", "timeout", "where")

    def __init__(self, op: str, where: Address | str | None, timeout: float | None = None) -> None:
        self.op = op
        self.where = where
        self.timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, Timeout):
            # A Deadline ran out between system calls: add what and where.
            if self.timeout is None:
                return False
            raise error_for(TimeoutError(), self.op, str(self.where), self.timeout) from exc
        if isinstance(exc, SocketeerError) or not isinstance(exc, OSError):
            return False
        where = str(self.where) if self.where is not None else "socket"
        raise error_for(exc, self.op, where, self.timeout) from exc


# -- socket addresses ---------------------------------------------------------


if TYPE_CHECKING:

    class Target(NamedTuple):
        """One concrete socket address to try (a getaddrinfo row)."""

        family: int
        type: int
        proto: int
        sockaddr: Any

else:  # the same tuple, without importing typing for it
    Target = collections.namedtuple("Target", "family type proto sockaddr")


def socket_type(address: Address) -> int:
    return socket.SOCK_DGRAM if address.is_datagram else socket.SOCK_STREAM


def unix_sockaddr(address: Address) -> str | bytes:
    if address.abstract:
        if not HAS_ABSTRACT:
            raise AddressError(f"abstract Unix sockets are Linux-only: {address}")
        return b"\0" + os.fsencode(address.path)
    return address.path


def inet_family(address: Address) -> int:
    """AF_INET or AF_INET6 when the scheme or literal forces one, else AF_UNSPEC."""
    return {4: socket.AF_INET, 6: socket.AF_INET6}.get(address.ip_version or 0, socket.AF_UNSPEC)


def resolve(address: Address, *, passive: bool) -> list[Target]:
    """The socket addresses to try for ``address``, in order.

    Raises:
        ConnectError: the host name does not resolve.
    """
    kind = socket_type(address)
    if address.is_unix:
        return [Target(socket.AF_UNIX, kind, 0, unix_sockaddr(address))]
    if not address.is_inet:
        raise AddressError(f"cannot resolve {address}: not an Internet or Unix address")
    family = inet_family(address)
    if address.host == "" and passive:
        # "All interfaces": one dual-stack socket where IPv6 exists (v6only off in bind).
        if family in (socket.AF_INET6, socket.AF_UNSPEC) and socket.has_ipv6:
            return [Target(socket.AF_INET6, kind, 0, ("::", address.port, 0, 0))]
        return [Target(socket.AF_INET, kind, 0, ("0.0.0.0", address.port))]
    flags = socket.AI_PASSIVE if passive else 0
    with translate_errors("resolve", address):
        rows = socket.getaddrinfo(address.host or None, address.port, family, kind, 0, flags)
    return [Target(f, t, p, sa) for f, t, p, _name, sa in rows]


def address_of(sockaddr: Any, like: Address) -> Address | None:
    """The ``Address`` for a sockaddr the kernel returned (None for an unnamed Unix socket).

    ``like`` supplies the scheme; an IPv4-mapped IPv6 peer of a dual-stack
    listener is shown as the IPv4 address it is. The family is read off the
    sockaddr's shape (a str/bytes path, a 2-tuple or a 4-tuple), which is
    cheaper than ``sock.family`` (an enum member built per call) on paths that
    run per client or per datagram.
    """
    if isinstance(sockaddr, tuple):
        family = socket.AF_INET if len(sockaddr) == 2 else socket.AF_INET6
    else:
        family = socket.AF_UNIX
    if family == socket.AF_UNIX:
        scheme = like.scheme if like.is_unix else "unix"
        if isinstance(sockaddr, bytes):
            if sockaddr.startswith(b"\0") and len(sockaddr) > 1:
                # uvloop hands back all of sun_path, NUL padding included.
                name = sockaddr[1:].rstrip(b"\0")
                return Address(scheme, path=os.fsdecode(name), abstract=True)
            sockaddr = os.fsdecode(sockaddr.rstrip(b"\0"))
        if not sockaddr:
            return None
        return Address(scheme, path=sockaddr)
    if family == socket.AF_INET and like.scheme in ("tcp", "tcp4", "tls", "udp", "udp4"):
        # The common case, once per accepted client: the kernel's dotted quad
        # is canonical already, so skip ipaddress.
        return Address(like.scheme, host=sockaddr[0], port=sockaddr[1])
    if family in (socket.AF_INET, socket.AF_INET6):
        host, port = sockaddr[0], sockaddr[1]
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            host, ip = str(ip.ipv4_mapped), ip.ipv4_mapped
        elif isinstance(ip, ipaddress.IPv6Address):
            host = str(ipaddress.IPv6Address(host))
        scheme = like.scheme if like.is_inet else "tcp"
        if scheme[-1] in "46" and int(scheme[-1]) != ip.version:
            scheme = scheme[:-1]
        return Address(scheme, host=host, port=port)
    return None


def scheme_for(sock: socket.socket) -> Address:
    """A template address naming the kind of an existing socket (for ``from_socket``)."""
    if sock.family == socket.AF_UNIX:
        return Address("unix-dgram" if sock.type == socket.SOCK_DGRAM else "unix", path="x")
    scheme = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    return Address(scheme, host="", port=0)


def local_address(sock: socket.socket, like: Address) -> Address | None:
    with translate_errors("getsockname", like):
        name = sock.getsockname()
    return address_of(name, like)


def peer_address(sock: socket.socket, like: Address) -> Address | None:
    try:
        peer = sock.getpeername()
    except OSError:
        return None  # not connected (a datagram socket, or the peer is gone)
    return address_of(peer, like)


# -- creating sockets -----------------------------------------------------------


def set_nodelay(sock: socket.socket) -> None:
    """Small writes go out at once: socketeer is interactive as often as it is bulk."""
    # Not sock.family / sock.type: those properties build enum members, which
    # shows once per accepted client.
    with contextlib.suppress(OSError):  # a Unix socket: no Nagle to turn off
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connected_socket(
    address: Address,
    deadline: Deadline,
    *,
    prepare: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """A socket connected to ``address``: each resolved address in turn, first that answers.

    ``prepare`` is called on every new socket before it connects (bind a source
    address, set socket options); a ``SocketeerError`` from it fails that
    attempt like a refused connect.

    Raises:
        ConnectError, Timeout, AddressError: as the failure was.
    """
    with translate_errors("connect", address, deadline.seconds):
        targets = resolve(address, passive=False)
    if len(targets) > 1:
        return _raced_socket(address, targets, deadline, prepare)
    last: SocketeerError | None = None
    for target in targets:
        with translate_errors("connect", address, deadline.seconds):  # EMFILE, say
            sock = socket.socket(target.family, target.type, target.proto)
        try:
            with translate_errors("connect", address, deadline.seconds):
                if prepare is not None:
                    prepare(sock)
                if target.family == socket.AF_UNIX:
                    connect_unix(sock, target.sockaddr, deadline.remaining())
                else:
                    sock.settimeout(deadline.remaining())
                    sock.connect(target.sockaddr)
                    sock.settimeout(None)
        except (ConnectError, Timeout) as exc:
            sock.close()
            last = exc
            if isinstance(exc, Timeout):
                break  # the budget is spent: no time left for the next address
            continue
        except BaseException:
            sock.close()
            raise
        set_nodelay(sock)
        return sock
    assert last is not None, "getaddrinfo returns at least one row or fails"
    raise last


def _raced_socket(
    address: Address,
    targets: list[Target],
    deadline: Deadline,
    prepare: Callable[[socket.socket], None] | None,
) -> socket.socket:
    """``connected_socket`` for a name with several addresses: Happy Eyeballs."""
    from ._eyeballs import attempt_order, race

    where = str(address)

    def start(target: Target) -> socket.socket:
        with translate_errors("connect", address, deadline.seconds):  # EMFILE, say
            sock = socket.socket(target.family, target.type, target.proto)
        try:
            with translate_errors("connect", address, deadline.seconds):
                if prepare is not None:
                    prepare(sock)
                sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def failed(exc: OSError) -> SocketeerError:
        return error_for(exc, "connect", where, deadline.seconds)

    with translate_errors("connect", address, deadline.seconds):  # the deadline's Timeout
        sock = race(attempt_order(targets), deadline, start=start, failed=failed)
    set_nodelay(sock)
    return sock


def source_binder(source: Address) -> Callable[[socket.socket], None]:
    """A ``prepare`` for ``connected_socket`` that binds each attempt to ``source``.

    Each attempt binds to the source's address of its own family (a name may
    have both), or the family's wildcard when only a port is given; a source
    with no address of that family fails that attempt as a ``ConnectError``,
    so the next address of the target is tried.
    """

    def bind(sock: socket.socket) -> None:
        family = sock.family
        with translate_errors("bind", source):
            if source.host == "":
                wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
                sock.bind((wildcard, source.port))
                return
            rows = [t for t in resolve(source, passive=True) if t.family == family]
            if not rows:
                version = 6 if family == socket.AF_INET6 else 4
                raise ConnectError(f"source {source} has no IPv{version} address")
            sock.bind(rows[0].sockaddr)

    return bind


def connect_unix(sock: socket.socket, path: str | bytes, timeout: float | None) -> None:
    """A blocking Unix connect that waits for room in a busy server's backlog.

    Python implements ``settimeout`` with a non-blocking socket and ``poll``,
    but a non-blocking Unix connect fails at once with EAGAIN when the backlog
    is full (unlike TCP, it never goes "in progress"). So the socket stays
    blocking and the kernel's own send timeout bounds the wait.
    """
    sock.settimeout(None)
    if timeout is not None:
        seconds = int(timeout)
        micro = int((timeout - seconds) * 1_000_000) or (0 if seconds else 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micro))
    try:
        sock.connect(path)
    finally:
        if timeout is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))


class SocketFile:
    """A Unix socket file this process bound, removed again on close.

    Only the process that bound it removes it (a forked child that closes its
    copy of the listener must not), and only if the file is still the one it
    bound (a newer server may have replaced it).
    """

    __slots__ = ("_identity", "_pid", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid = os.getpid()
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        if os.getpid() != self._pid:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)


def _clear_stale_socket_file(address: Address, kind: int) -> None:
    """Remove a socket file that no server answers on; refuse if one does.

    Raises:
        AddressInUse: a live server listens there, or the path is not a socket.
    """
    try:
        st = os.stat(address.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise error_for(exc, "bind", str(address), None) from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressInUse(f"address in use: {address} (exists and is not a socket)")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(address.path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)  # stale: its server died without cleaning up
        return
    except OSError as exc:  # e.g. EPROTOTYPE: a socket of the other kind lives there
        if exc.errno == errno.EPROTOTYPE:
            raise AddressInUse(f"address in use: {address} (a socket of another kind)") from exc
        raise error_for(exc, "bind", str(address), None) from exc
    finally:
        probe.close()
    raise AddressInUse(f"address in use: {address} (a server is listening there)")


def bound_socket(
    address: Address,
    *,
    reuse_port: bool = False,
    unix_mode: int | None = None,
    options: SocketOptions | None = None,
) -> tuple[socket.socket, SocketFile | None]:
    """A socket bound to ``address`` (not yet listening), and its socket file if any.

    ``options`` are set before the bind (an accepted socket inherits them from
    its listener) and its multicast groups joined after it.

    Raises:
        AddressInUse, NetworkError, AddressError: as the failure was.
        UsageError: an option that does not fit the socket.
    """
    kind = socket_type(address)
    targets = resolve(address, passive=True)
    target = targets[0]
    if address.is_unix and not address.abstract:
        _clear_stale_socket_file(address, kind)
    sock = socket.socket(target.family, target.type, target.proto)
    try:
        with translate_errors("bind", address):
            if target.family in (socket.AF_INET, socket.AF_INET6):
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    if not hasattr(socket, "SO_REUSEPORT"):
                        raise NetworkError("SO_REUSEPORT is not available on this platform")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if target.family == socket.AF_INET6 and address.ip_version is None:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if options is not None:
                from ._sockopts import apply

                apply(sock, options)  # may turn IPV6_V6ONLY back on
            sock.bind(target.sockaddr)
            if options is not None and options.join:
                from ._sockopts import join_groups

                join_groups(sock, options)
            socket_file = None
            if address.is_unix and not address.abstract:
                socket_file = SocketFile(address.path)
                if unix_mode is not None:
                    os.chmod(address.path, unix_mode)
    except BaseException:
        sock.close()
        raise
    return sock, socket_file


def autobind_unix(sock: socket.socket) -> SocketFile | None:
    """Give a Unix datagram client an address of its own so servers can reply.

    Linux autobinds to a fresh abstract name; elsewhere a temporary path is
    bound, and the returned ``SocketFile`` removes it (and its folder) on close.
    """
    if HAS_ABSTRACT:
        sock.bind("")  # an empty sun_path asks the kernel to autobind
        return None
    import tempfile  # off Linux only: no abstract names there

    folder = tempfile.mkdtemp(prefix="socketeer-")
    path = os.path.join(folder, "client.sock")
    sock.bind(path)
    return _TempSocketFile(path)


class _TempSocketFile(SocketFile):
    __slots__ = ()

    def remove(self) -> None:
        super().remove()
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))
