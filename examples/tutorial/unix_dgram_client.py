"""The tutorial's Unix-domain datagram client.

python unix_dgram_client.py PATH
"""

import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: unix_dgram_client.py PATH", file=sys.stderr)
        return 2
    address = socketeer.Address("unix-dgram", path=sys.argv[1])
    try:
        with socketeer.open_datagram(address, timeout=10) as endpoint:  # autobound
            print("Please enter the message: ", end="", flush=True)
            endpoint.send(sys.stdin.readline().encode())
            reply, _ = endpoint.recv()
            print(reply.decode(errors="replace"), end="")
    except socketeer.SocketeerError as exc:
        print(f"unix_dgram_client.py: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
