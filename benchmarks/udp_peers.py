"""The UDP echo servers socketeer is measured against, each on 127.0.0.1 port 0.

    python udp_peers.py blocking|uvloop

``blocking`` is the plain loop a tutorial shows; ``uvloop`` is an asyncio
``DatagramProtocol`` on uvloop's loop. Each prints
``listening on udp://127.0.0.1:PORT`` on stderr and serves until killed.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any


def announce(port: int) -> None:
    print(f"listening on udp://127.0.0.1:{port}", file=sys.stderr, flush=True)


def blocking() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    announce(s.getsockname()[1])
    while True:
        data, addr = s.recvfrom(65536)
        s.sendto(data, addr)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def uvloop_echo() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    announce(transport.get_extra_info("sockname")[1])
    await asyncio.Event().wait()


def main() -> None:
    if sys.argv[1:] == ["blocking"]:
        blocking()
    elif sys.argv[1:] == ["uvloop"]:
        import uvloop

        uvloop.run(uvloop_echo())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
