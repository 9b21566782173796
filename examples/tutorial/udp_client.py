"""The tutorial's UDP client: one datagram out, one back.

python udp_client.py HOST PORT
"""

import sys

import socketeer


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: udp_client.py HOST PORT", file=sys.stderr)
        return 2
    address = socketeer.Address("udp", host=sys.argv[1], port=int(sys.argv[2]))
    try:
        with socketeer.open_datagram(address, timeout=10) as endpoint:
            print("Please enter the message: ", end="", flush=True)
            endpoint.send(sys.stdin.readline().encode())  # sendto()
            reply, _ = endpoint.recv()  # recvfrom()
            print(reply.decode(errors="replace"), end="")
    except socketeer.SocketeerError as exc:
        print(f"udp_client.py: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
