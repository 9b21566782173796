"""The bench histogram: HdrHistogram's layout and percentiles, merging, overflow, bytes."""

from __future__ import annotations

import pickle
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketeer.bench.histogram import Histogram
from socketeer.errors import UsageError

from .conftest import IN_CI

try:
    import hdrh.histogram as hdrh_histogram
except ImportError:
    if IN_CI:
        raise
    hdrh_histogram = None

needs_hdrh = pytest.mark.skipif(
    hdrh_histogram is None, reason="hdrhistogram is not installed (pip install 'socketeer[bench]')"
)

LEVELS = (50, 90, 99, 99.9, 99.99)
# latencies from 1 µs to 60 s: the range kept to three digits
values = st.integers(min_value=1_000, max_value=60_000_000_000)


def exact(samples: list[int], p: float) -> int:
    """The value at percentile p of the samples, by HdrHistogram's counting rule."""
    ordered = sorted(samples)
    rank = max(1, int(p * len(ordered) / 100 + 0.5))
    return ordered[rank - 1]


def filled(samples: list[int]) -> Histogram:
    h = Histogram()
    for v in samples:
        h.record(v)
    return h


@settings(max_examples=60, deadline=None)
@given(st.lists(values, min_size=1, max_size=400), st.sampled_from(LEVELS))
def test_percentiles_within_a_tenth_of_a_percent(samples: list[int], p: float) -> None:
    h = filled(samples)
    want = exact(samples, p)
    got = h.percentile(p)
    assert want <= got <= want * 1.001
    assert h.percentile(100) == max(samples)
    assert h.percentile(0) == min(samples)
    assert h.count == len(samples)
    assert h.mean_ns == pytest.approx(sum(samples) / len(samples))


def test_heavy_tailed_samples_fixed_seed() -> None:
    rng = random.Random(20261201)
    # mostly tens of microseconds, with a Pareto tail reaching seconds
    samples = [
        int(20_000 * rng.paretovariate(1.2))
        if rng.random() < 0.05
        else int(rng.gauss(25_000, 3_000))
        for _ in range(50_000)
    ]
    samples = [max(1_000, min(s, 60_000_000_000)) for s in samples]
    h = filled(samples)
    got = h.percentiles((*LEVELS, 100))
    for p in LEVELS:
        want = exact(samples, p)
        assert abs(got[p] - want) <= want * 0.001, p
    assert got[100] == max(samples) == h.max_ns
    assert list(got.values()) == sorted(got.values())


@settings(max_examples=40, deadline=None)
@given(st.lists(values, max_size=300), st.lists(values, max_size=300))
def test_merging_equals_recording_in_one(a: list[int], b: list[int]) -> None:
    merged = filled(a)
    merged.merge(filled(b))
    assert merged == filled(a + b)
    # a sparse histogram (as it comes from a worker) merges the same way, both ways
    sparse = Histogram.from_bytes(filled(a).to_bytes())
    sparse.merge(Histogram.from_bytes(filled(b).to_bytes()))
    assert sparse == merged
    assert merged.percentiles(LEVELS) == sparse.percentiles(LEVELS)


def test_merge_refuses_another_layout() -> None:
    with pytest.raises(ValueError, match="layouts"):
        Histogram().merge(Histogram(highest_ns=1_000_000))


def test_overflow_is_counted_never_dropped() -> None:
    h = Histogram(highest_ns=10_000_000)
    for _ in range(98):
        h.record(50_000)
    h.record(20_000_000)
    h.record(30_000_000)
    assert h.count == 100
    assert h.overflow == 2
    assert h.max_ns == 30_000_000
    assert h.percentile(99) == 20_000_000  # the overflowed values are kept exactly
    assert h.percentile(100) == 30_000_000
    back = Histogram.from_bytes(h.to_bytes())
    assert back == h
    assert back.overflow == 2
    total = Histogram(highest_ns=10_000_000)
    total.merge(h)
    total.merge(back)
    assert (total.count, total.overflow) == (200, 4)


