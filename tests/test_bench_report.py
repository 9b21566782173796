"""The bench report: the table, the JSON document and its schema, progress, plot."""

from __future__ import annotations

import io
import json
import os
import random
import re
import select
import sys
from pathlib import Path
from typing import Any

import pytest

from socketeer.bench import report
from socketeer.bench.histogram import Histogram
from socketeer.bench.result import Counts, Interval, Result, Settings
from socketeer.errors import UsageError

from .conftest import IN_CI


def latencies(mu: float, n: int = 1_000, seed: int = 1) -> Histogram:
    rng = random.Random(seed)
    h = Histogram()
    for _ in range(n):
        h.record(int(rng.lognormvariate(mu, 0.5)))
    return h


def rr_result(*, rate: float | None = None, cpu: float = 0.3, errors: bool = False) -> Result:
    intervals = []
    for second in range(3):
        for worker in range(2):
            counts = Counts(requests=1_000, bytes_sent=64_000, bytes_received=64_000)
            if rate is not None:
                counts.late, counts.late_ns = 4, 4 * 50_000
            if errors and second == 1:
                counts.error("mismatch")
                counts.error("connect_refused", 2)
            intervals.append(
                Interval(
                    worker=worker,
                    start=float(second),
                    seconds=1.0,
                    counts=counts,
                    latency=latencies(10.5, seed=second * 2 + worker),
                    uncorrected=latencies(10.0, seed=9) if rate is not None else None,
                    cpu_seconds=cpu,
                )
            )
    settings = Settings(address="tcp://127.0.0.1:7", connections=8, workers=2, rate=rate)
    return Result(settings, intervals, connections=7, elapsed=3.0, client_cpu=cpu)


def stream_result() -> Result:
    counts = Counts(bytes_sent=2_500_000_000, bytes_received=2_500_000_000)
    settings = Settings(address="unix:/tmp/echo.sock", mode="stream", size=65_536)
    return Result(
        settings, [Interval(0, 0.0, 2.0, counts, Histogram())], connections=1, elapsed=2.0
    )


def connect_result() -> Result:
    settings = Settings(address="tls://localhost:7", mode="connect", connections=4)
    interval = Interval(
        0, 0.0, 1.0, Counts(requests=500), latencies(11.0), handshake=latencies(10.7)
    )
    return Result(settings, [interval], connections=4, elapsed=1.0)


# -- the table ------------------------------------------------------------------------


def test_table_closed_loop() -> None:
    text = report.table(rr_result())
    assert text.startswith("bench tcp://127.0.0.1:7  mode rr: 8 connections, 64 bytes, 10 s,")
    assert "closed loop" in text and "2 workers" in text
    assert re.search(r"^connections +7 of 8 requested$", text, re.M)
    assert re.search(r"^rate +2,000 round trips/s$", text, re.M)
    assert re.search(r"^errors +none$", text, re.M)
    header = next(line for line in text.splitlines() if "p99.99" in line)
    assert header.split() == ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
    row = next(line for line in text.splitlines() if line.strip().startswith("round trip "))
    assert len(row.split()) == 2 + 6 * 2  # "round trip", then a value and a unit six times
    assert "late sends" not in text and "uncorrected" not in text and "warning" not in text


def test_table_open_loop_shows_both_latencies_and_late_sends() -> None:
    text = report.table(rr_result(rate=2_000))
    assert "open loop at 2,000/s" in text
    assert "corrected (from intended send)" in text
    assert re.search(r"^  uncorrected ", text, re.M)
    assert re.search(r"^late sends +24 \(0\.4%\), 50\.0 µs late on average$", text, re.M)


def test_table_errors_by_kind_and_client_warning() -> None:
    text = report.table(rr_result(errors=True, cpu=0.97))
    assert re.search(r"^errors +6: connect_refused 4, mismatch 2$", text, re.M)
    assert "warning: the client used 97% of a core: figures are a lower bound" in text


def test_table_stream_and_connect() -> None:
    text = report.table(stream_result())
    assert "1,250.0 MB/s  (10.00 Gbit/s)" in text
    assert "latency" not in text
    text = report.table(connect_result())
    assert re.search(r"^rate +500 connections/s$", text, re.M)
    assert re.search(r"^  connection  ", text, re.M)
    assert re.search(r"^  TLS handshake  ", text, re.M)


def test_table_of_an_empty_run() -> None:
    text = report.table(Result(Settings(address="tcp://127.0.0.1:7")))
    assert "0 of 1 requested" in text and "errors       none" in text


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (850, "850 ns"),
        (1_000, "1.00 µs"),
        (12_345, "12.3 µs"),
        (999_999, "1000 µs"),
        (4_500_000, "4.50 ms"),
        (61_000_000_000, "61.0 s"),
    ],
)
def test_duration_text(ns: int, text: str) -> None:
    assert report.duration_text(ns) == text


# -- JSON and its schema --------------------------------------------------------------


