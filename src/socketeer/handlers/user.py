"""``MODULE:FUNCTION``: a handler written by the user, imported by name."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..address import Address
from ..errors import UsageError
from .base import Handler

if TYPE_CHECKING:
    from ..aio import Connection as AsyncConnection
    from ..connection import Connection
    from ..datagram import DatagramEndpoint


def import_function(spec: str) -> Callable[..., Any]:
    """``package.module:function`` from the current directory or ``sys.path``.

    Raises:
        UsageError: malformed, not importable, or no such callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"handler {spec!r}: write MODULE:FUNCTION")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's to see, in one line
        raise UsageError(f"handler {spec}: cannot import {module_name}: {exc}") from exc
    function = module
    for part in attr.split("."):
        function = getattr(function, part, None)  # type: ignore[assignment]
        if function is None:
            raise UsageError(f"handler {spec}: {module_name} has no {attr}")
    if not callable(function):
        raise UsageError(f"handler {spec}: {attr} is not callable")
    return function


class UserHandler(Handler):
    """A user's function: ``def f(conn)`` (thread, fork), ``async def f(conn)`` (async),
    or ``def f(data, sender, endpoint)`` (datagrams)."""

    datagrams = True

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.name = name or str(getattr(function, "__qualname__", repr(function)))
        self.function = function
        self.is_coroutine = inspect.iscoroutinefunction(function)
        self.models = ("async",) if self.is_coroutine else ("thread", "fork")

    @classmethod
    def from_spec(cls, spec: str) -> UserHandler:
        """Import ``MODULE:FUNCTION``."""
        return cls(import_function(spec), name=spec)

    def check(self, *, model: str, workers: int, datagram: bool) -> None:
        if datagram:
            if self.is_coroutine:
                raise UsageError(
                    f"handler {self.name}: a datagram handler is a plain function "
                    "f(data, sender, endpoint), not a coroutine"
                )
            return
        if model not in self.models:
            hint = (
                "a coroutine function needs --model async"
                if self.is_coroutine
                else "a plain function needs --model thread or fork (or write async def)"
            )
            raise UsageError(f"handler {self.name}: {hint}")

    def serve(self, conn: Connection) -> None:
        self.function(conn)

    async def serve_async(self, conn: AsyncConnection) -> None:
        await self.function(conn)

    def datagram(self, data: bytes, sender: Address | None, endpoint: DatagramEndpoint) -> None:
        self.function(data, sender, endpoint)
