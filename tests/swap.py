"""A bulk peer for tests that cross processes or namespaces: send N MiB, hash what comes back.

    python tests/swap.py listen HOST MEBIBYTES SEED   # prints "listening on HOST:PORT"
    python tests/swap.py connect HOST:PORT MEBIBYTES SEED

Each sends MEBIBYTES of blocks made from SEED (numbered, so reordering shows),
half-closes, reads until EOF, and prints ``SHA256 BYTES`` of what it received.
Standard library only: it runs under ``ip netns exec`` with any Python.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys
import threading
from collections.abc import Iterator

BLOCK = 1 << 20


def blocks(count: int, seed: bytes) -> Iterator[bytes]:
    body = hashlib.shake_256(seed).digest(BLOCK - 8)
    for i in range(count):
        yield struct.pack("!Q", i) + body


def digest_of(count: int, seed: bytes) -> str:
    h = hashlib.sha256()
    for block in blocks(count, seed):
        h.update(block)
    return h.hexdigest()


def swap(sock: socket.socket, count: int, seed: bytes) -> tuple[str, int]:
    got: list[tuple[str, int]] = []

    def drain() -> None:
        h, total = hashlib.sha256(), 0
        buffer = bytearray(BLOCK)
        while n := sock.recv_into(buffer):
            h.update(memoryview(buffer)[:n])
            total += n
        got.append((h.hexdigest(), total))

    reader = threading.Thread(target=drain)
    reader.start()
    for block in blocks(count, seed):
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    reader.join()
    return got[0]


def main() -> None:
    mode, where, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
    if mode == "listen":
        listener = socket.create_server((where, 0))
        print(f"listening on {where}:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
        sock, _ = listener.accept()
        listener.close()
    else:
        host, _, port = where.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=60)
        sock.settimeout(None)
    with sock:
        digest, total = swap(sock, count, seed)
    print(digest, total, flush=True)


if __name__ == "__main__":
    main()
