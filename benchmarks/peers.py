"""The echo servers socketeer is measured against, each on 127.0.0.1 port 0.

    python peers.py socketserver-thread|socketserver-fork|asyncio-protocol|uvloop-buffered

Each prints ``listening on tcp://127.0.0.1:PORT`` on stderr and serves until killed.
They are written the way their documentation shows, with TCP_NODELAY like socketeer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import sys
from typing import Any


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class ForkingServer(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024
    max_children = 10_000


def announce(port: int) -> None:
    print(f"listening on tcp://127.0.0.1:{port}", file=sys.stderr, flush=True)


class EchoProtocol(asyncio.Protocol):
    """asyncio's plain Protocol, as its documentation's echo server."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoBuffered(asyncio.BufferedProtocol):
    """The hand-written uvloop prototype: BufferedProtocol, one 64 KiB buffer."""

    buffer = memoryview(bytearray(65536))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(self.buffer[:nbytes].tobytes())


async def serve(protocol: type[asyncio.BaseProtocol]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=4096)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main() -> None:
    name = sys.argv[1]
    if name.startswith("socketserver"):
        cls = ThreadingServer if name.endswith("thread") else ForkingServer
        with cls(("127.0.0.1", 0), EchoHandler) as server:
            announce(server.server_address[1])
            server.serve_forever()
    elif name == "asyncio-protocol":
        asyncio.run(serve(EchoProtocol))
    elif name == "uvloop-buffered":
        import uvloop

        uvloop.run(serve(EchoBuffered))
    else:
        sys.exit(f"unknown peer {name}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
