"""TLS benchmark: bulk throughput and handshakes per second against socat OPENSSL and ncat --ssl.

    python benchmarks/tls.py [--seconds S] [--rounds N]

Every server gets the same certificate (a throwaway trustme CA, ECDSA) and
the same client: Python's ssl module (OpenSSL underneath) writing 1 MiB blocks
for the bulk test, and connecting, handshaking and closing in a loop for the
handshake test. The servers read and drop. Medians of N interleaved rounds,
as ratios to socat, printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import background, reserve_port, table

SERVERS = ["socketeer serve --model async", "socat OPENSSL-LISTEN", "ncat --ssl"]


def wait_port(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def server(name: str, cert: str, key: str) -> Iterator[int]:
    port = reserve_port()  # socat and ncat cannot report a port-0 bind here
    if name.startswith("socketeer"):
        argv = [
            sys.executable,
            "-m",
            "socketeer",
            "serve",
            "-q",
            "--model",
            "async",
            "--cert",
            cert,
            "--key",
            key,
            f"tls://127.0.0.1:{port}",
            "discard",
        ]
    elif name.startswith("socat"):
        socat = shutil.which("socat") or sys.exit("socat is not installed")
        argv = [
            socat,
            "-u",
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0",
            "GOPEN:/dev/null",
        ]
    else:
        ncat = shutil.which("ncat") or sys.exit("ncat is not installed")
        argv = [
            ncat,
            "--ssl",
            "--ssl-cert",
            cert,
            "--ssl-key",
            key,
            "-l",
            "-k",
            "--recv-only",
            "127.0.0.1",
            str(port),
        ]
    with background(argv):
        wait_port(port)
        time.sleep(0.3)
        yield port


def bulk(port: int, context: ssl.SSLContext, seconds: float) -> float:
    block = b"t" * (1 << 20)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        start = time.monotonic()
        warm, end = start + 0.5, start + 0.5 + seconds
        sent = 0
        while (now := time.monotonic()) < end:
            tls.sendall(block)
            if now >= warm:
                sent += len(block)
    return sent / seconds


def handshakes(port: int, context: ssl.SSLContext, seconds: float) -> float:
    end = time.monotonic() + seconds
    done = 0
    while time.monotonic() < end:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            done += 1
    return done / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        issued = ca.issue_cert("localhost", "127.0.0.1")
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        rates: dict[str, list[float]] = {n: [] for n in SERVERS}
        shakes: dict[str, list[float]] = {n: [] for n in SERVERS}
        for _ in range(args.rounds):
            for name in SERVERS:
                with server(name, cert, key) as port:
                    rates[name].append(bulk(port, context, args.seconds))
                    shakes[name].append(handshakes(port, context, args.seconds))
    rate = {n: statistics.median(v) for n, v in rates.items()}
    shake = {n: statistics.median(v) for n, v in shakes.items()}
    ref = "socat OPENSSL-LISTEN"
    rows = [
        [
            n,
            f"{rate[n] / 1e9:.2f} GB/s ({rate[n] / rate[ref]:.2f}x)",
            f"{shake[n]:,.0f}/s ({shake[n] / shake[ref]:.2f}x)",
        ]
        for n in SERVERS
    ]
    print(f"{args.rounds} rounds of {args.seconds:g} s, medians; {os.cpu_count()} CPUs\n")
    print(
        table(
            "TLS servers: bulk throughput and handshakes (ratios to socat)",
            ["server", "bulk (1 MiB writes)", "handshakes (one client)"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