def check(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """A validator for the part of JSON Schema that schema.json uses."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        check(value, root["$defs"][name], root, where)
        return
    types = schema.get("type")
    if types is not None:
        kinds = {
            "object": dict,
            "array": list,
            "string": str,
            "boolean": bool,
            "null": type(None),
            "integer": int,
            "number": (int, float),
        }
        names = types if isinstance(types, list) else [types]
        ok = any(
            isinstance(value, kinds[t]) and not (t in ("integer", "number") and value is True)
            for t in names
        )
        ok = ok and not (isinstance(value, bool) and "boolean" not in names)
        assert ok, f"{where}: {value!r} is not {types}"
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and isinstance(value, (int, float)) and value is not None:
        assert value >= schema["minimum"], where
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: {key} missing"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                check(item, props[key], root, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: unexpected {key}")
            elif isinstance(extra, dict):
                check(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            check(item, schema["items"], root, f"{where}[{n}]")


@pytest.mark.parametrize(
    "result",
    [rr_result(), rr_result(rate=2_000, errors=True), stream_result(), connect_result()],
    ids=["closed", "open", "stream", "connect"],
)
def test_json_validates_against_its_schema(result: Result) -> None:
    schema = report.schema()
    doc = report.to_json(result, {"python": "3.x", "cpus": 2})
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or Infinity
    check(json.loads(text), schema, schema)
    assert doc["schema"] == "socketeer.bench/1" == schema["properties"]["schema"]["const"]


def test_the_validator_catches_mistakes() -> None:
    schema = report.schema()
    doc = json.loads(json.dumps(report.to_json(rr_result(), {})))
    doc["result"]["rate"] = "fast"
    with pytest.raises(AssertionError, match=r"result\.rate"):
        check(doc, schema, schema)
    doc = json.loads(json.dumps(report.to_json(rr_result(), {})))
    del doc["result"]["percentiles"]["p99"]
    with pytest.raises(AssertionError, match="p99 missing"):
        check(doc, schema, schema)


def test_json_contents() -> None:
    result = rr_result(rate=2_000, errors=True)
    doc = report.to_json(result, {"python": "3.x"})
    out = doc["result"]
    assert doc["settings"]["rate"] == 2_000 and doc["environment"] == {"python": "3.x"}
    assert out["requests"] == 6_000 and out["rate"] == 2_000
    assert out["connections"] == {"requested": 8, "achieved": 7}
    assert out["errors"] == {"connect_refused": 4, "mismatch": 2} and out["error_total"] == 6
    assert out["late"] == {"count": 24, "mean_ns": 50_000}
    assert out["percentiles"]["p99"] == result.latency.percentile(99)
    assert out["percentiles"]["max"] == result.latency.max_ns
    assert out["uncorrected"]["percentiles"]["p50"] < out["percentiles"]["p50"]
    assert out["handshake"] is None
    assert len(doc["intervals"]) == 6
    assert doc["intervals"][0]["p99_ns"] == result.intervals[0].latency.percentile(99)


def test_json_histogram_encoding() -> None:
    doc = report.to_json(rr_result(), {})
    try:
        import hdrh.histogram
    except ImportError:
        if IN_CI:
            raise
        assert doc["result"]["histogram"] is None
        assert doc["result"]["histogram_format"] is None
        return
    assert doc["result"]["histogram_format"] == "hdrhistogram-v2-base64"
    decoded = hdrh.histogram.HdrHistogram.decode(doc["result"]["histogram"])
    assert decoded.get_total_count() == 6_000
    p99 = doc["result"]["percentiles"]["p99"]
    assert min(decoded.get_value_at_percentile(99), doc["result"]["latency"]["max_ns"]) == p99


def test_json_histogram_is_null_without_hdrh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hdrh", None)
    monkeypatch.setitem(sys.modules, "hdrh.histogram", None)
    out = report.to_json(rr_result(rate=1_000), {})["result"]
    assert out["histogram"] is None and out["histogram_format"] is None
    assert out["uncorrected"]["histogram"] is None
    assert out["percentiles"]["p50"] > 0


# -- progress -------------------------------------------------------------------------


def read_all(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_progress_draws_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    controller, terminal = os.openpty()
    try:
        with open(terminal, "w", encoding="utf-8", closefd=False) as stream:
            progress = report.Progress(10.0, stream=stream, min_interval=0.0)
            assert progress.live
            progress.update(Counts(requests=5_000), 42_000, 1.0)
            progress.update(requests=12_000, errors=1, p99_ns=1_500_000, elapsed=2.0)
            progress.close()
        seen = read_all(controller).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert "\r5,000 req/s  p99 42.0 µs  0 errors  1/10 s" in seen
    assert "\r6,000 req/s  p99 1.50 ms  1 error  2/10 s" in seen
    assert seen.endswith("\r\x1b[K")


def test_progress_redraws_at_most_a_few_times_a_second() -> None:
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    progress = report.Progress(None, stream=stream)
    for n in range(1, 101):
        progress.update(requests=n, elapsed=n / 1_000)
    assert stream.getvalue().count("\r") == 1
    assert stream.getvalue().endswith(" s\x1b[K")


def test_progress_is_silent_on_a_pipe() -> None:
    read, write = os.pipe()
    try:
        with open(write, "w", encoding="utf-8") as stream:
            progress = report.Progress(10.0, stream=stream, min_interval=0.0)
            assert not progress.live
            progress.update(Counts(requests=5_000), 42_000, 1.0)
            progress.close()
        assert os.read(read, 4096) == b""
    finally:
        os.close(read)


# -- plot -----------------------------------------------------------------------------

try:
    import matplotlib  # noqa: F401

    HAS_MATPLOTLIB = True
except ImportError:
    if IN_CI:
        raise
    HAS_MATPLOTLIB = False


@pytest.mark.skipif(
    not HAS_MATPLOTLIB, reason="matplotlib is not installed (pip install 'socketeer[plot]')"
)
@pytest.mark.parametrize(
    "result",
    [rr_result(rate=2_000), stream_result(), connect_result()],
    ids=["open", "stream", "connect"],
)
def test_plot_writes_a_png(result: Result, tmp_path: Path) -> None:
    path = tmp_path / "latency.png"
    report.plot(result, str(path))
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 10_000


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"socketeer\[plot\]"):
        report.plot(rr_result(), str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
