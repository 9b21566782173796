"""The log of ``serve`` and ``relay`` on stderr: one set-up for both (SPEC §4, §6).

A relay is a server, so both commands configure both loggers,
``socketeer.server`` (accepts, refusals, closed connections) and
``socketeer.relay`` (pairs), with the same text or JSON lines. They differ
only in their default level: ``serve`` shows a line per closed connection,
``relay`` only warnings until ``-v`` asks for a line per ended pair.
"""

from __future__ import annotations

import logging

from ..server._log import JSONFormatter
from ._options import OutputOptions

LOGGERS = ("socketeer.server", "socketeer.relay")


def log_level(output: OutputOptions, default: int) -> int:
    """-q: one step quieter than ``default``; -v: at least INFO; -vv: DEBUG."""
    if output.quiet:
        return min(default + 10, logging.CRITICAL)
    if output.verbose >= 2:
        return logging.DEBUG
    if output.verbose == 1:
        return min(default, logging.INFO)
    return default


def configure_log(log_format: str, output: OutputOptions, *, default: int) -> None:
    """Send both loggers to stderr, ``--log-format text|json``, at the level asked for."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("socketeer: %(message)s"))
    level = log_level(output, default)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level)
