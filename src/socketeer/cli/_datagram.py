"""The datagram side of ``connect`` and ``listen`` (udp, unix-dgram).

A line of stdin, newline included, is one datagram; every datagram received
is written to stdout as it is. A client waits for replies after stdin ends
until ``--idle-timeout`` (default 1 s) passes without one, then exits 0: for
datagrams that wait ending is the normal way to finish (SPEC §5).
"""

from __future__ import annotations

import selectors
import time

from .._buffer import ReceiveBuffer
from ..address import Address
from ..datagram import MAX_DATAGRAM, DatagramEndpoint, open_datagram
from ..errors import FrameTooLarge
from ..hexdump import HexDumper
from ._report import Reporter
from ._stdio import read_stdin, to_crlf, write_stdout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..access import AccessList

DEFAULT_REPLY_WAIT = 1.0


class _LineSplitter:
    """stdin bytes to datagram payloads, one per line."""

    def __init__(self, crlf: bool) -> None:
        self._buffer = ReceiveBuffer()
        self._crlf = crlf
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._crlf:
            data, self._after_cr = to_crlf(data, self._after_cr)
        self._buffer.feed(data)
        lines = []
        try:
            while (line := self._buffer.take_until(b"\n", MAX_DATAGRAM)) is not None:
                lines.append(line)
        except FrameTooLarge:
            raise FrameTooLarge(
                f"line too long: more than {MAX_DATAGRAM} bytes do not fit in one datagram"
            ) from None
        return lines

    def rest(self) -> list[bytes]:
        """The last line, if stdin ended without a newline."""
        tail = self._buffer.take_all()
        return [tail] if tail else []


def _receive(
    endpoint: DatagramEndpoint, report: Reporter, access: AccessList | None = None
) -> Address | None:
    """One datagram to stdout; one from a denied sender is dropped (None returned)."""
    data, sender = endpoint.recv()
    if access is not None and not access.permits(sender):
        report.warn(f"datagram from {sender} dropped: denied by --allow/--deny")
        return None
    report.debug(f"{len(data)} bytes from {sender or 'an unnamed socket'}")
    report.dump(data, HexDumper.RECEIVED)
    write_stdout(data)
    return sender


def _send(endpoint: DatagramEndpoint, data: bytes, to: Address | None, report: Reporter) -> None:
    report.dump(data, HexDumper.SENT)
    endpoint.send(data, to=to)


def datagram_client(
    address: Address, report: Reporter, *, idle_timeout: float | None, crlf: bool
) -> int:
    wait = idle_timeout or DEFAULT_REPLY_WAIT
    splitter = _LineSplitter(crlf)
    with open_datagram(address) as endpoint, selectors.PollSelector() as selector:
        report.info(f"sending to {endpoint.peer or address} from {endpoint.local}")
        selector.register(0, selectors.EVENT_READ, "stdin")
        selector.register(endpoint.fileno(), selectors.EVENT_READ, "socket")
        stdin_open = True
        last = time.monotonic()
        while True:
            timeout = None if stdin_open else last + wait - time.monotonic()
            if timeout is not None and timeout <= 0:
                return 0
            for key, _ in selector.select(timeout):
                if key.data == "socket":
                    _receive(endpoint, report)
                    last = time.monotonic()
                    continue
                data = read_stdin()
                lines = splitter.feed(data) if data else splitter.rest()
                for line in lines:
                    _send(endpoint, line, None, report)
                if not data:
                    stdin_open = False
                    selector.unregister(0)
                last = time.monotonic()


def datagram_server(
    address: Address,
    report: Reporter,
    *,
    idle_timeout: float | None,
    crlf: bool,
    access: AccessList | None = None,
) -> int:
    """Datagrams to stdout, stdin to the latest sender; ``access`` drops the denied."""
    splitter = _LineSplitter(crlf)
    with open_datagram(bind=address) as endpoint, selectors.PollSelector() as selector:
        report.notice(f"listening on {endpoint.local}")
        selector.register(0, selectors.EVENT_READ, "stdin")
        selector.register(endpoint.fileno(), selectors.EVENT_READ, "socket")
        sender: Address | None = None
        idle = idle_timeout
        last = time.monotonic()
        while True:
            timeout = None if idle is None else last + idle - time.monotonic()
            if timeout is not None and timeout <= 0:
                return 0  # the datagram wait ending is normal completion
            for key, _ in selector.select(timeout):
                if key.data == "socket":
                    sender = _receive(endpoint, report, access) or sender
                    last = time.monotonic()
                    continue
                data = read_stdin()
                lines = splitter.feed(data) if data else splitter.rest()
                if not data:
                    selector.unregister(0)
                for line in lines:
                    if sender is None:
                        report.warn("no one has sent a datagram yet: line dropped")
                        continue
                    _send(endpoint, line, sender, report)