def test_values_below_lowest_and_negative() -> None:
    h = Histogram()
    h.record(0)
    h.record(300)
    h.record(-5)  # a clock can only make this by mistake: it counts as 0
    assert h.count == 3
    assert h.min_ns == 0
    assert h.max_ns == 300
    assert h.overflow == 0


def test_empty() -> None:
    h = Histogram()
    assert (h.count, h.min_ns, h.max_ns, h.mean_ns, h.percentile(99)) == (0, 0, 0, 0.0, 0)
    assert Histogram.from_bytes(h.to_bytes()) == h
    h.merge(Histogram())
    assert h.count == 0


def test_record_with_count_and_reset() -> None:
    h = Histogram()
    h.record(10_000, count=9)
    h.record(1_000_000)
    assert h.count == 10
    assert h.percentile(90) < 10_010
    assert h.percentile(95) >= 1_000_000
    h.reset()
    assert h.count == 0


def test_bytes_and_pickle_round_trip_small() -> None:
    rng = random.Random(7)
    h = filled([int(rng.lognormvariate(10, 0.5)) for _ in range(20_000)])
    data = h.to_bytes()
    assert Histogram.from_bytes(data) == h
    again = pickle.loads(pickle.dumps(h))
    assert again == h
    assert again.percentiles(LEVELS) == h.percentiles(LEVELS)
    # sparse: far smaller than the 27,648 counts of the full layout
    assert len(pickle.dumps(h)) < 8_000
    again.record(5_000)  # a rebuilt histogram records like any other
    assert again.count == h.count + 1


def test_from_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a histogram"):
        Histogram.from_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a histogram"):
        Histogram.from_bytes(b"X" * 64)
    with pytest.raises(ValueError, match="truncated or damaged"):
        Histogram.from_bytes(filled([5_000, 7_000]).to_bytes()[:-1])


def test_record_is_cheap() -> None:
    h = Histogram()
    record = h.record
    samples = [1_000 + (i * 7919) % 5_000_000 for i in range(100_000)]
    start = time.perf_counter()
    for v in samples:
        record(v)
    elapsed = time.perf_counter() - start
    assert h.count == 100_000
    assert elapsed < 0.5, f"100,000 records took {elapsed:.3f} s"


def test_hgrm_text() -> None:
    h = filled([10_000, 20_000, 30_000, 40_000] * 25)
    text = h.output_hgrm()
    lines = text.splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert lines[2].split()[:3] == ["10.007", "0.000000000000", "25"]  # 10 µs: its bucket's top
    assert lines[-4].split()[1:] == ["1.000000000000", "100"]
    assert lines[-2].startswith("#[Max     =       40.000, Total count    =          100]")
    assert lines[-1].split()[-1] == "2048]"


@needs_hdrh
def test_encoding_reads_back_with_hdrh() -> None:
    assert hdrh_histogram is not None
    rng = random.Random(3)
    samples = [int(rng.lognormvariate(11, 1.2)) for _ in range(30_000)]
    h = filled([*samples, 90_000_000_000])  # one overflowed value, kept in the encoding
    decoded = hdrh_histogram.HdrHistogram.decode(h.encode())
    assert decoded.get_total_count() == h.count
    for p in LEVELS:
        assert min(decoded.get_value_at_percentile(p), h.max_ns) == h.percentile(p)
    assert decoded.values_are_equivalent(decoded.get_max_value(), h.max_ns)


@needs_hdrh
def test_hgrm_text_matches_hdrh() -> None:
    import io

    assert hdrh_histogram is not None
    rng = random.Random(5)
    h = filled([int(rng.lognormvariate(10, 1)) for _ in range(5_000)])
    out = io.BytesIO()
    hdrh_histogram.HdrHistogram.decode(h.encode()).output_percentile_distribution(out, 1000)
    theirs = out.getvalue().decode().splitlines()
    ours = h.output_hgrm().splitlines()
    # the distribution rows are the same; the footers differ only in hdrh's wording
    assert ours[: len(ours) - 3] == theirs[: len(theirs) - 3]


def test_encode_without_hdrh_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "hdrh", None)
    monkeypatch.setitem(sys.modules, "hdrh.histogram", None)
    with pytest.raises(UsageError, match=r"socketeer\[bench\]"):
        Histogram().encode()
