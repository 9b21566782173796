"""Load an echo server from many machines with Locust and socketeer.

Start a server, then Locust (headless here; drop --headless for its web UI):

    socketeer serve tcp://0.0.0.0:7007 echo
    SOCKETEER_ADDRESS=tcp://127.0.0.1:7007 locust -f examples/locustfile.py \
        --headless -u 50 -r 10 -t 30s

Across machines, run ``locust -f examples/locustfile.py --master`` on one and
``locust -f examples/locustfile.py --worker --master-host=MASTER`` on each of
the others (each with SOCKETEER_ADDRESS set). Any address works: tcp://,
tls://, unix:PATH, unix:@NAME, udp://, unix-dgram:PATH.

SOCKETEER_MODE is ``rr`` (round trips on one kept connection per user, the
default) or ``connect`` (a connection per request); SOCKETEER_SIZE is the
bytes sent and echoed per request (64 by default).
"""

from __future__ import annotations

import os

from socketeer.bench.locust import SocketeerUser


class EchoUser(SocketeerUser):
    address = os.environ.get("SOCKETEER_ADDRESS", "tcp://127.0.0.1:7007")
    mode = os.environ.get("SOCKETEER_MODE", "rr")
    size = int(os.environ.get("SOCKETEER_SIZE", "64"))
