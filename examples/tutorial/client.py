"""The tutorial's client: connect, send one line typed by the user, print the answer.

python client.py HOST PORT
"""

import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: client.py HOST PORT", file=sys.stderr)
        return 2
    address = socketeer.Address("tcp", host=sys.argv[1], port=int(sys.argv[2]))
    try:
        with socketeer.connect(address, timeout=10) as conn:  # socket(), connect()
            print("Please enter the message: ", end="", flush=True)
            conn.send_line(sys.stdin.readline().rstrip("\n"))  # write()
            print(conn.recv_line().decode(errors="replace"))  # read()
    except socketeer.SocketeerError as exc:
        print(f"client.py: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
