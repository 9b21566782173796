"""A benchmark ``Result`` as people and programs read it: table, JSON, progress line, plot.

``table`` is the report printed at the end; ``to_json`` the ``--json`` document
(schema ``socketeer.bench/1``, described by ``schema.json`` beside this
module); ``Progress`` the live line on a terminal's stderr; ``plot`` the
``--plot`` PNG (matplotlib, an optional extra, imported only there).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import IO, Any

from ..errors import UsageError
from .histogram import Histogram
from .result import ERROR_KINDS, Counts, Result

__all__ = [
    "HISTOGRAM_FORMAT",
    "LEVELS",
    "SCHEMA",
    "Progress",
    "duration_text",
    "plot",
    "schema",
    "table",
    "to_json",
]

SCHEMA = "socketeer.bench/1"
#: How ``to_json`` writes histograms: HdrHistogram's compressed base64 (V2 cookie).
HISTOGRAM_FORMAT = "hdrhistogram-v2-base64"
#: The percentiles every report shows.
LEVELS: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9, 99.99)
_LABELS = ("p50", "p90", "p99", "p99.9", "p99.99", "max")


# -- units ----------------------------------------------------------------------------


def duration_text(ns: float) -> str:
    """Nanoseconds in the unit that suits them, three significant digits: ``12.3 µs``."""
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return _three(ns / size) + " " + unit
    return f"{ns:.0f} ns"


def _three(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _seconds(s: float) -> str:
    return f"{s:g} s" if s == int(s) else f"{s:.2f} s"


# -- the table ------------------------------------------------------------------------


def _settings_line(result: Result) -> str:
    s = result.settings
    parts = [f"{s.connections} connection{'s' if s.connections != 1 else ''}"]
    if s.mode == "stream":
        parts.append(f"{s.size:,} byte writes, {s.direction}")
    else:
        parts.append(f"{s.size:,} bytes")
    if s.requests is not None:
        parts.append(f"{s.requests:,} requests")
    elif s.duration is not None:
        parts.append(_seconds(s.duration))
    if s.warmup:
        parts.append(f"warmup {_seconds(s.warmup)}")
    if s.rate is not None:
        parts.append(f"open loop at {_count(s.rate)}/s")
    else:
        parts.append("closed loop")
    if s.pipeline != 1:
        parts.append(f"pipeline {s.pipeline}")
    parts.append(f"{s.workers} worker{'s' if s.workers != 1 else ''}")
    return f"bench {s.address}  mode {s.mode}: " + ", ".join(parts)


def _percentile_row(name: str, h: Histogram) -> list[str]:
    values = h.percentiles((*LEVELS, 100.0))
    return [name, *(duration_text(values[p]) for p in (*LEVELS, 100.0))]


def _grid(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _errors_text(counts: Counts) -> str:
    if not counts.error_total:
        return "none"
    order = [k for k in ERROR_KINDS if k in counts.errors]
    order += sorted(k for k in counts.errors if k not in ERROR_KINDS)
    shown = []
    sent = counts.requests + counts.errors.get("lost", 0) + counts.errors.get("timeout", 0)
    for kind in order:
        n = counts.errors[kind]
        if not n:
            continue
        text = f"{kind} {n:,}"
        if kind in ("lost", "duplicated", "reordered") and sent:
            text += f" ({100 * n / sent:.2g}%)"
        shown.append(text)
    return f"{counts.error_total:,}: " + ", ".join(shown)


def table(result: Result) -> str:
    """The final report: aligned plain text, one fact a line, ending in a newline."""
    s = result.settings
    counts = result.counts
    lines = [_settings_line(result), ""]
    facts: list[tuple[str, str]] = []
    facts.append(("connections", f"{result.connections:,} of {s.connections:,} requested"))
    what = {"rr": "round trips", "connect": "connections", "stream": "writes"}.get(
        s.mode, "requests"
    )
    facts.append(("elapsed", _seconds(round(result.elapsed, 2))))
    if s.mode == "stream":
        rate = result.throughput
        facts.append(("throughput", f"{rate / 1e6:,.1f} MB/s  ({rate * 8 / 1e9:.2f} Gbit/s)"))
        facts.append(("bytes", f"{counts.bytes_sent:,} sent, {counts.bytes_received:,} received"))
    else:
        facts.append(("rate", f"{_count(result.rate)} {what}/s"))
        facts.append(("completed", f"{counts.requests:,} {what}"))
    if s.rate is not None:
        attempted = counts.requests + counts.error_total
        if counts.late:
            share = f" ({100 * counts.late / attempted:.2g}%)" if attempted else ""
            mean = duration_text(counts.late_ns / counts.late)
            facts.append(("late sends", f"{counts.late:,}{share}, {mean} late on average"))
        else:
            facts.append(("late sends", "none"))
    facts.append(("errors", _errors_text(counts)))
    if s.warmup:
        warm = result.warmup
        facts.append(
            ("warmup", f"{warm.requests:,} {what}, {warm.error_total:,} errors (not counted)")
        )
    width = max(len(name) for name, _ in facts)
    lines += [f"{name.ljust(width)}  {value}" for name, value in facts]

    latency = result.latency
    uncorrected = result.uncorrected
    handshake = result.handshake
    rows: list[list[str]] = []
    if latency.count:
        if s.rate is not None and uncorrected is not None:
            rows.append(_percentile_row("corrected (from intended send)", latency))
            rows.append(_percentile_row("uncorrected", uncorrected))
        else:
            name = "connection" if s.mode == "connect" else "round trip"
            rows.append(_percentile_row(name, latency))
    if handshake is not None and handshake.count:
        rows.append(_percentile_row("TLS handshake", handshake))
    if rows:
        lines.append("")
        lines.append("latency")
        lines += _grid([["", *_LABELS], *rows])
        overflow = latency.overflow + (uncorrected.overflow if uncorrected else 0)
        if overflow:
            lines.append(f"  ({overflow:,} above {duration_text(latency.highest_ns)}, kept)")
    if result.client_bound:
        lines.append("")
        if result.settings.rate:
            lines.append(
                "warning: more than 1% of sends left late: the client could not keep "
                "its schedule, so the rate asked for was not offered"
            )
        else:
            lines.append(
                f"warning: the client used {100 * result.client_cpu:.0f}% of a core: "
                "figures are a lower bound"
            )
    return "\n".join(lines) + "\n"


# -- JSON -----------------------------------------------------------------------------


def _encoded(h: Histogram) -> str | None:
    try:
        return h.encode()
    except UsageError:
        return None


def _percentiles(h: Histogram) -> dict[str, int]:
    values = h.percentiles((*LEVELS, 100.0))
    return {label: values[p] for label, p in zip(_LABELS, (*LEVELS, 100.0), strict=True)}


def _summary(h: Histogram) -> dict[str, Any]:
    return {
        "count": h.count,
        "min_ns": h.min_ns,
        "mean_ns": h.mean_ns,
        "max_ns": h.max_ns,
        "overflow": h.overflow,
    }


def _histogram(h: Histogram | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return {**_summary(h), "percentiles": _percentiles(h), "histogram": _encoded(h)}


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def to_json(result: Result, environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` document (schema ``socketeer.bench/1``), ready for ``json.dump``.

    Histograms are HdrHistogram's standard encoding when the ``hdrhistogram``
    package is installed (``histogram_format`` says so), else null.
    """
    s = result.settings
    counts = result.counts
    latency = result.latency
    encoded = _encoded(latency)
    return {
        "schema": SCHEMA,
        "settings": {
            "address": s.address,
            "mode": s.mode,
            "connections": s.connections,
            "size": s.size,
            "duration": s.duration,
            "requests": s.requests,
            "warmup": s.warmup,
            "rate": s.rate,
            "pipeline": s.pipeline,
            "workers": s.workers,
            "timeout": s.timeout,
            "direction": s.direction,
            "max_errors": s.max_errors,
        },
        "environment": dict(environment or {}),
        "result": {
            "elapsed": _finite(result.elapsed),
            "requests": counts.requests,
            "rate": _finite(result.rate),
            "throughput": _finite(result.throughput),
            "bytes_sent": counts.bytes_sent,
            "bytes_received": counts.bytes_received,
            "connections": {"requested": s.connections, "achieved": result.connections},
            "errors": {kind: n for kind, n in sorted(counts.errors.items()) if n},
            "error_total": counts.error_total,
            "late": {
                "count": counts.late,
                "mean_ns": counts.late_ns / counts.late if counts.late else None,
            },
            "client_cpu": _finite(result.client_cpu),
            "client_bound": result.client_bound,
            "warmup": {
                "requests": result.warmup.requests,
                "error_total": result.warmup.error_total,
            },
            "latency": _summary(latency),
            "percentiles": _percentiles(latency),
            "histogram": encoded,
            "histogram_format": HISTOGRAM_FORMAT if encoded is not None else None,
            "uncorrected": _histogram(result.uncorrected),
            "handshake": _histogram(result.handshake),
        },
        "intervals": [
            {
                "worker": i.worker,
                "start": _finite(i.start),
                "seconds": _finite(i.seconds),
                "requests": i.counts.requests,
                "bytes_sent": i.counts.bytes_sent,
                "bytes_received": i.counts.bytes_received,
                "errors": i.counts.error_total,
                "late": i.counts.late,
                "p50_ns": i.latency.percentile(50.0),
                "p99_ns": i.latency.percentile(99.0),
                "max_ns": i.latency.max_ns,
                "cpu_seconds": _finite(i.cpu_seconds),
            }
            for i in result.intervals
        ],
    }


