"""The chaos campaign: its invariants as pure functions, and the short campaign on a
namespace LAN (3 hosts of 2 nodes, security on, a steady load, seven faults; ~1 min).
The full campaign is ``just chaos`` (tests/chaos/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import invariants
from tests.chaos.campaign import SHORT, Campaign, assign, report
from tests.chaos.faults import nft_unavailable
from tests.chaos.invariants import Call, Usage


def test_held_since_is_the_start_of_the_last_passing_run() -> None:
    assert invariants.held_since([(1, True), (2, False), (3, True), (4, True)]) == 3
    assert invariants.held_since([(1, True), (2, False)]) is None
    assert invariants.held_since([]) is None


def test_membership_wants_exactly_the_live_alive_and_the_rest_gone() -> None:
    live, gone = {"a", "b"}, {"c"}
    good = {"a": "alive", "b": "alive", "c": "dead"}
    assert invariants.membership_violations({"a": good, "b": good}, live, gone) == []
    wrong = invariants.membership_violations(
        {"a": {"a": "alive", "b": "suspect", "c": "alive"}, "b": None}, live, gone
    )
    assert wrong == [
        "a: not alive: b",
        "a: alive but should not be: c",
        "a: not gone: c",
        "b: no view",
    ]


def test_false_deaths_are_runs_of_dead_listings_of_healthy_nodes() -> None:
    lines = [
        ("a", 1.0, {"b": "suspect", "x": "dead"}),
        ("a", 2.0, {"b": "dead"}),
        ("a", 3.0, {"b": "alive"}),
        ("b", 2.5, {"a": "dead"}),
        ("x", 2.0, {"a": "dead"}),  # not healthy: does not count
    ]
    deaths = invariants.false_deaths(lines, {"a", "b"})
    assert [(d.observer, d.name, d.start, d.end) for d in deaths] == [
        ("a", "b", 2.0, 3.0),
        ("b", "a", 2.5, None),
    ]


def test_late_and_failed_calls() -> None:
    calls = [
        Call("a", "calc.add", True, sent=0.0, deadline=1.0, answered=0.1, ok=True),
        Call("a", "calc.add", True, 0.0, 1.0, answered=2.5, ok=False, code="timeout"),
        Call("b", "calc.slow", False, 0.0, 1.0),  # no answer
        Call("z", "calc.add", True, 0.0, 1.0),  # excused caller
    ]
    late = invariants.late_calls(calls, now=3.0, slack=1.0, excused={"z"})
    assert late == ["a -> calc.add at 0.000: 2.50 s", "b -> calc.slow at 0.000: no answer"]
    assert invariants.call_samples(calls, idempotent_only=True) == [(0.1, True), (2.5, False)]
    assert invariants.failure_codes(calls) == {"timeout": 1}


def test_events_and_queue_groups() -> None:
    published = [(1.0, 0), (2.0, 1), (3.0, 2)]
    received = {"a": {0, 1, 2}, "b": {2}}
    samples = invariants.event_samples(published, received, {"a": 0.0, "b": 2.5})
    assert samples == [(1.0, True), (2.0, True), (3.0, True)]  # b subscribed at 2.5
    assert invariants.event_samples(published, received, {"a": 0.0, "b": 0.0})[1] == (2.0, False)
    group, twice = invariants.group_samples(published, {"a": [0, 2], "b": [2]})
    assert group == [(1.0, True), (2.0, False), (3.0, True)]
    assert twice == [2]


def test_jobs_enqueued_equals_done_plus_dead_and_none_twice() -> None:
    log = [("start", 0, 10), ("done", 0, 10), ("start", 9, 10), ("reject", 9, 10)]
    report_ = invariants.job_report([0, 9, 5], log, faulted=set())
    assert (report_.enqueued, report_.done, report_.dead, report_.pending) == (3, 1, 1, ["job-5"])
    again = [("start", 1, 10), ("start", 1, 11), ("done", 1, 11)]
    assert invariants.job_report([1], again, faulted={10}).again_after_fault == ["job-1"]
    assert invariants.job_report([1], again, faulted=set()).twice == [
        "job-1 (runs on pids [10, 11])"
    ]


def test_resources_grow_only_within_the_margins() -> None:
    before = {"a": Usage(1, 40_000_000, 100), "b": Usage(2, 40_000_000, 100)}
    after = {"a": Usage(1, 60_000_000, 111), "b": Usage(3, 90_000_000, 500)}  # b restarted
    assert invariants.resource_growth(before, after, 0.25, 10) == [
        "a: RSS 40.0 -> 60.0 MB",
        "a: fds 100 -> 111",
    ]


def test_services_are_spread_over_the_hosts_after_the_first() -> None:
    offered = assign(10, 3)
    assert not any(name.startswith("h1n") for name in offered)
    hosts = {name.split("n")[0] for name, services in offered.items() if "calc" in services}
    assert len(hosts) == 4
    assert sum(len(s) for s in offered.values()) == 11


@pytest.mark.lan
@pytest.mark.timeout(150)
def test_short_chaos_campaign_keeps_every_invariant(tmp_path: Path) -> None:
    reason = nft_unavailable()
    if reason is not None:
        pytest.skip(reason)
    campaign = Campaign(SHORT, tmp_path, log=lambda line: None)
    campaign.run()
    print("\n" + report(campaign))
    failed = [r for r in campaign.rows() if not r.ok]
    assert campaign.completed
    assert not failed, "\n".join(f"{r.fault}: {r.invariant}: {r.detail}" for r in failed)
    assert len(campaign.windows) == len(SHORT.faults)
    assert sum(len(w.rows) for w in campaign.windows) == 7 * len(SHORT.faults)
