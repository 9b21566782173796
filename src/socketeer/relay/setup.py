"""What setting a relay client up shares, in the blocking models and on the loop alike."""

from __future__ import annotations

from ..address import Address
from ..errors import SocketeerError
from ..proxyproto import NothingSent
from ..server import _log
from ..server.accept import DESCRIPTOR_ERRNOS

__all__ = ["report_set_up_failure"]


def report_set_up_failure(peer: Address | None, error: SocketeerError) -> None:
    """One warning per client whose TO could not be opened; out of descriptors, one a second.

    A client that closed before sending a byte, where a PROXY header was
    expected, is a load balancer's health check: logged with -v only, as
    HAProxy's ``option dontlognull`` does, so checks every second do not fill
    the log.
    """
    if getattr(error, "errno", None) in DESCRIPTOR_ERRNOS:
        assert isinstance(error, OSError)
        _log.out_of_descriptors("relay", error, True)
        return
    if isinstance(error, NothingSent):
        _log.log.info("%s: %s; closing", peer or "local client", error)
        return
    _log.log.warning("%s: %s; closing", peer or "local client", error)
