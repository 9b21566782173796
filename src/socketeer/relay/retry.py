"""When to try connecting again: exponential backoff with jitter, as a pure policy.

Every side of a relay that connects (both sides of ``--connect-both``, the
stream side of a ``--frame`` tunnel) asks this one policy how long to wait
before the next attempt and whether to give up. The delay doubles from
``delay`` up to ``max_delay``, and each wait is shortened by a random part
of up to ``jitter`` of it, so that many relays cut off by the same restart
do not all knock again in the same instant (AWS's "equal jitter" family).
Pure: the caller draws the random number and does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["DEFAULT_RETRY_DELAY", "FOREVER", "RetryPolicy", "parse_retry"]

DEFAULT_RETRY_DELAY: Final = 1.0
DEFAULT_MAX_DELAY: Final = 30.0
FOREVER: Final = None


def parse_retry(text: str) -> int | None:
    """``--retry N|forever``: N retries after the first attempt (None: forever).

    Raises:
        ValueError: neither a whole number of 0 or more nor ``forever``.
    """
    if text.strip().lower() == "forever":
        return FOREVER
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--retry takes a whole number or 'forever', not {text!r}") from None
    if value < 0:
        raise ValueError(f"--retry takes 0 or more retries, not {text!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a connect, and how long to wait before each retry.

    ``retries`` is the number of attempts after the first (None: forever);
    ``delay`` the wait before the first retry, doubled (``factor``) each time
    up to ``max_delay``; ``jitter`` (0 to 1) the part of each wait that is random.
    """

    retries: int | None = 0
    delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        if not 0 <= self.delay <= self.max_delay:
            raise ValueError(f"need 0 <= delay <= max_delay, not {self.delay}, {self.max_delay}")
        if self.factor < 1:
            raise ValueError(f"factor must be 1 or more, not {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, not {self.jitter}")

    @property
    def attempts(self) -> int | None:
        """Attempts in all (None: forever)."""
        return None if self.retries is None else self.retries + 1

    def gives_up_after(self, attempt: int) -> bool:
        """Whether failing attempt number ``attempt`` (1 for the first) is the last."""
        return self.retries is not None and attempt > self.retries

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt``: the backoff before jitter."""
        exponent = min(attempt - 1, 64)  # past this the cap has long been reached
        return min(self.max_delay, self.delay * self.factor**exponent)

    def delay_after(self, attempt: int, random: float) -> float:
        """The wait after failed attempt ``attempt``; ``random`` is uniform in [0, 1)."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1 - self.jitter * random)

    def describe(self, attempt: int) -> str:
        """``attempt 2 of 6`` (or ``attempt 2`` when retrying forever), for the log."""
        attempts = self.attempts
        return f"attempt {attempt}" if attempts is None else f"attempt {attempt} of {attempts}"
