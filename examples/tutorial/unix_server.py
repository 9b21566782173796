"""The tutorial's Unix-domain server: the same exchange over a socket file.

    python unix_server.py PATH

Serves clients one after another (an iterative server) until Ctrl-C or
SIGTERM. A stale file from a server that died is replaced; the file is removed
when the server stops.
"""

import signal
import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: unix_server.py PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with socketeer.listen(socketeer.Address("unix", path=sys.argv[1])) as listener:
        print(f"listening on {listener.address}", file=sys.stderr, flush=True)
        while True:
            with listener.accept() as conn:
                try:
                    message = conn.recv_line()
                    print(f"Here is the message: {message.decode(errors='replace')}", flush=True)
                    conn.send_line("I got your message")
                except socketeer.SocketeerError as exc:  # one bad client must not stop us
                    print(f"unix_server.py: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
