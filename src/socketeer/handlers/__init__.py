"""Built-in server handlers (SPEC §4) and ``resolve`` from a name on the command line.

| name | stream | datagram |
|---|---|---|
| echo | every byte back | every datagram back |
| discard | read and drop | read and drop |
| ack | the tutorial's server | the same per datagram |
| exec -- PROG ARGS | PROG per connection on the socket | - |
| broker | everything to every other client | - |
| chat | broker with ``<userN>`` names and notices | - |
| socks5 | a SOCKS5 proxy server (``proxy.Socks5Proxy``) | - |
| http-proxy | an HTTP CONNECT proxy server (``proxy.HttpProxy``) | - |
| MODULE:FUNCTION | your function | your function |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import UsageError
from .base import Handler
from .basic import Ack, Discard, Echo
from .exec import Exec
from .room import Room
from .user import UserHandler

__all__ = ["Ack", "Discard", "Echo", "Exec", "Handler", "Room", "UserHandler", "resolve"]

BUILTIN = ("echo", "discard", "ack", "exec", "broker", "chat", "socks5", "http-proxy")


def resolve(spec: str | Handler | Callable[..., Any], args: Sequence[str] = ()) -> Handler:
    """The handler named ``spec`` (with ``args`` for exec), or wrap a callable.

    Raises:
        UsageError: unknown name, stray arguments, or a user handler that does not import.
    """
    if isinstance(spec, Handler):
        return spec
    if callable(spec):
        return UserHandler(spec)
    if spec == "exec":
        argv = list(args)
        if argv and argv[0] == "--":
            argv = argv[1:]
        return Exec(argv)
    if args:
        raise UsageError(f"handler {spec} takes no arguments, got {' '.join(args)}")
    if spec == "echo":
        return Echo()
    if spec == "discard":
        return Discard()
    if spec == "ack":
        return Ack()
    if spec in ("broker", "chat"):
        return Room(names=spec == "chat")
    if spec in ("socks5", "http-proxy"):  # options: build the handler (handlers.proxy)
        from .proxy import HttpProxy, Socks5Proxy

        return Socks5Proxy() if spec == "socks5" else HttpProxy()
    if ":" in spec:
        return UserHandler.from_spec(spec)
    raise UsageError(
        f"unknown handler {spec!r}: use one of {', '.join(BUILTIN)} or MODULE:FUNCTION"
    )
