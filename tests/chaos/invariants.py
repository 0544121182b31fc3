"""The campaign's invariants: pure functions over what the nodes reported (no sockets, no
clock). Each returns violations (strings; none means it holds) or time samples
``(t, ok)`` from which :func:`held_since` finds when it started to hold for good."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tests.lan_cluster import GONE

Sample = tuple[float, bool]


def held_since(samples: Sequence[Sample]) -> float | None:
    """Time of the first sample of the run of passing samples that reaches the last one;
    None when there is no sample or the last one fails."""
    since: float | None = None
    for t, ok in sorted(samples):
        if not ok:
            since = None
        elif since is None:
            since = t
    return since


def membership_violations(
    views: Mapping[str, Mapping[str, str] | None], live: set[str], gone: set[str]
) -> list[str]:
    """Every observer in ``views`` (its latest ``members``, name -> status; None when it
    printed none) lists exactly ``live`` alive, and each of ``gone`` not alive."""
    problems: list[str] = []
    for observer, members in sorted(views.items()):
        if members is None:
            problems.append(f"{observer}: no view")
            continue
        alive = {name for name, status in members.items() if status == "alive"}
        if missing := sorted(live - alive):
            problems.append(f"{observer}: not alive: {', '.join(missing)}")
        if extra := sorted(alive - live):
            problems.append(f"{observer}: alive but should not be: {', '.join(extra)}")
        if still := sorted(n for n in gone if members.get(n) not in GONE):
            problems.append(f"{observer}: not gone: {', '.join(still)}")
    return problems


@dataclass(frozen=True, slots=True)
class Death:
    """``observer`` listed ``name`` dead from ``start`` until ``end`` (None: to the end)."""

    observer: str
    name: str
    start: float
    end: float | None

    def __str__(self) -> str:
        lasted = "to the end" if self.end is None else f"for {self.end - self.start:.2f} s"
        return f"{self.observer} listed {self.name} dead at {self.start:.3f} {lasted}"


def false_deaths(
    lines: Iterable[tuple[str, float, Mapping[str, str]]], healthy: set[str]
) -> list[Death]:
    """View lines ``(observer, t, members)``, in time order per observer, in which a
    healthy observer lists a healthy node dead (suspect is allowed: that is what
    suspicion is for); each run of such lines is one :class:`Death`."""
    open_: dict[tuple[str, str], float] = {}
    found: list[Death] = []
    for observer, t, members in lines:
        if observer not in healthy:
            continue
        for name in healthy:
            key = (observer, name)
            dead = members.get(name) == "dead"
            if dead and key not in open_:
                open_[key] = t
            elif not dead and key in open_:
                found.append(Death(observer, name, open_.pop(key), t))
    found.extend(Death(o, n, start, None) for (o, n), start in open_.items())
    return sorted(found, key=lambda d: d.start)


@dataclass(frozen=True, slots=True)
class Call:
    """One call the load sent: who called what, when, with which deadline, and what came
    back (``answered`` None while unanswered)."""

    caller: str
    target: str
    idempotent: bool
    sent: float
    deadline: float
    answered: float | None = None
    ok: bool = False
    code: str | None = None


def late_calls(calls: Iterable[Call], now: float, slack: float, excused: set[str]) -> list[str]:
    """Calls answered later than their deadline plus ``slack``, or still unanswered at
    ``now`` past it; calls of ``excused`` callers (stopped or killed) do not count."""
    problems = []
    for c in calls:
        if c.caller in excused:
            continue
        limit = c.sent + c.deadline + slack
        if (c.answered if c.answered is not None else now) > limit:
            took = f"{c.answered - c.sent:.2f} s" if c.answered is not None else "no answer"
            problems.append(f"{c.caller} -> {c.target} at {c.sent:.3f}: {took}")
    return problems


def call_samples(calls: Iterable[Call], idempotent_only: bool = False) -> list[Sample]:
    """``(answer time, succeeded)`` for each answered call (of idempotent methods only)."""
    return [(c.answered, c.ok) for c in calls
            if c.answered is not None and (c.idempotent or not idempotent_only)]  # fmt: skip


def failure_codes(calls: Iterable[Call]) -> Counter[str]:
    """How many answered calls failed, by error code."""
    return Counter(c.code or "?" for c in calls if c.answered is not None and not c.ok)


def event_samples(
    published: Iterable[tuple[float, int]],
    received: Mapping[str, set[int]],
    subscribed: Mapping[str, float],
) -> list[Sample]:
    """For each event ``(t, n)`` of one publisher: did every subscriber (name -> time it
    subscribed; only those subscribed before ``t`` count) receive number ``n``?"""
    samples = []
    for t, n in published:
        expected = [name for name, since in subscribed.items() if since < t]
        samples.append((t, all(n in received.get(name, set()) for name in expected)))
    return samples


def group_samples(
    published: Iterable[tuple[float, int]], received: Mapping[str, Iterable[int]]
) -> tuple[list[Sample], list[int]]:
    """Queue-group items ``(t, n)``: samples (received by some member?) and the numbers
    that more than one member received (or one member twice)."""
    counts: Counter[int] = Counter()
    for numbers in received.values():
        counts.update(numbers)
    samples = [(t, counts[n] >= 1) for t, n in published]
    return samples, sorted(n for n, count in counts.items() if count > 1)


@dataclass(frozen=True, slots=True)
class JobReport:
    """The durable jobs at one moment, from the providers' log."""

    enqueued: int
    done: int
    dead: int
    pending: list[str]
    #: Keys run to the end more than once with no SIGKILL to excuse it.
    twice: list[str]
    #: Keys run again after the provider of an earlier run was killed or cut off from
    #: the sender (delivery is at least once: docs/guide-queues.md).
    again_after_fault: list[str]


