"""The tutorial's first server: accept one client, print its message, answer it.

    python server.py PORT [HOST]

HOST defaults to 127.0.0.1 (the C original binds every interface; pass
0.0.0.0 or :: for that). Port 0 picks a free port; the real address is
printed on stderr.
"""

import sys

import socketeer


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: server.py PORT [HOST]", file=sys.stderr)
        return 2
    host = sys.argv[2] if len(sys.argv) == 3 else "127.0.0.1"
    address = socketeer.Address("tcp", host=host, port=int(sys.argv[1]))
    with socketeer.listen(address) as listener:  # socket(), bind(), listen()
        print(f"listening on {listener.address}", file=sys.stderr, flush=True)
        with listener.accept() as conn:  # accept(): a new socket for this client
            message = conn.recv_line()  # read() until the newline
            print(f"Here is the message: {message.decode(errors='replace')}", flush=True)
            conn.send_line("I got your message")  # write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
