"""The server's log: one line per closed connection, as text or JSON (SPEC §4).

Everything goes through the ``socketeer.server`` logger with the fields as
``extra``; the CLI picks the formatter (``--log-format text|json``), library
users configure ``logging`` as they like.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..address import Address

log = logging.getLogger("socketeer.server")

_FIELDS = ("event", "peer", "duration", "bytes_in", "bytes_out", "reason", "pid")


def _peer_text(peer: Address | None) -> str:
    return str(peer) if peer is not None else "local client"


def closed(
    peer: Address | None,
    started: float,
    bytes_in: int | None,
    bytes_out: int | None,
    error: BaseException | None = None,
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return  # -q, or a library user's logging: skip building the line per client
    duration = time.monotonic() - started
    shown_in = "?" if bytes_in is None else str(bytes_in)
    shown_out = "?" if bytes_out is None else str(bytes_out)
    why = f" ({error})" if error is not None else ""
    log.info(
        "closed %s after %.3fs: %s bytes in, %s bytes out%s",
        _peer_text(peer),
        duration,
        shown_in,
        shown_out,
        why,
        extra={
            "event": "closed",
            "peer": _peer_text(peer),
            "duration": round(duration, 6),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "reason": str(error) if error is not None else None,
        },
    )


class RateLimit:
    """At most one line per ``interval`` seconds; the lines held back are counted."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next = 0.0
        self.held_back = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.held_back += 1
            return False
        self._next = now + self.interval
        return True

    def take_held_back(self) -> int:
        count, self.held_back = self.held_back, 0
        return count


_capacity_limit = RateLimit()


def out_of_descriptors(op: str, exc: OSError, client_closed: bool) -> None:
    """One line a second at most while a process is out of descriptors (or memory)."""
    if not _capacity_limit.allow():
        return
    held = _capacity_limit.take_held_back()
    what = exc.strerror or str(exc)
    action = "a client was closed at once" if client_closed else "retrying"
    more = f" ({held} more since the last line)" if held else ""
    log.error(
        "%s: %s: %s%s",
        op,
        what.lower(),
        action,
        more,
        extra={"event": "capacity", "reason": what},
    )


def shed(victim: Address | None, age: float, rate: float, newcomer: Address | None) -> None:
    """A slow connection was closed at the limit to serve a new client (``admission``)."""
    log.warning(
        "shed %s (%.0f bytes/s over %.1fs) to serve %s: max_connections reached",
        _peer_text(victim),
        rate,
        age,
        _peer_text(newcomer),
        extra={"event": "shed", "peer": _peer_text(victim), "reason": "slow at the limit"},
    )


def refused(peer: Address | None, reason: str) -> None:
    log.warning(
        "refused %s: %s",
        _peer_text(peer),
        reason,
        extra={"event": "refused", "peer": _peer_text(peer), "reason": reason},
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        return json.dumps(entry)
