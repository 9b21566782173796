"""What every socket-owning object shares: close once, ``closed``, ``with`` / ``async with``."""

from __future__ import annotations

from typing import TypeVar

R = TypeVar("R", bound="Resource")
A = TypeVar("A", bound="AsyncResource")


class Resource:
    """Closed at most once; a context manager that closes on exit."""

    _closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the socket (and what goes with it); closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncResource(Resource):
    """A ``Resource`` that is also an async context manager."""

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
