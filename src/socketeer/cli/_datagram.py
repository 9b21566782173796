"""The datagram side of ``connect`` and ``listen`` (udp, unix-dgram).

A line of stdin, newline included, is one datagram; every datagram received
is written to stdout as it is. A client waits for replies after stdin ends
until ``--idle-timeout`` (default 1 s) passes without one, then exits 0: for
datagrams that wait ending is the normal way to finish (SPEC §5).

The session options mean what they mean for streams: ``--send-only`` drops
what arrives (a client then exits as soon as its last datagram is sent),
``--recv-only`` never reads stdin, ``--delay S`` spaces the datagrams S
seconds apart, and ``-o``/``--output-in``/``--output-out`` capture the
payloads as they are sent and received.
"""

from __future__ import annotations

import selectors
import time

from .._buffer import ReceiveBuffer
from ..address import Address
from ..datagram import MAX_DATAGRAM, DatagramEndpoint, open_datagram
from ..errors import FrameTooLarge
from ..hexdump import HexDumper
from ._capture import Capture
from ._options import SessionOptions
from ._pacing import LinePacer
from ._report import Reporter
from ._stdio import read_stdin, to_crlf, write_stdout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


class _Traffic:
    """What one datagram command does with each payload: dump, capture, deliver, pace."""

    def __init__(
        self,
        endpoint: DatagramEndpoint,
        report: Reporter,
        session: SessionOptions,
        capture: Capture | None,
    ) -> None:
        self.endpoint = endpoint
        self.report = report
        self.session = session
        self.capture = capture if capture is not None and capture.active else None
        # Lines wait here until due; without --delay each is due at once.
        self.pacer = LinePacer(session.delay)

    def receive(self, access: AccessList | None = None) -> Address | None:
        """One datagram to stdout; one from a denied sender is dropped (None returned)."""
        data, sender = self.endpoint.recv()
        if access is not None and not access.permits(sender):
            self.report.warn(f"datagram from {sender} dropped: denied by --allow/--deny")
            return None
        self.report.debug(f"{len(data)} bytes from {sender or 'an unnamed socket'}")
        self.report.dump(data, HexDumper.RECEIVED)
        if self.capture is not None:
            self.capture.received(data)
        if self.session.receive:
            write_stdout(data)
        return sender

    def queue(self, lines: list[bytes]) -> None:
        for line in lines:
            self.pacer.feed(line)
        self.pacer.end()  # a line is a datagram, newline or not

    def send_due(self, to: Address | None, *, anyone: bool = True) -> bool:
        """Send the lines that are due; returns whether any was sent."""
        sent = False
        while (line := self.pacer.take(time.monotonic())) is not None:
            sent = True
            if not anyone:
                self.report.warn("no one has sent a datagram yet: line dropped")
                continue
            self.report.dump(line, HexDumper.SENT)
            if self.capture is not None:
                self.capture.sent(line)
            self.endpoint.send(line, to=to)
        return sent

    def pace_wait(self) -> float | None:
        return self.pacer.wait(time.monotonic())


def _watch_stdin(selector: selectors.BaseSelector, want: bool) -> None:
    """Read stdin only while no paced line waits: a slow ``--delay`` slows the reader."""
    registered = 0 in selector.get_map()
    if want and not registered:
        selector.register(0, selectors.EVENT_READ, "stdin")
    elif registered and not want:
        selector.unregister(0)


def _earliest(*waits: float | None) -> float | None:
    given = [w for w in waits if w is not None]
    return min(given) if given else None


def datagram_client(
    address: Address,
    report: Reporter,
    *,
    idle_timeout: float | None,
    crlf: bool,
    session: SessionOptions | None = None,
    capture: Capture | None = None,
    bind: Address | None = None,
    options: dict[str, Any] | None = None,
) -> int:
    """``options`` are ``open_datagram``'s socket options; ``bind`` is ``--source``."""
    session = session or SessionOptions()
    wait = idle_timeout or DEFAULT_REPLY_WAIT
    splitter = _LineSplitter(crlf)
    with (
        open_datagram(address, bind=bind, **(options or {})) as endpoint,
        selectors.PollSelector() as selector,
    ):
        traffic = _Traffic(endpoint, report, session, capture)
        report.info(f"sending to {endpoint.peer or address} from {endpoint.local}")
        stdin_open = session.send
        selector.register(endpoint.fileno(), selectors.EVENT_READ, "socket")
        last = time.monotonic()
        while True:
            if traffic.send_due(None):
                last = time.monotonic()
            lines_left = stdin_open or traffic.pacer.waiting
            if not lines_left and not session.receive:
                return 0  # --send-only: nothing to wait for once the last line is out
            _watch_stdin(selector, stdin_open and not traffic.pacer.waiting)
            reply_wait = None if lines_left else last + wait - time.monotonic()
            if reply_wait is not None and reply_wait <= 0:
                return 0
            for key, _ in selector.select(_earliest(reply_wait, traffic.pace_wait())):
                if key.data == "socket":
                    traffic.receive()
                    last = time.monotonic()
                    continue
                data = read_stdin()
                traffic.queue(splitter.feed(data) if data else splitter.rest())
                if not data:
                    stdin_open = False
                last = time.monotonic()


def datagram_server(
    address: Address,
    report: Reporter,
    *,
    idle_timeout: float | None,
    crlf: bool,
    access: AccessList | None = None,
    session: SessionOptions | None = None,
    capture: Capture | None = None,
    options: dict[str, Any] | None = None,
) -> int:
    """Datagrams to stdout, stdin to the latest sender; ``access`` drops the denied."""
    session = session or SessionOptions()
    splitter = _LineSplitter(crlf)
    with (
        open_datagram(bind=address, **(options or {})) as endpoint,
        selectors.PollSelector() as selector,
    ):
        traffic = _Traffic(endpoint, report, session, capture)
        report.notice(f"listening on {endpoint.local}")
        stdin_open = session.send
        selector.register(endpoint.fileno(), selectors.EVENT_READ, "socket")
        sender: Address | None = None
        idle = idle_timeout
        last = time.monotonic()
        while True:
            traffic.send_due(sender, anyone=sender is not None)
            _watch_stdin(selector, stdin_open and not traffic.pacer.waiting)
            timeout = None if idle is None else last + idle - time.monotonic()
            if timeout is not None and timeout <= 0:
                return 0  # the datagram wait ending is normal completion
            for key, _ in selector.select(_earliest(timeout, traffic.pace_wait())):
                if key.data == "socket":
                    sender = traffic.receive(access) or sender
                    last = time.monotonic()
                    continue
                data = read_stdin()
                traffic.queue(splitter.feed(data) if data else splitter.rest())
                stdin_open = stdin_open and bool(data)
