"""Running a proxy handshake on a real socket: the blocking and asyncio drivers.

The protocols live in ``socks`` and ``http`` (pure); this module only resolves
the target where the scheme says it is resolved here, moves bytes, keeps the
deadline and names the failure. Each driver reads at most what the handshake
``wanted()``, so the first bytes the target sends stay in the socket.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time

from .._deadline import Deadline
from .._sockio import inet_family, translate_errors
from ..address import Address
from ..errors import ProxyError, SocketeerError, Timeout, UsageError
from .http import HttpConnectHandshake
from .socks import Socks4Handshake, Socks5Handshake
from .url import ProxyURL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .socks import _Handshake

    Handshake = _Handshake | HttpConnectHandshake

__all__ = ["handshake_for", "tunnel", "tunnel_async"]


def _check_target(proxy: ProxyURL, target: Address) -> None:
    if not target.is_inet or target.is_datagram:
        raise UsageError(f"a proxy reaches TCP targets only, not {target}")
    if not target.host or not target.port:
        raise UsageError(f"a target through proxy {proxy} needs a host and a port, not {target}")


def _local_family(proxy: ProxyURL, target: Address) -> int | None:
    """The address family to resolve the target in here, or None when the proxy resolves it."""
    if proxy.resolves_remotely:
        return None
    if proxy.scheme == "socks4":
        if target.ip_version == 6:
            raise UsageError(
                f"SOCKS4 carries IPv4 addresses only, not {target} (use socks5:// or socks4a://)"
            )
        return socket.AF_INET
    return inet_family(target)


def handshake_for(proxy: ProxyURL, target: Address, host: str | None = None) -> Handshake:
    """The sans-IO handshake asking ``proxy`` for ``target``.

    ``host`` is the target's address as resolved here (socks4, socks5);
    by default the target's own host, a name the proxy resolves.
    """
    where = host if host is not None else target.host
    label, to = str(proxy), str(target)
    if proxy.scheme in ("socks4", "socks4a"):
        return Socks4Handshake(
            where, target.port, user_id=proxy.username or "", proxy=label, target=to
        )
    credentials = {"username": proxy.username, "password": proxy.password}
    if proxy.scheme in ("socks5", "socks5h"):
        return Socks5Handshake(where, target.port, **credentials, proxy=label, target=to)
    return HttpConnectHandshake(where, target.port, **credentials, proxy=label, target=to)


def _timed_out(proxy: ProxyURL, target: Address, deadline: Deadline) -> Timeout:
    return Timeout(f"proxy handshake timed out after {deadline.seconds:g}s: {proxy} (for {target})")


def _broken(proxy: ProxyURL, target: Address, exc: OSError) -> ProxyError:
    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        what = "reset the connection"
    else:
        what = f"failed: {(exc.strerror or str(exc)).lower()}"
    return ProxyError(f"proxy {proxy} {what} during the handshake for {target}")


# -- blocking ------------------------------------------------------------------------


def _resolve_here(proxy: ProxyURL, target: Address) -> str | None:
    family = _local_family(proxy, target)
    if family is None or target.is_ip_literal:
        return None
    with translate_errors("resolve", target):
        rows = socket.getaddrinfo(target.host, target.port, family, socket.SOCK_STREAM)
    return str(rows[0][4][0])


def tunnel(sock: socket.socket, proxy: ProxyURL, target: Address, deadline: Deadline) -> None:
    """Ask the proxy on ``sock`` (blocking, connected to it) for a stream to ``target``.

    Never reads past the proxy's reply: what the target sends first stays in ``sock``.

    Raises:
        ProxyRefused, ProxyAuthError, ProxyTargetUnreachable: the proxy said no.
        ProxyError: the proxy broke the protocol or the connection.
        ConnectError: the target's name does not resolve here (socks4, socks5).
        Timeout: ``deadline`` passed.
    """
    _check_target(proxy, target)
    host = _resolve_here(proxy, target)
    hs = handshake_for(proxy, target, host)
    before = sock.gettimeout()
    try:
        while True:
            out = hs.data_to_send()
            if out:
                sock.settimeout(deadline.remaining())
                sock.sendall(out)
            wanted = hs.wanted()
            if wanted == 0:
                return
            sock.settimeout(deadline.remaining())
            hs.receive_data(sock.recv(wanted))
    except (TimeoutError, Timeout):
        raise _timed_out(proxy, target, deadline) from None
    except OSError as exc:
        if isinstance(exc, SocketeerError):
            raise
        raise _broken(proxy, target, exc) from exc
    finally:
        with contextlib.suppress(OSError):  # closed meanwhile: the error raised says why
            sock.settimeout(before)


# -- asyncio ---------------------------------------------------------------------------


async def _resolve_async(proxy: ProxyURL, target: Address) -> str | None:
    import asyncio

    family = _local_family(proxy, target)
    if family is None or target.is_ip_literal:
        return None
    loop = asyncio.get_running_loop()
    with translate_errors("resolve", target):
        rows = await loop.getaddrinfo(
            target.host, target.port, family=family, type=socket.SOCK_STREAM
        )
    return str(rows[0][4][0])


async def tunnel_async(
    sock: socket.socket, proxy: ProxyURL, target: Address, deadline: Deadline
) -> None:
    """``tunnel`` on a non-blocking socket, waiting on the running loop.

    Raises:
        As ``tunnel``.
    """
    from ..aio._ready import fd_ready

    _check_target(proxy, target)
    host = await _resolve_async(proxy, target)
    hs = handshake_for(proxy, target, host)
    fd = sock.fileno()
    try:
        left = deadline.remaining()
        at = None if left is None else time.monotonic() + left
        while True:
            view = memoryview(hs.data_to_send())
            while view:
                try:
                    view = view[sock.send(view) :]
                except (BlockingIOError, InterruptedError):
                    await fd_ready(fd, write=True, deadline=at)
            wanted = hs.wanted()
            if wanted == 0:
                return
            try:
                data = sock.recv(wanted)
            except (BlockingIOError, InterruptedError):
                await fd_ready(fd, deadline=at)
                continue
            hs.receive_data(data)
    except (TimeoutError, Timeout):
        raise _timed_out(proxy, target, deadline) from None
    except OSError as exc:
        if isinstance(exc, SocketeerError):
            raise
        raise _broken(proxy, target, exc) from exc