def schema() -> dict[str, Any]:
    """The JSON Schema of the ``to_json`` document (``schema.json`` beside this module)."""
    from importlib import resources

    text = resources.files(__package__ or "socketeer.bench").joinpath("schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# -- the live progress line -----------------------------------------------------------


class Progress:
    """One line on stderr, redrawn in place while a run goes on; silent off a terminal.

    ``update`` may be called as often as intervals come; the line is redrawn
    at most every ``min_interval`` seconds. ``close`` erases it, so the final
    table starts on a clean line.
    """

    def __init__(
        self,
        total: float | None = None,
        *,
        stream: IO[str] | None = None,
        min_interval: float = 0.25,
        unit: str = "req/s",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.unit = unit
        self.min_interval = min_interval
        self.live = _is_terminal(self.stream)
        self._drawn = 0.0
        self._shown = False

    def update(
        self,
        counts: Counts | None = None,
        p99_ns: int | None = None,
        elapsed: float = 0.0,
        *,
        requests: int | None = None,
        errors: int | None = None,
    ) -> None:
        """Show what the run did so far: ``counts`` (or ``requests`` and ``errors``)."""
        if not self.live:
            return
        now = time.monotonic()
        if self._shown and now - self._drawn < self.min_interval:
            return
        if requests is None:
            requests = counts.requests if counts is not None else 0
        if errors is None:
            errors = counts.error_total if counts is not None else 0
        rate = requests / elapsed if elapsed > 0 else 0.0
        parts = [f"{_count(rate)} {self.unit}"]
        parts.append(f"p99 {duration_text(p99_ns)}" if p99_ns else "p99 -")
        parts.append(f"{errors:,} error{'s' if errors != 1 else ''}")
        clock = f"{elapsed:.0f}"
        parts.append(f"{clock}/{self.total:g} s" if self.total else f"{clock} s")
        self.stream.write("\r" + "  ".join(parts) + "\x1b[K")
        self.stream.flush()
        self._drawn = now
        self._shown = True

    def close(self) -> None:
        """Erase the line (when one was drawn)."""
        if self.live and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


# -- the plot -------------------------------------------------------------------------


def _curve(h: Histogram, scale: float) -> tuple[list[float], list[float]]:
    """(1/(1-p), latency / scale) from p = 0 to the last percentile the count resolves."""
    top = max(10.0, float(h.count))
    xs = [10 ** (k / 20) for k in range(int(20 * math.log10(top)) + 1)]
    levels = [100 * (1 - 1 / x) for x in xs]
    values = h.percentiles(levels)
    return xs, [values[p] / scale for p in levels]


def _per_second(result: Result) -> tuple[list[float], list[float]]:
    buckets: dict[int, float] = {}
    stream = result.settings.mode == "stream"
    for i in result.intervals:
        if i.seconds <= 0:
            continue
        moved = i.counts.bytes_received if stream else i.counts.requests
        if stream and not moved:
            moved = i.counts.bytes_sent
        key = int(i.start)
        buckets[key] = buckets.get(key, 0.0) + moved / i.seconds / (1e6 if stream else 1)
    keys = sorted(buckets)
    return [k + 1.0 for k in keys], [buckets[k] for k in keys]


def plot(result: Result, path: str) -> None:
    """Draw the latency distribution and the rate over time into the PNG at ``path``.

    Raises:
        UsageError: matplotlib is not installed (``pip install 'socketeer[plot]'``).
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'socketeer[plot]'") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    s = result.settings
    figure = Figure(figsize=(8, 7.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 2))
    title = f"socketeer bench {s.mode} {s.address}: {s.connections} connections"
    if s.rate is not None:
        title += f", {_count(s.rate)}/s open loop"
    figure.suptitle(title, fontsize=10)

    curves: list[tuple[str, Histogram]] = []
    latency = result.latency
    uncorrected = result.uncorrected
    handshake = result.handshake
    if latency.count:
        if s.rate is not None and uncorrected is not None:
            curves.append(("corrected (from intended send)", latency))
            curves.append(("uncorrected", uncorrected))
        else:
            curves.append(("connection" if s.mode == "connect" else "round trip", latency))
    if handshake is not None and handshake.count:
        curves.append(("TLS handshake", handshake))
    top.set_xscale("log")
    ticks = [(2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%")]
    widest = 10.0
    slowest = max((h.max_ns for _, h in curves), default=0)
    scale, unit = (1e3, "µs") if slowest < 1e6 else (1e6, "ms")
    for name, h in curves:
        xs, ys = _curve(h, scale)
        widest = max(widest, xs[-1])
        top.plot(xs, ys, label=name)
    if widest > 1e4:
        ticks.append((1e5, "99.999%"))
    top.set_xticks([x for x, _ in ticks], [label for _, label in ticks])
    top.minorticks_off()
    top.set_xlim(1.0, max(widest, ticks[-1][0]))
    top.set_xlabel("percentile")
    top.set_ylabel(f"latency ({unit})")
    top.grid(True, which="major", alpha=0.3)
    if curves:
        top.legend(loc="upper left")
    else:
        top.text(0.5, 0.5, "no latency recorded", ha="center", transform=top.transAxes)

    xs, ys = _per_second(result)
    bottom.plot(xs, ys, marker="o", markersize=3)
    bottom.set_xlabel("seconds")
    bottom.set_ylabel({"stream": "MB/s", "connect": "connections/s"}.get(s.mode, "round trips/s"))
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    figure.savefig(path, dpi=100)
