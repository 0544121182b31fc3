"""Stats: histogram buckets, percentiles, merging, the wire form, method counters, process."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh._core.stats import (
    HistogramSnapshot,
    LatencyHistogram,
    MethodStatistics,
    MethodStats,
    ServiceStatistics,
)
from mesh._io.process import process_statistics

US = 1e-6
LAST = LatencyHistogram.BUCKETS - 1
STEP = 2**0.25  # ratio of one bucket's bounds

samples = st.floats(min_value=0.0, max_value=1000.0)
any_floats = st.floats(allow_nan=True, allow_infinity=True)


def histogram(values: list[float]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    return h


def buckets(h: LatencyHistogram) -> dict[str, int]:
    return {k: n for k, n in h.to_wire().items() if k.isdigit()}


# -- buckets --------------------------------------------------------------------------------


def test_bucket_layout() -> None:
    assert LatencyHistogram.BUCKETS == 110
    assert LatencyHistogram.bucket_bounds(0) == (0.0, 1 * US)
    assert LatencyHistogram.bucket_bounds(1) == (1 * US, STEP * US)
    assert LatencyHistogram.bucket_bounds(5)[0] == 2 * US
    assert LatencyHistogram.bucket_bounds(LAST) == (2**27 * US, math.inf)
    assert LatencyHistogram.bucket_bounds(LAST - 1)[1] == 2**27 * US
    for index in (-1, LatencyHistogram.BUCKETS):
        with pytest.raises(IndexError):
            LatencyHistogram.bucket_bounds(index)


@pytest.mark.parametrize(
    ("seconds", "index"),
    [
        (1 * US, 1),
        (2 * US, 5),
        (3 * US, 7),  # log2(3) = 1.58: octave 1, third quarter
        (1e-3, 40),  # log2(1000) = 9.97
        (1.0, 80),  # log2(1e6) = 19.93
        (0.0, 0),
        (0.5 * US, 0),
        (-1.0, 0),
        (-math.inf, 0),
        (math.nan, 0),
        (2**27 * US, LAST),
        (1e6, LAST),
        (math.inf, LAST),
    ],
)
def test_bucket_index(seconds: float, index: int) -> None:
    assert LatencyHistogram.bucket_index(seconds) == index
    assert buckets(histogram([seconds])) == {str(index): 1}


@pytest.mark.parametrize("k", range(27))
def test_exact_powers_of_two_open_a_bucket(k: int) -> None:
    power = 2**k * US
    assert LatencyHistogram.bucket_index(power) == 4 * k + 1
    below = math.nextafter(2.0**k, 0.0) * US
    assert LatencyHistogram.bucket_index(below) == 4 * k
    assert buckets(histogram([power, below])) == {str(4 * k + 1): 1, str(4 * k): 1}


@given(any_floats)
def test_record_uses_bucket_index(seconds: float) -> None:
    assert buckets(histogram([seconds])) == {str(LatencyHistogram.bucket_index(seconds)): 1}


@given(st.floats(min_value=0.0, max_value=200.0))
def test_a_sample_lies_within_its_bucket(seconds: float) -> None:
    lower, upper = LatencyHistogram.bucket_bounds(LatencyHistogram.bucket_index(seconds))
    # the bounds are exact in microseconds; seconds <-> microseconds may round by an ulp
    assert lower * (1 - 1e-12) <= seconds < upper * (1 + 1e-12)


def test_odd_samples_count_as_zero_or_the_ceiling() -> None:
    h = histogram([-5.0, math.nan])
    assert (h.count, h.total, h.max) == (2, 0.0, 0.0)
    h.record(math.inf)
    assert (h.total, h.max) == (1e9, 1e9)


# -- percentiles ----------------------------------------------------------------------------


def test_empty_histogram() -> None:
    h = LatencyHistogram()
    assert h.count == 0
    assert h.max is None
    assert h.percentile(50) is None
    assert h.snapshot() == HistogramSnapshot(0, None, None, None, None, None)
    assert h.to_wire() == {}


def test_percentiles_of_a_uniform_distribution() -> None:
    h = histogram([ms / 1000 for ms in range(1, 1001)])
    for p, expected in [(50, 0.5), (90, 0.9), (99, 0.99), (0, 0.001), (0.1, 0.001)]:
        got = h.percentile(p)
        assert got is not None
        assert expected <= got < expected * STEP, p
    assert h.percentile(100) == h.max == 1.0
    snap = h.snapshot()
    assert snap.count == 1000
    assert (snap.p50, snap.p90, snap.p99) == (h.percentile(50), h.percentile(90), h.percentile(99))
    assert snap.max == 1.0
    assert snap.mean == pytest.approx(0.5005)


def test_percentiles_never_exceed_the_largest_sample() -> None:
    h = histogram([3 * US])
    assert h.percentile(50) == h.percentile(99) == 3 * US
    h = histogram([1000.0])  # the overflow bucket has no upper bound
    assert h.percentile(50) == 1000.0


def test_percentile_ranks() -> None:
    h = histogram([1e-3] * 9 + [1.0])
    assert h.percentile(90) == LatencyHistogram.bucket_bounds(40)[1]
    assert h.percentile(90.1) == 1.0
    # out of order asks still find each rank
    assert h._percentiles((99, 10, 100)) == [1.0, h.percentile(10), 1.0]


@pytest.mark.parametrize("p", [-0.1, 100.1, math.nan])
def test_percentile_out_of_range(p: float) -> None:
    with pytest.raises(ValueError, match=r"percentile must be in 0\.\.100"):
        histogram([1.0]).percentile(p)


@given(st.lists(samples, min_size=1), st.floats(min_value=0, max_value=100))
def test_percentile_is_within_one_bucket_of_the_exact_value(values: list[float], p: float) -> None:
    got = histogram(values).percentile(p)
    exact = sorted(values)[max(1, math.ceil(p * len(values) / 100)) - 1]
    assert got is not None
    assert got <= max(values)
    _, upper = LatencyHistogram.bucket_bounds(LatencyHistogram.bucket_index(exact))
    assert exact * (1 - 1e-12) <= got <= upper * (1 + 1e-12)


# -- merging and the wire -------------------------------------------------------------------


@given(st.lists(samples), st.lists(samples))
def test_merge_equals_recording_all_samples(a: list[float], b: list[float]) -> None:
    merged = histogram(a)
    merged.merge(histogram(b))
    whole = histogram(a + b)
    assert buckets(merged) == buckets(whole)
    assert merged.count == whole.count
    assert merged.max == whole.max
    assert merged.total == pytest.approx(whole.total)
    one, other = merged.snapshot(), whole.snapshot()
    assert (one.p50, one.p90, one.p99, one.max) == (other.p50, other.p90, other.p99, other.max)


def test_merge_with_itself_doubles() -> None:
    h = histogram([1e-3, 2e-3])
    h.merge(h)
    assert buckets(h) == {"40": 2, "44": 2}
    assert h.count == 4


def test_wire_form_is_sparse() -> None:
    h = histogram([1 * US, 1 * US, 2.5 * US])
    assert h.to_wire() == {"1": 2, "6": 1, "sum_us": 4, "max_us": 2}


@given(st.lists(samples))
def test_wire_round_trip(values: list[float]) -> None:
    h = histogram(values)
    wire = h.to_wire()
    back = LatencyHistogram.from_wire(wire)
    assert back.to_wire() == wire
    assert back.count == h.count
    if values:
        assert back.max == pytest.approx(h.max, abs=0.6 * US)
        assert back.total == pytest.approx(h.total, abs=0.6 * US)
        for p in (0, 50, 90, 99, 100):
            assert back.percentile(p) == pytest.approx(h.percentile(p), abs=0.6 * US)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "expected a mapping"),
        ({"1": -1, "sum_us": 1, "max_us": 1}, "expected an unsigned integer"),
        ({"1": 1.0, "sum_us": 1, "max_us": 1}, "expected an unsigned integer"),
        ({"1": True, "sum_us": 1, "max_us": 1}, "expected an unsigned integer"),
        ({"1": 2**64, "sum_us": 1, "max_us": 1}, "expected an unsigned integer"),
        ({"1": 1, "sum_us": "1", "max_us": 1}, "expected an unsigned integer"),
        ({"110": 1, "sum_us": 1, "max_us": 1}, "unknown key"),
        ({"01": 1, "sum_us": 1, "max_us": 1}, "unknown key"),
        ({"-1": 1, "sum_us": 1, "max_us": 1}, "unknown key"),
        ({"\u0661": 1, "sum_us": 1, "max_us": 1}, "unknown key"),  # an Arabic-Indic 1
        ({1: 1, "sum_us": 1, "max_us": 1}, "unknown key"),
        ({"1": 1, "sum_us": 1, "max_us": 1, "min_us": 1}, "unknown key"),
        ({"1": 2**63, "2": 2**63, "sum_us": 1, "max_us": 1}, "more than a histogram holds"),
        ({"sum_us": 5}, "must be 0"),
        ({"1": 1}, "needs sum_us and max_us"),
        ({"1": 1, "sum_us": 1}, "needs sum_us and max_us"),
        ({"1": 1, "sum_us": 1000, "max_us": 1000}, "not in the top bucket"),
        ({"40": 1, "sum_us": 1000, "max_us": 5}, "not in the top bucket"),
        ({"40": 2, "sum_us": 500, "max_us": 1000}, "more than sum_us"),
    ],
)
def test_from_wire_rejects_bad_data(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LatencyHistogram.from_wire(data)


def test_from_wire_accepts_zero_counts() -> None:
    assert LatencyHistogram.from_wire({"3": 0, "sum_us": 0}).count == 0
    assert LatencyHistogram.from_wire({"0": 1, "sum_us": 0, "max_us": 0}).max == 0.0


# -- method counters ------------------------------------------------------------------------


def test_method_stats_count_requests_on_arrival() -> None:
    m = MethodStats()
    m.started(10.0)
    m.started(10.5)
    assert (m.requests, m.in_flight) == (2, 2)
    m.finished(11.0, 0.25)
    assert (m.requests, m.in_flight, m.errors) == (2, 1, 0)
    m.finished(12.0, 0.75)
    snap = m.snapshot()
    assert snap == MethodStatistics(
        requests=2,
        errors=0,
        timeouts=0,
        in_flight=0,
        total_time=1.0,
        latency=m.histogram.snapshot(),
        last_error=None,
        last_error_at=None,
    )
    assert snap.latency.count == 2
    assert snap.latency.max == 0.75


def test_method_stats_errors_and_timeouts() -> None:
    m = MethodStats()
    for _ in range(4):
        m.started(0.0)
    m.finished(1.0, 0.1, error="ValueError: bad")
    assert (m.errors, m.timeouts, m.last_error, m.last_error_at) == (1, 0, "ValueError: bad", 1.0)
    m.finished(2.0, 5.0, timeout=True)
    assert (m.errors, m.timeouts, m.last_error, m.last_error_at) == (2, 1, "timeout", 2.0)
    m.finished(3.0, 5.0, error="deadline 5 s", timeout=True)
    assert (m.errors, m.timeouts, m.last_error) == (3, 2, "deadline 5 s")
    m.finished(4.0, 0.1)  # a success keeps the last error
    snap = m.snapshot()
    assert (snap.requests, snap.errors, snap.timeouts, snap.in_flight) == (4, 3, 2, 0)
    assert (snap.last_error, snap.last_error_at) == ("deadline 5 s", 3.0)
    assert snap.latency.count == 4  # failed calls are timed too
    assert snap.total_time == pytest.approx(10.2)


def test_method_stats_rejected_calls_never_run() -> None:
    m = MethodStats()
    m.started(0.0)
    m.rejected(1.0, "overloaded")
    snap = m.snapshot()
    assert (snap.requests, snap.errors, snap.timeouts, snap.in_flight) == (2, 1, 0, 1)
    assert (snap.last_error, snap.last_error_at) == ("overloaded", 1.0)
    assert (snap.total_time, snap.latency.count) == (0.0, 0)


def test_finished_without_started_is_a_bug() -> None:
    m = MethodStats()
    with pytest.raises(RuntimeError, match="without a matching started"):
        m.finished(0.0, 0.1)
    assert m.snapshot() == MethodStats().snapshot()


def test_snapshots_are_frozen_and_independent() -> None:
    m = MethodStats()
    m.started(0.0)
    snap = m.snapshot()
    m.finished(1.0, 0.5)
    assert (snap.in_flight, snap.latency.count) == (1, 0)
    with pytest.raises(AttributeError):
        snap.requests = 5  # type: ignore[misc]


def test_service_statistics_totals_and_read_only_methods() -> None:
    a, b = MethodStats(), MethodStats()
    a.started(0.0)
    a.finished(1.0, 0.1, error="boom")
    b.rejected(0.0, "overloaded")
    b.rejected(0.0, "overloaded")
    methods = {"a": a.snapshot(), "b": b.snapshot()}
    service = ServiceStatistics("calc", "1.0", methods)
    assert (service.requests, service.errors) == (3, 3)
    methods.pop("a")  # the snapshot keeps its own copy
    assert set(service.methods) == {"a", "b"}
    assert isinstance(service.methods, Mapping)
    with pytest.raises(TypeError):
        service.methods["c"] = a.snapshot()  # type: ignore[index]
    assert ServiceStatistics("empty", "0").requests == 0


# -- the process ----------------------------------------------------------------------------


def test_process_statistics_are_plausible() -> None:
    stats = process_statistics()
    assert stats.cpu_seconds > 0
    assert stats.rss_bytes > 1_000_000
    assert stats.threads >= 1
    assert stats.open_fds > 0


def test_open_fds_counts_descriptors_exactly() -> None:
    before = process_statistics().open_fds
    read_end, write_end = os.pipe()
    try:
        assert process_statistics().open_fds == before + 2
    finally:
        os.close(read_end)
        os.close(write_end)
    assert process_statistics().open_fds == before
