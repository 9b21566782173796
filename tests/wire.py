"""An impaired wire between two TUN devices: delay, jitter, loss, reordering, duplication.

For kernels without ``sch_netem``. The wire holds two TUN devices; the tests
move one into each of two network namespaces and give them point-to-point
addresses, so every IP packet between the namespaces passes through this
process, which holds it for its delay and then writes it out on the other
device, or drops, reorders or duplicates it as asked:

    python tests/wire.py TUN_A TUN_B --delay 0.020 --jitter 0.005 --loss 0.01 \\
        --reorder 0.01 [--duplicate 0] [--seed N] [--max-seconds 900]

Jitter keeps packets in order (each waits for the one before it, as netem's
does behind a rate), so reordering is only what ``--reorder`` asks for: that
share of packets is held one extra delay and overtaken by the next ones. It
prints ``ready`` once both devices exist, then a line of counts when it is
stopped (SIGTERM) or ``--max-seconds`` pass. Standard library only, Linux only.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import os
import random
import selectors
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tun_a")
    parser.add_argument("tun_b")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    fds = {open_tun(args.tun_a): None, open_tun(args.tun_b): None}
    a, b = fds
    other = {a: b, b: a}
    last_release = {a: 0.0, b: 0.0}  # per direction, keyed by the output device
    queue: list[tuple[float, int, int, bytes]] = []  # (release time, order, out fd, packet)
    counts = {"packets": 0, "dropped": 0, "reordered": 0, "duplicated": 0}
    order = 0
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    selector = selectors.DefaultSelector()
    for fd in fds:
        selector.register(fd, selectors.EVENT_READ)
    print("ready", flush=True)
    ends = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < ends:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, packet = heapq.heappop(queue)
            try:
                os.write(out, packet)
            except OSError:
                counts["dropped"] += 1  # the device is down or gone: as a wire would
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        for key, _ in selector.select(min(timeout, 0.5)):
            while True:
                try:
                    packet = os.read(key.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                counts["packets"] += 1
                if rng.random() < args.loss:
                    counts["dropped"] += 1
                    continue
                out = other[key.fd]
                now = time.monotonic()
                delay = args.delay + rng.uniform(-args.jitter, args.jitter)
                copies = 2 if rng.random() < args.duplicate else 1
                counts["duplicated"] += copies - 1
                if rng.random() < args.reorder:
                    counts["reordered"] += 1
                    release = now + max(delay, 0.0) + max(args.delay, 0.001)
                else:
                    release = max(last_release[out], now + max(delay, 0.0))
                    last_release[out] = release
                for _ in range(copies):
                    order += 1
                    heapq.heappush(queue, (release, order, out, packet))
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    for fd in fds:
        os.close(fd)


if __name__ == "__main__":
    if not sys.platform.startswith("linux"):
        sys.exit("wire.py needs Linux TUN devices")
    main()
