"""A latency histogram in HdrHistogram's layout, cheap enough to record every request.

Values are integer nanoseconds (differences of ``time.perf_counter_ns()``). The
layout is HdrHistogram's: buckets that double in width, each split into
``2 ** ceil(log2(2 * 10 ** significant))`` sub-buckets, so every value from
``lowest_ns`` to ``highest_ns`` is kept to ``significant`` decimal digits (with
the defaults: 3 digits, 0.1%, from 1 µs to 60 s). To give 1 µs its three
digits the finest unit is ``lowest_ns / 10 ** significant`` rounded down to a
power of two (1 ns with the defaults); values below ``lowest_ns`` land in the
first bucket at that unit. Values above ``highest_ns`` are not dropped: they are
kept exactly, counted in ``overflow`` and in ``count``, and reach ``max_ns`` and
the top percentiles.

``record`` is a handful of integer operations on a preallocated list; nothing is
allocated per call. ``to_bytes`` / ``from_bytes`` (and pickle, through them)
carry only the non-zero buckets, so a worker's second crosses a pipe in a few
kilobytes; a histogram rebuilt from bytes keeps its counts sparse. ``encode``
writes HdrHistogram's standard compressed base64 form with the optional
``hdrhistogram`` package, so other HdrHistogram tools read it; ``output_hgrm``
writes the standard ``.hgrm`` percentile distribution text without it.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from operator import add
from typing import Any

from ..errors import UsageError

__all__ = ["Histogram"]

_MAGIC = b"SBH1"
# then, deflated: bucket index gaps, counts, overflow values, overflow counts
# magic, significant, index item size, count item size, pad,
# lowest, highest, min, max, sum (16 bytes), buckets, overflow entries
_HEADER = struct.Struct("<4sBBBxqqqq16sII")
_NO_MIN = 1 << 64  # above any latency: the first value recorded replaces it


class Histogram:
    """Counts of integer-nanosecond values in HdrHistogram buckets."""

    __slots__ = (
        "_counts",
        "_half_mag",
        "_highest",
        "_lowest",
        "_mag",
        "_mask",
        "_max",
        "_min",
        "_overflow",
        "_overflow_count",
        "_shift",
        "_significant",
        "_sub_count",
        "_sum",
        "_total",
        "bucket_count",
        "counts_len",
    )

    def __init__(
        self,
        lowest_ns: int = 1_000,
        highest_ns: int = 60_000_000_000,
        significant: int = 3,
    ) -> None:
        self._layout(lowest_ns, highest_ns, significant)
        self._counts: list[int] | defaultdict[int, int] = [0] * self.counts_len

    def _layout(self, lowest_ns: int, highest_ns: int, significant: int) -> None:
        if not 1 <= significant <= 5:
            raise ValueError("significant digits must be 1 to 5")
        if lowest_ns < 1 or highest_ns < 2 * lowest_ns:
            raise ValueError("need 1 <= lowest_ns and 2 * lowest_ns <= highest_ns")
        self._lowest = lowest_ns
        self._highest = highest_ns
        self._significant = significant
        scale: int = 10**significant
        unit = max(1, lowest_ns // scale)
        self._mag = unit.bit_length() - 1  # the finest unit is 2 ** _mag ns
        sub_count_mag = (2 * scale - 1).bit_length()
        self._half_mag = sub_count_mag - 1
        self._sub_count = 1 << sub_count_mag
        self._mask = (self._sub_count - 1) << self._mag
        self._shift = self._mag + sub_count_mag
        buckets = 1
        untrackable = self._sub_count << self._mag
        while untrackable <= highest_ns:
            untrackable <<= 1
            buckets += 1
        self.bucket_count = buckets
        self.counts_len = (buckets + 1) << self._half_mag
        self._total = 0  # in-range values; overflow is counted apart
        self._sum = 0
        self._min = _NO_MIN
        self._max = -1
        self._overflow: dict[int, int] = {}
        self._overflow_count = 0

    # -- recording ------------------------------------------------------------------

    def record(self, value_ns: int, count: int = 1) -> None:
        """Count ``value_ns`` (``count`` times): the per-request hot path."""
        if value_ns > self._highest or value_ns < 0:
            self._record_outside(value_ns, count)
            return
        b = (value_ns | self._mask).bit_length() - self._shift
        self._counts[(b << self._half_mag) + (value_ns >> (b + self._mag))] += count
        # plain comparisons: cheaper than calls to max() and min() on this path
        if value_ns > self._max:  # noqa: PLR1730
            self._max = value_ns
        if value_ns < self._min:  # noqa: PLR1730
            self._min = value_ns
        self._total += count
        self._sum += value_ns * count

    def _record_outside(self, value_ns: int, count: int) -> None:
        if value_ns < 0:  # a clock step cannot make a latency negative: count it as 0
            self.record(0, count)
            return
        self._overflow[value_ns] = self._overflow.get(value_ns, 0) + count
        self._overflow_count += count
        self._sum += value_ns * count
        self._max = max(self._max, value_ns)
        self._min = min(self._min, value_ns)

    def reset(self) -> None:
        """Forget every value, keeping the layout (and a dense list of counts)."""
        self._layout(self._lowest, self._highest, self._significant)
        self._counts = [0] * self.counts_len

    def merge(self, other: Histogram) -> None:
        """Add every value ``other`` counted (the same layout is required)."""
        if (other._lowest, other._highest, other._significant) != (
            self._lowest,
            self._highest,
            self._significant,
        ):
            raise ValueError("cannot merge histograms of different layouts")
        if other.count == 0:
            return
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        counts, theirs = self._counts, other._counts
        if isinstance(counts, list) and isinstance(theirs, list):
            lo, hi = other._index_range()
            if lo <= hi:
                counts[lo : hi + 1] = map(add, counts[lo : hi + 1], theirs[lo : hi + 1])
        else:
            for index, c in other._buckets():
                counts[index] += c
        self._total += other._total
        self._sum += other._sum
        for value, c in other._overflow.items():
            self._overflow[value] = self._overflow.get(value, 0) + c
        self._overflow_count += other._overflow_count

    # -- reading --------------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many values were recorded, overflow included."""
        return self._total + self._overflow_count

    @property
    def overflow(self) -> int:
        """How many values were above ``highest_ns`` (kept exactly, never dropped)."""
        return self._overflow_count

    @property
    def min_ns(self) -> int:
        """The smallest value recorded (0 when empty)."""
        return self._min if self.count else 0

    @property
    def max_ns(self) -> int:
        """The largest value recorded, overflow included (0 when empty)."""
        return self._max if self.count else 0

    @property
    def mean_ns(self) -> float:
        """The exact mean of the recorded values (0.0 when empty)."""
        total = self.count
        return self._sum / total if total else 0.0

    @property
    def lowest_ns(self) -> int:
        return self._lowest

    @property
    def highest_ns(self) -> int:
        return self._highest

    @property
    def significant(self) -> int:
        return self._significant

    @property
    def unit_ns(self) -> int:
        """The finest resolution of the layout (HdrHistogram's lowest discernible value)."""
        return 1 << self._mag

    def _index_of(self, value: int) -> int:
        b = (value | self._mask).bit_length() - self._shift
        return (b << self._half_mag) + (value >> (b + self._mag))

    def _bounds(self, index: int) -> tuple[int, int]:
        """The lowest and the highest value that bucket ``index`` holds."""
        b = (index >> self._half_mag) - 1
        sub = (index & ((1 << self._half_mag) - 1)) + (1 << self._half_mag)
        if b < 0:
            sub -= 1 << self._half_mag
            b = 0
        shift = b + self._mag
        return sub << shift, ((sub + 1) << shift) - 1

    def _index_range(self) -> tuple[int, int]:
        if self._total == 0:
            return 0, -1
        hi = self.counts_len - 1 if self._max > self._highest else self._index_of(self._max)
        return self._index_of(self._min), hi

    def _buckets(self) -> Iterator[tuple[int, int]]:
        """(index, count) of every non-zero in-range bucket, in index order."""
        counts = self._counts
        if isinstance(counts, list):
            lo, hi = self._index_range()
            for index in range(lo, hi + 1):
                c = counts[index]
                if c:
                    yield index, c
        else:
            for index in sorted(counts):
                c = counts[index]
                if c:
                    yield index, c

    def _steps(self) -> Iterator[tuple[int, int]]:
        """(highest value, count) of each non-zero bucket, overflow values last."""
        for index, c in self._buckets():
            yield self._bounds(index)[1], c
        for value in sorted(self._overflow):
            yield value, self._overflow[value]

    def percentile(self, p: float) -> int:
        """HdrHistogram's value at percentile ``p`` (0..100), in nanoseconds.

        The highest value equivalent to (in the same bucket as) the value that
        reaches ``p`` percent of the count, never above ``max_ns``;
        ``percentile(100)`` is ``max_ns`` and ``percentile(0)`` is ``min_ns``.
        0 when nothing was recorded.
        """
        return self.percentiles([p])[p]

    def percentiles(self, ps: Iterable[float]) -> dict[float, int]:
        """``percentile`` for several levels in one pass, keyed in ascending order."""
        wanted = sorted(set(ps))
        for p in wanted:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile {p} is not in 0..100")
        total = self.count
        result: dict[float, int] = {}
        if total == 0:
            return dict.fromkeys(wanted, 0)
        pending = []
        for p in wanted:
            if p == 0:
                result[p] = self._min
            elif p == 100:
                result[p] = self._max
            else:
                pending.append((p, max(1, int(p * total / 100 + 0.5))))
        seen = 0
        i = 0
        if pending:
            for value, c in self._steps():
                seen += c
                while i < len(pending) and seen >= pending[i][1]:
                    result[pending[i][0]] = min(value, self._max)
                    i += 1
                if i == len(pending):
                    break
        return {p: result[p] for p in wanted}

    # -- serialising ----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The layout and the non-zero buckets only: little-endian arrays, deflated.

        Bucket indexes are stored as gaps from the previous one, so with the
        counts they compress to a few bytes per bucket.
        """
        buckets = list(self._buckets())
        gaps = array("I", [i for i, _ in buckets])
        for k in range(len(gaps) - 1, 0, -1):
            gaps[k] -= gaps[k - 1]
        largest = max((c for _, c in buckets), default=0)
        counts = array("I" if largest < 1 << 32 else "Q", [c for _, c in buckets])
        over_values = array("Q", sorted(self._overflow))
        over_counts = array("Q", [self._overflow[v] for v in over_values])
        parts = [gaps, counts, over_values, over_counts]
        if sys.byteorder == "big":
            for part in parts:
                part.byteswap()
        header = _HEADER.pack(
            _MAGIC,
            self._significant,
            gaps.itemsize,
            counts.itemsize,
            self._lowest,
            self._highest,
            self.min_ns,
            self.max_ns,
            self._sum.to_bytes(16, "little"),
            len(buckets),
            len(over_values),
        )
        return header + zlib.compress(b"".join(part.tobytes() for part in parts), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Histogram:
        """The histogram ``to_bytes`` wrote (its counts kept sparse)."""
        histogram = cls.__new__(cls)
        histogram._load(data)
        return histogram

    def _load(self, data: bytes) -> None:
        try:
            (
                magic,
                significant,
                index_size,
                count_size,
                lowest,
                highest,
                low,
                high,
                total,
                n,
                m,
            ) = _HEADER.unpack_from(data)
        except struct.error as exc:
            raise ValueError("not a histogram: too short") from exc
        if magic != _MAGIC:
            raise ValueError("not a histogram: bad magic")
        codes = {2: "H", 4: "I", 8: "Q"}
        if index_size not in codes or count_size not in codes:
            raise ValueError("not a histogram: bad item size")
        self._layout(lowest, highest, significant)
        try:
            body = zlib.decompress(data[_HEADER.size :])
        except zlib.error as exc:
            raise ValueError("not a histogram: truncated or damaged") from exc
        offset = 0
        parts = []
        for code, length in ((codes[index_size], n), (codes[count_size], n), ("Q", m), ("Q", m)):
            part = array(code)
            end = offset + part.itemsize * length
            if end > len(body):
                raise ValueError("not a histogram: truncated or damaged")
            part.frombytes(body[offset:end])
            if sys.byteorder == "big":
                part.byteswap()
            parts.append(part)
            offset = end
        gaps, counts, over_values, over_counts = parts
        sparse: defaultdict[int, int] = defaultdict(int)
        index = 0
        for gap, c in zip(gaps, counts, strict=True):
            index += gap
            sparse[index] = c
        if index >= self.counts_len:
            raise ValueError("not a histogram: bucket out of range")
        self._counts = sparse
        self._total = sum(counts)
        self._overflow = dict(zip(over_values, over_counts, strict=True))
        self._overflow_count = sum(over_counts)
        self._min, self._max = (low, high) if self.count else (_NO_MIN, -1)
        self._sum = int.from_bytes(total, "little")

    def __getstate__(self) -> bytes:
        return self.to_bytes()

    def __setstate__(self, state: bytes) -> None:
        self._load(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            (self._lowest, self._highest, self._significant)
            == (other._lowest, other._highest, other._significant)
            and (self.count, self.min_ns, self.max_ns, self._sum)
            == (other.count, other.min_ns, other.max_ns, other._sum)
            and list(self._buckets()) == list(other._buckets())
            and self._overflow == other._overflow
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Histogram(count={self.count}, min_ns={self._min}, max_ns={self._max}, "
            f"p50={self.percentile(50)}, p99={self.percentile(99)})"
        )

    # -- standard HdrHistogram output -----------------------------------------------

    def _hdrh(self) -> Any:
        try:
            import hdrh.histogram  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise UsageError(
                "the HdrHistogram encoding needs the hdrhistogram package: "
                "pip install 'socketeer[bench]'"
            ) from None
        highest = max(self._highest, self._max)
        h = hdrh.histogram.HdrHistogram(1 << self._mag, highest, self._significant)
        for index, c in self._buckets():
            h.record_value(self._bounds(index)[0], c)
        for value, c in self._overflow.items():
            h.record_value(value, c)
        return h

    def encode(self) -> str:
        """HdrHistogram's compressed base64 encoding (V2), read by any HdrHistogram tool.

        Needs the optional ``hdrhistogram`` package (``socketeer[bench]``).
        """
        encoded: bytes = self._hdrh().encode()
        return encoded.decode("ascii")

    def output_hgrm(self, unit_ns: float = 1_000.0, ticks_per_half_distance: int = 5) -> str:
        """The standard ``.hgrm`` percentile distribution, values in ``unit_ns`` (µs).

        The same text as HdrHistogram's ``outputPercentileDistribution``
        (what wrk2 and HdrHistogram's plotter read); no optional package needed.
        """
        digits = self._significant
        lines = [
            f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}",
            "",
        ]
        total = self.count
        if total:
            steps = list(self._steps())
            level = 0.0
            seen = 0
            for n, (value, c) in enumerate(steps):
                seen += c
                shown = value / unit_ns
                last = n == len(steps) - 1
                while 100.0 * seen / total >= level:
                    lines.append(
                        f"{shown:12.{digits}f} {level / 100:2.12f} {seen:10d} "
                        f"{1 / (1 - level / 100):14.2f}"
                    )
                    gap = 100.0 - level
                    level += 100.0 / (ticks_per_half_distance * 2 ** (math.log2(100 / gap) + 1))
                    if last:
                        break
                if last:
                    lines.append(f"{shown:12.{digits}f} {1.0:2.12f} {seen:10d}")
        mean = self.mean_ns
        variance = 0.0
        for index, c in self._buckets():
            low, high = self._bounds(index)
            variance += c * (low + (high + 1 - low) / 2 - mean) ** 2
        for value, c in self._overflow.items():
            variance += c * (value - mean) ** 2
        stddev = (variance / total) ** 0.5 if total else 0.0
        lines.append(
            f"#[Mean    = {mean / unit_ns:12.{digits}f}, StdDeviation   = "
            f"{stddev / unit_ns:12.{digits}f}]"
        )
        lines.append(
            f"#[Max     = {self._max / unit_ns:12.{digits}f}, Total count    = {total:12d}]"
        )
        lines.append(
            f"#[Buckets = {self.bucket_count:12d}, SubBuckets     = {self._sub_count:12d}]"
        )
        return "\n".join(lines) + "\n"