def job_report(
    enqueued: Iterable[int], log: Iterable[tuple[str, int, int]], faulted: set[int]
) -> JobReport:
    """``enqueued`` job numbers; ``log`` lines ``(what, n, pid)`` with what in start, done,
    reject; ``faulted``: PIDs of providers that were SIGKILLed or cut off. A job is
    finished once done or rejected (a dead letter); ``enqueued = done + dead`` once none
    is pending."""
    wanted = set(enqueued)
    runs: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for what, n, pid in log:
        runs[n].append((what, pid))
    done = {n for n, r in runs.items() if any(w == "done" for w, _ in r)}
    dead = {n for n, r in runs.items() if any(w == "reject" for w, _ in r)} - done
    twice, again = [], []
    for n, r in sorted(runs.items()):
        starts = [pid for w, pid in r if w == "start"]
        if len(starts) < 2:
            continue
        # a run again is excused when every run but the last was on a provider faulted
        if all(pid in faulted for pid in starts[:-1]):
            again.append(f"job-{n}")
        else:
            twice.append(f"job-{n} (runs on pids {starts})")
    pending = sorted(f"job-{n}" for n in wanted - done - dead)
    return JobReport(len(wanted), len(done & wanted), len(dead & wanted), pending, twice, again)


@dataclass(frozen=True, slots=True)
class Usage:
    """One process's resources at one moment."""

    pid: int
    rss: int
    fds: int


def resource_growth(
    before: Mapping[str, Usage], after: Mapping[str, Usage], rss_margin: float, fd_margin: int
) -> list[str]:
    """Processes (same name and PID in both) whose RSS grew by more than ``rss_margin``
    (a fraction) or whose open file descriptors grew by more than ``fd_margin``."""
    problems = []
    for name, old in sorted(before.items()):
        new = after.get(name)
        if new is None or new.pid != old.pid:
            continue
        if new.rss > old.rss * (1 + rss_margin):
            problems.append(f"{name}: RSS {old.rss / 1e6:.1f} -> {new.rss / 1e6:.1f} MB")
        if new.fds > old.fds + fd_margin:
            problems.append(f"{name}: fds {old.fds} -> {new.fds}")
    return problems
