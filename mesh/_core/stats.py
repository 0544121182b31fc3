"""Counters and mergeable latency histograms behind ``statistics()`` (pure: no sockets, no clock).

The runtime owns one :class:`MethodStats` per served method and passes ``now`` in; a
:class:`LatencyHistogram` has fixed buckets, so histograms from different nodes merge by
adding counts, and :meth:`LatencyHistogram.to_wire` is small enough to gossip. Snapshots
are frozen dataclasses. What the process itself uses (CPU, memory, threads, descriptors)
is read in mesh/_io/process.py.

Buckets, in microseconds (us)::

    index 0          [0, 1 us)              also negative and NaN samples
    index 1 + 4k + j [2^(k + j/4), 2^(k + (j+1)/4)) us    for k in 0..26, j in 0..3
    index 109        [2^27 us, inf)         2^27 us = 134.217728 s

Four buckets per power of two bound the error of a percentile to 2^(1/4) (about 19 %).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import ceil, frexp, inf
from types import MappingProxyType
from typing import Final

__all__ = [
    "HistogramSnapshot",
    "LatencyHistogram",
    "MethodStatistics",
    "MethodStats",
    "ServiceStatistics",
]

_PER_OCTAVE: Final = 4
_OCTAVES: Final = 27
#: Number of buckets: the underflow bucket, 4 per octave from 1 us to 2^27 us, the overflow one.
_BUCKETS: Final = 1 + _PER_OCTAVE * _OCTAVES + 1
_LAST: Final = _BUCKETS - 1
_TOP_US: Final = float(2**_OCTAVES)
#: Larger samples (and +inf) are recorded as this many seconds (~31.7 years), so sums stay
#: finite and integral on the wire.
_CEILING: Final = 1e9
_US_MAX: Final = int(_CEILING * 1e6)
_U64_MAX: Final = 2**64 - 1

# frexp(us) = (m, e) with 0.5 <= m < 1, so us lies in the octave [2^(e-1), 2^e); comparing m
# with these picks the quarter. Bucket bounds are built from the same constants, so a
# sample exactly on a bound lands in the bucket that starts there.
_Q1: Final = 2**0.25 / 2
_Q2: Final = 2**0.5 / 2
_Q3: Final = 2**0.75 / 2


def _lower_us(index: int) -> float:
    if index == 0:
        return 0.0
    if index == _LAST:
        return _TOP_US
    octave, quarter = divmod(index - 1, _PER_OCTAVE)
    return float(2**octave) * (1.0, 2 * _Q1, 2 * _Q2, 2 * _Q3)[quarter]


_LOWER_US: Final = tuple(_lower_us(i) for i in range(_BUCKETS))
_UPPER_US: Final = (*_LOWER_US[1:], inf)
_UPPER_SECONDS: Final = tuple(u / 1e6 for u in _UPPER_US)

_SUM_KEY: Final = "sum_us"
_MAX_KEY: Final = "max_us"


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Summary of a latency histogram, in seconds; all but ``count`` are None when empty."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None


class LatencyHistogram:
    """Latency samples in fixed logarithmic buckets; see the module docstring for the layout.

    Percentiles report the upper bound of the bucket holding them, clamped to the largest
    sample, so they overstate by at most one bucket (a factor 2^(1/4)) and never exceed
    :attr:`max`. Samples below zero or NaN count as 0 s; above 1e9 s (or +inf) as 1e9 s.
    """

    __slots__ = ("_count", "_counts", "_max", "_sum")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self._count = 0
        self._sum = 0.0
        self._max = 0.0

    # -- the hot path ------------------------------------------------------------------------

    def record(self, seconds: float) -> None:
        """Add one sample."""
        # Inlined copy of bucket_index(): this runs once per call served.
        us = seconds * 1e6
        if us >= 1.0:
            if us < _TOP_US:
                m, e = frexp(us)
                # two comparisons of three: which quarter of the octave
                index = 4 * e - 3 + (m >= _Q1) if m < _Q2 else 4 * e - 1 + (m >= _Q3)
            else:
                index = _LAST
                if seconds > _CEILING:
                    seconds = _CEILING
        else:
            index = 0
            if not seconds >= 0.0:  # negative or NaN
                seconds = 0.0
        self._counts[index] += 1
        self._count += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds

    # -- buckets -----------------------------------------------------------------------------

    #: Number of buckets; indexes run from 0 to ``BUCKETS - 1``.
    BUCKETS: Final = _BUCKETS

    @staticmethod
    def bucket_index(seconds: float) -> int:
        """The bucket a sample of ``seconds`` goes to."""
        us = seconds * 1e6
        if not us >= 1.0:
            return 0
        if us >= _TOP_US:
            return _LAST
        m, e = frexp(us)
        return 4 * e - 3 + (m >= _Q1) + (m >= _Q2) + (m >= _Q3)

    @staticmethod
    def bucket_bounds(index: int) -> tuple[float, float]:
        """``(lower, upper)`` seconds of bucket ``index``: lower inclusive, upper exclusive."""
        if not 0 <= index < _BUCKETS:
            raise IndexError(f"bucket index {index} is not in 0..{_LAST}")
        return _LOWER_US[index] / 1e6, _UPPER_SECONDS[index]

    # -- reading -----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of samples."""
        return self._count

    @property
    def total(self) -> float:
        """Sum of the samples in seconds."""
        return self._sum

    @property
    def max(self) -> float | None:
        """The largest sample in seconds, None when empty."""
        return self._max if self._count else None

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0..100) in seconds, None when empty."""
        return self._percentiles((p,))[0]

    def _percentiles(self, ps: Iterable[float]) -> list[float | None]:
        ranks = []
        for p in ps:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile must be in 0..100, got {p!r}")
            # nearest rank: the smallest sample with at least p % of samples at or below it
            ranks.append(max(1, ceil(p * self._count / 100)))
        if not self._count:
            return [None] * len(ranks)
        results: list[float | None] = []
        index, cumulative = -1, 0
        for rank in ranks:
            if rank <= cumulative:  # ranks not ascending: start over
                index, cumulative = -1, 0
            while cumulative < rank:
                index += 1
                cumulative += self._counts[index]
            results.append(min(_UPPER_SECONDS[index], self._max))
        return results

    def snapshot(self) -> HistogramSnapshot:
        """Count, p50, p90, p99, max and mean, frozen."""
        if not self._count:
            return HistogramSnapshot(0, None, None, None, None, None)
        p50, p90, p99 = self._percentiles((50, 90, 99))
        return HistogramSnapshot(self._count, p50, p90, p99, self._max, self._sum / self._count)

    def __repr__(self) -> str:
        s = self.snapshot()
        return f"<LatencyHistogram count={s.count} p50={s.p50} p99={s.p99} max={s.max}>"

    # -- merging and the wire ----------------------------------------------------------------

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this histogram."""
        counts = self._counts
        for index, n in enumerate(other._counts):
            counts[index] += n
        self._count += other._count
        self._sum += other._sum
        if other._max > self._max:
            self._max = other._max

    def to_wire(self) -> dict[str, int]:
        """Sparse ``{str(bucket index): count}``, plus ``"sum_us"`` and ``"max_us"`` when not
        empty (integer microseconds, rounded); ``{}`` when empty."""
        wire = {str(i): n for i, n in enumerate(self._counts) if n}
        if self._count:
            wire[_SUM_KEY] = round(self._sum * 1e6)
            wire[_MAX_KEY] = round(self._max * 1e6)
        return wire

    @classmethod
    def from_wire(cls, data: object) -> LatencyHistogram:
        """The histogram :meth:`to_wire` described; ValueError unless ``data`` is one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"histogram: expected a mapping, got {type(data).__name__}")
        histogram = cls()
        counts = histogram._counts
        extra: dict[str, int] = {}
        for key, value in data.items():
            if type(value) is not int or not 0 <= value <= _U64_MAX:
                raise ValueError(f"histogram: {key!r}: expected an unsigned integer, got {value!r}")
            if key in (_SUM_KEY, _MAX_KEY):
                extra[key] = value
            elif _is_index(key):
                counts[int(key)] = value
            else:
                raise ValueError(f"histogram: unknown key {key!r}")
        histogram._count = count = sum(counts)
        if count > _U64_MAX:
            raise ValueError(f"histogram: {count} samples is more than a histogram holds")
        sum_us, max_us = extra.get(_SUM_KEY), extra.get(_MAX_KEY)
        if not count:
            if sum_us or max_us:
                raise ValueError("histogram: sum_us and max_us of an empty histogram must be 0")
            return histogram
        if sum_us is None or max_us is None:
            raise ValueError("histogram: a histogram with samples needs sum_us and max_us")
        top = max(i for i, n in enumerate(counts) if n)
        # the largest sample lies in the highest non-empty bucket; max_us was rounded
        if not _LOWER_US[top] - 1 <= max_us <= min(_UPPER_US[top], _US_MAX) + 1:
            raise ValueError(f"histogram: max_us {max_us} is not in the top bucket {top}")
        if max_us > sum_us:
            raise ValueError(f"histogram: max_us {max_us} is more than sum_us {sum_us}")
        histogram._sum = sum_us / 1e6
        histogram._max = max_us / 1e6
        return histogram


def _is_index(key: object) -> bool:
    """Whether ``key`` is a bucket index as :meth:`LatencyHistogram.to_wire` writes it."""
    return (
        isinstance(key, str)
        and 0 < len(key) <= 3
        and key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and int(key) < _BUCKETS
    )


@dataclass(frozen=True, slots=True)
class MethodStatistics:
    """Counters of one method (frozen snapshot of :class:`MethodStats`)."""

    #: Calls that arrived, including those rejected before running.
    requests: int
    #: Calls that failed, including timeouts and rejections.
    errors: int
    #: Calls that ran out of time (also counted in ``errors``).
    timeouts: int
    #: Calls started and not yet finished.
    in_flight: int
    #: Seconds spent in finished calls.
    total_time: float
    #: Durations of finished calls.
    latency: HistogramSnapshot
    last_error: str | None
    #: The ``now`` passed with the last error.
    last_error_at: float | None


@dataclass(slots=True, eq=False)
class MethodStats:
    """Live counters of one method, owned and updated by the runtime (not thread-safe).

    Each call is reported exactly one of two ways:

    - ``started(now)`` when it begins running, then ``finished(now, duration, ...)`` once;
    - ``rejected(now, error)`` alone, when it is refused before running (overloaded,
      shutting down): it counts as a request and an error, never enters ``in_flight`` and
      adds nothing to ``total_time`` or the histogram.
    """

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    in_flight: int = 0
    total_time: float = 0.0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    last_error: str | None = None
    last_error_at: float | None = None

    def started(self, now: float) -> None:
        """A call arrived and begins running: ``requests`` and ``in_flight`` go up."""
        self.requests += 1
        self.in_flight += 1

    def finished(
        self, now: float, duration: float, error: str | None = None, timeout: bool = False
    ) -> None:
        """A started call ended after ``duration`` seconds, failing with ``error`` if given.

        A ``timeout`` counts in both ``timeouts`` and ``errors``; its last error is
        ``error`` if given, else ``"timeout"``. RuntimeError if no call is in flight.
        """
        if self.in_flight <= 0:
            raise RuntimeError("finished() without a matching started()")
        self.in_flight -= 1
        self.total_time += duration
        self.histogram.record(duration)
        if timeout:
            self.timeouts += 1
            self._failed(now, "timeout" if error is None else error)
        elif error is not None:
            self._failed(now, error)

    def rejected(self, now: float, error: str) -> None:
        """A call was refused before running (instead of ``started``); see the class."""
        self.requests += 1
        self._failed(now, error)

    def _failed(self, now: float, error: str) -> None:
        self.errors += 1
        self.last_error = error
        self.last_error_at = now

    def snapshot(self) -> MethodStatistics:
        """The counters now, frozen."""
        return MethodStatistics(
            requests=self.requests,
            errors=self.errors,
            timeouts=self.timeouts,
            in_flight=self.in_flight,
            total_time=self.total_time,
            latency=self.histogram.snapshot(),
            last_error=self.last_error,
            last_error_at=self.last_error_at,
        )


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    """Counters of one service: its methods' statistics by name (a read-only mapping)."""

    name: str
    version: str
    methods: Mapping[str, MethodStatistics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a private copy behind a read-only view: the snapshot cannot change after the fact
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))

    @property
    def requests(self) -> int:
        """Requests of all methods."""
        return sum(m.requests for m in self.methods.values())

    @property
    def errors(self) -> int:
        """Errors of all methods."""
        return sum(m.errors for m in self.methods.values())
