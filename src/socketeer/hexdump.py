"""Hex dumps of traffic, for ``--hexdump`` (pure: bytes in, text out).

Each direction keeps its own offset and is marked ``>`` (sent) or ``<``
(received), in the style of ``ncat --hex-dump`` and ``xxd``.
"""

from __future__ import annotations

__all__ = ["HexDumper", "hexdump_lines"]

_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))


def hexdump_lines(data: bytes, offset: int = 0, marker: str = "") -> list[str]:
    """Lines of 16 bytes: marker, offset, hex bytes, and the printable characters."""
    lines = []
    prefix = f"{marker} " if marker else ""
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = chunk.translate(_PRINTABLE).decode("ascii")
        lines.append(f"{prefix}{offset + start:08x}  {hexes:<47}  |{text}|")
    return lines


class HexDumper:
    """Per-direction offsets for a stream of dumps."""

    SENT = ">"
    RECEIVED = "<"

    def __init__(self) -> None:
        self._offsets = {self.SENT: 0, self.RECEIVED: 0}

    def dump(self, data: bytes, marker: str) -> str:
        lines = hexdump_lines(data, self._offsets[marker], marker)
        self._offsets[marker] += len(data)
        return "".join(line + "\n" for line in lines)
