"""Datagrams over a stream, sans I/O: each datagram is one SPEC §2 frame, limits included.

A tunnel session turns every datagram into a 4-byte big-endian length and
the payload, and the bytes read from the stream back into datagrams, however
the stream cut them. ``framing`` owns the frame format; this adds what a
tunnel needs on top: one limit for both directions (a frame the other end
announces larger than any datagram is a broken or hostile peer, and a stream
cannot be resynchronised after it), and the end of a stream in the middle of
a frame told apart from a clean end. Pure: bytes in, datagrams out.
"""

from __future__ import annotations

from ..framing import FrameDecoder, encode_frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["DEFAULT_MAX_FRAME", "DatagramFramer"]

#: The largest UDP payload (IPv6: 65,535 minus the 8-byte UDP header; IPv4's
#: 65,507 fits under it). A larger announced frame cannot be a datagram.
DEFAULT_MAX_FRAME: Final = 65527


class DatagramFramer:
    """One session's datagram↔frame conversion: ``encode`` going in, ``feed`` coming out."""

    __slots__ = ("_decoder", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be 0 or more, not {max_size}")
        self.max_size = max_size
        self._decoder = FrameDecoder(max_size)

    def encode(self, datagram: bytes | bytearray | memoryview) -> bytes:
        """The frame that carries ``datagram``.

        Raises:
            FrameTooLarge: the datagram is larger than ``max_size`` (drop it;
                the session goes on).
        """
        return encode_frame(datagram, self.max_size)

    def feed(self, data: bytes) -> list[bytes]:
        """The datagrams the stream's next bytes complete (``b""``: the stream ended).

        Raises:
            FrameTooLarge: a header announces more than ``max_size`` (close the
                session: the stream cannot be resynchronised).
            ConnectionClosed: the stream ended inside a frame (``partial``
                holds what had arrived).
        """
        decoder = self._decoder
        decoder.feed(data)
        datagrams = []
        while (datagram := decoder.next_frame()) is not None:
            datagrams.append(datagram)
        return datagrams

    @property
    def at_eof(self) -> bool:
        """Whether the stream ended cleanly, between frames."""
        return self._decoder.at_eof
