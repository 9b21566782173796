"""The tutorial's UDP server: no connections, just datagrams and their senders.

    python udp_server.py PORT [HOST]

Runs until Ctrl-C or SIGTERM, answering every datagram.
"""

import signal
import sys

import socketeer


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: udp_server.py PORT [HOST]", file=sys.stderr)
        return 2
    host = sys.argv[2] if len(sys.argv) == 3 else "127.0.0.1"
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    address = socketeer.Address("udp", host=host, port=int(sys.argv[1]))
    with socketeer.open_datagram(bind=address) as endpoint:  # socket(), bind()
        print(f"listening on {endpoint.local}", file=sys.stderr, flush=True)
        while True:
            message, sender = endpoint.recv()  # recvfrom()
            text = message.decode(errors="replace").rstrip("\n")
            print(f"Here is the message: {text}", flush=True)
            endpoint.send(b"I got your message\n", to=sender)  # sendto()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
