"""The tutorial's Unix-domain datagram server.

    python unix_dgram_server.py PATH

Replies reach the client only because the client has an address of its own:
socketeer's ``open_datagram`` gives it one (the pitfall of the C version).
"""

import signal
import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: unix_dgram_server.py PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    address = socketeer.Address("unix-dgram", path=sys.argv[1])
    with socketeer.open_datagram(bind=address) as endpoint:
        print(f"listening on {endpoint.local}", file=sys.stderr, flush=True)
        while True:
            message, sender = endpoint.recv()
            text = message.decode(errors="replace").rstrip("\n")
            print(f"Here is the message: {text}", flush=True)
            if sender is None:
                print(
                    "unix_dgram_server.py: sender has no address; cannot reply",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            endpoint.send(b"I got your message\n", to=sender)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
