"""The tutorial's concurrent server: a child process per client, and no zombies.

    python forking_server.py PORT [HOST]

The parent only accepts. Each child closes its copy of the listening socket,
serves its client and exits; the parent closes its copy of the client socket.
A SIGCHLD handler reaps every child that has exited (``waitpid`` in a loop,
since one signal can stand for several children), so none lingers as a
zombie. Stop it with Ctrl-C or SIGTERM.
"""

import os
import signal
import sys

import socketeer


def reap_children(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children at all
        if pid == 0:
            return  # children remain, but none has exited yet


def serve_one(conn: socketeer.Connection) -> None:
    message = conn.recv_line()
    # One write per line: children share stdout, and a write of at most
    # PIPE_BUF bytes is never interleaved with another's (print may write twice).
    sys.stdout.write(f"Here is the message: {message.decode(errors='replace')}\n")
    sys.stdout.flush()
    conn.send_line("I got your message")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: forking_server.py PORT [HOST]", file=sys.stderr)
        return 2
    host = sys.argv[2] if len(sys.argv) == 3 else "127.0.0.1"
    signal.signal(signal.SIGCHLD, reap_children)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    address = socketeer.Address("tcp", host=host, port=int(sys.argv[1]))
    with socketeer.listen(address) as listener:
        print(f"listening on {listener.address}", file=sys.stderr, flush=True)
        while True:
            conn = listener.accept()
            if os.fork() == 0:  # the child
                listener.close()
                try:
                    with conn:
                        serve_one(conn)
                except socketeer.SocketeerError as exc:
                    print(f"forking_server.py: {exc}", file=sys.stderr, flush=True)
                os._exit(0)  # never return into the parent's loop
            conn.close()  # the parent: the child has its own copy


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
