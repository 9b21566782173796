"""Is it up yet? Check addresses without sending data, and wait until they are (SPEC §9).

What "up" means, per scheme:

- ``tcp``/``tcp4``/``tcp6``, ``unix``, ``unix:@NAME``: the connect is accepted
  (the server sees a connection that closes at once, with nothing sent);
- ``tls``: the connect is accepted, and the TLS handshake completes with the
  certificate verified (CA, name, ``pin``), so "up" means a client would get in;
- ``unix-dgram``: a socket is bound at the path (the connect is accepted);
- ``udp``: cannot be checked without sending data (an open port and a closed
  one look alike), so it is a usage error rather than a guess.

Retries back off from 50 ms, doubling to 1 s, each wait jittered down to
half its length so that many waiters started together do not knock in step.
A certificate that fails verification is not retried: waiting will not change
it.
"""

from __future__ import annotations

from .address import Address
from .errors import SocketeerError, Timeout, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeVar

    _T = TypeVar("_T")

__all__ = ["NotReady", "wait_for"]

FIRST_RETRY = 0.05
LAST_RETRY = 1.0
SHORTEST_ATTEMPT = 0.1  # the last attempt, at the deadline, still gets this long


class NotReady(Timeout):
    """Some addresses were not up in time; ``failures`` says which, and why.

    ``failures`` maps each address that was not up to the error of its last
    attempt (``ConnectError``, ``Timeout``, ``TLSError``, ...).
    """

    def __init__(self, failures: dict[Address, SocketeerError], timeout: float | None) -> None:
        within = f" after {timeout:g}s" if timeout else ""
        reasons = "; ".join(str(error) for error in failures.values())
        super().__init__(f"not ready{within}: {reasons}")
        self.failures = failures
        self.timeout = timeout


def _final(error: SocketeerError) -> bool:
    """An error that retrying cannot cure: a usage error, or a certificate that fails."""
    if isinstance(error, UsageError):
        return True
    message = str(error)
    return message.startswith(("certificate verify failed", "certificate pin mismatch"))


def _pause(round_: int, left: float | None) -> float:
    import random

    step = min(LAST_RETRY, FIRST_RETRY * 2**round_)
    pause = random.uniform(step / 2, step)
    return pause if left is None else min(pause, left)


def _attempt_timeout(connect_timeout: float | None, left: float | None) -> float | None:
    if left is None:
        return connect_timeout
    bounded = max(left, SHORTEST_ATTEMPT)
    return bounded if connect_timeout is None else min(connect_timeout, bounded)


def retrying(
    attempt: Callable[[float | None], _T],
    *,
    timeout: float | None,
    connect_timeout: float | None = None,
) -> _T:
    """``attempt(limit)`` until it succeeds or ``timeout`` passes (None: forever).

    ``limit`` is ``connect_timeout`` bounded by what is left of ``timeout``;
    ``timeout=0`` makes one attempt. Usage errors and certificate failures end
    the wait at once (``connect --wait S`` retries its own connect this way,
    so the server sees no extra connection).

    Raises:
        SocketeerError: the last attempt's error.
    """
    import time

    end = None if timeout is None else time.monotonic() + timeout
    round_ = 0
    while True:
        left = None if end is None else end - time.monotonic()
        try:
            return attempt(_attempt_timeout(connect_timeout, left if timeout else None))
        except SocketeerError as error:
            left = None if end is None else end - time.monotonic()
            if _final(error) or (left is not None and left <= 0):
                raise
        time.sleep(_pause(round_, left))
        round_ += 1


def _check(
    address: Address, timeout: float | None, tls: object | None, options: dict[str, Any]
) -> None:
    """One look at ``address``: connected (and handshaken), then closed, nothing sent."""
    if address.is_datagram:
        if address.scheme != "unix-dgram":
            raise UsageError(
                f"{address} cannot be checked without sending data: "
                "an open UDP port and a closed one look alike"
            )
        from .datagram import open_datagram

        open_datagram(address, timeout=timeout).close()
        return
    from .connection import connect

    connect(address, timeout=timeout, tls=tls, **options).close()


def wait_for(
    addresses: Iterable[str | Address] | str | Address,
    *,
    timeout: float | None,
    connect_timeout: float | None = None,
    tls: object | None = None,
    **options: Any,
) -> list[Address]:
    """Wait until every address is up (see the module for what "up" means per scheme).

    ``timeout`` is the whole wait in seconds: 0 checks each address once, None
    waits without limit. An address once up is not checked again. Each attempt
    is bounded by ``connect_timeout`` and by what is left of ``timeout``.
    ``tls`` applies to the ``tls://`` addresses (default: verified against the
    system's CAs); the other keyword arguments are ``connect``'s (``source``,
    ``proxy``, ``bind_device``, ...) for the stream checks. Returns the parsed
    addresses.

    Raises:
        AddressError, UsageError: a malformed address, or one that cannot be
            checked (``udp://``, ``fd:N``), before anything is tried.
        NotReady: some addresses were not up in time; ``.failures`` maps each
            to the error of its last attempt.
    """
    import time

    if isinstance(addresses, (str, Address)):
        addresses = [addresses]
    targets = list(dict.fromkeys(Address.parse(a) for a in addresses))
    for target in targets:
        if target.scheme in ("fd", "systemd") or (target.is_datagram and target.scheme == "udp"):
            _check(target, 0, None, {})  # raises the usage error
    end = None if timeout is None else time.monotonic() + timeout
    failures: dict[Address, SocketeerError] = {}
    pending = list(targets)
    round_ = 0
    while True:
        for target in list(pending):
            left = None if end is None else end - time.monotonic()
            limit = _attempt_timeout(connect_timeout, left if timeout else None)
            try:
                _check(target, limit, tls if target.is_tls else None, options)
            except UsageError:
                raise
            except SocketeerError as error:
                failures[target] = error
                continue
            failures.pop(target, None)
            pending.remove(target)
        left = None if end is None else end - time.monotonic()
        hopeless = all(_final(failures[t]) for t in pending)
        if not pending:
            return targets
        if hopeless or (left is not None and left <= 0):
            raise NotReady({t: failures[t] for t in pending}, timeout)
        time.sleep(_pause(round_, left))
        round_ += 1
