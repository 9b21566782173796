"""The tutorial's Unix-domain client.

python unix_client.py PATH
"""

import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: unix_client.py PATH", file=sys.stderr)
        return 2
    try:
        with socketeer.connect(socketeer.Address("unix", path=sys.argv[1]), timeout=10) as conn:
            print("Please enter the message: ", end="", flush=True)
            conn.send_line(sys.stdin.readline().rstrip("\n"))
            print(conn.recv_line().decode(errors="replace"))
    except socketeer.SocketeerError as exc:
        print(f"unix_client.py: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
