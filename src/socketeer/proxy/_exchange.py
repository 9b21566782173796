"""What every proxy handshake shares, client side or server side (pure).

An outbox the caller drains with ``data_to_send``, an inbox fed with
``receive_data`` no faster than ``wanted()`` allows (so no byte past the
handshake is ever read), and the rule that a handshake, once over, takes
nothing more. Subclasses parse in ``_advance`` and word their errors.
"""

from __future__ import annotations

from ..errors import ProxyError


class Exchange:
    """The feed discipline of a handshake; ``_advance`` and ``wanted`` are the protocol's."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._in = bytearray()
        self._over = False

    @property
    def done(self) -> bool:
        """The handshake is over (the stream is open, or it was refused)."""
        return self._over

    def data_to_send(self) -> bytes:
        """The bytes to write now (``b""`` when there are none)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def wanted(self) -> int:
        """How many bytes to read next, at most: never past the end of the handshake."""
        raise NotImplementedError

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means it closed the connection.

        Raises:
            ProxyError: the peer closed early or broke the protocol (a refusal
                is a ``ProxyRefused``, a subclass).
        """
        if self._taking_no_more():
            raise self._late()
        if not data:
            self._closed_early()
        if len(data) > self.wanted():
            raise self._overfed()
        self._in += data
        self._advance()

    def _taking_no_more(self) -> bool:
        return self._over

    def _advance(self) -> None:
        raise NotImplementedError

    def _late(self) -> ProxyError:
        return ProxyError("data after the handshake was done")

    def _closed_early(self) -> None:
        """Raise the error for a peer that closed in the middle of the handshake."""
        raise ProxyError("the peer closed the connection during the handshake")

    def _overfed(self) -> ProxyError:
        return ProxyError("fed the handshake more than it asked for")
