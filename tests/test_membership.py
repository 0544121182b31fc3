"""The membership core, pure: formulas, then one probe at a time between real cores."""

from __future__ import annotations

import math
import random

import pytest

from mesh._config import PROFILES, MembershipSettings
from mesh._core.membership import (
    LOSS_MEMORY,
    MAX_INCARNATION_JUMP,
    Ack,
    Gossip,
    Member,
    Membership,
    Nack,
    Ping,
    PingReq,
    Send,
    Status,
    Sync,
    push_pull_interval,
    retransmit_limit,
    size_of,
    suspicion_bounds,
    suspicion_timeout,
)

LAN = PROFILES["lan"].membership
TEST = PROFILES["test"].membership


# -- formulas -----------------------------------------------------------------------------


def test_profiles_follow_memberlist_lan_defaults() -> None:
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.indirect_checks, LAN.suspicion_mult) == (
        1.0,
        0.5,
        3,
        4,
    )
    local = PROFILES["local"].membership
    assert TEST.probe_interval < local.probe_interval < LAN.probe_interval
    assert TEST.probe_interval <= 0.1  # tens of milliseconds


@pytest.mark.parametrize(
    ("members", "low", "high"),
    [
        (1, 4.0, 24.0),  # log10 never below 1
        (10, 4.0, 24.0),
        (100, 8.0, 48.0),
        (1_000, 12.0, 72.0),
        (10_000, 16.0, 96.0),
    ],
)
def test_suspicion_bounds_grow_with_log_n(members: int, low: float, high: float) -> None:
    assert suspicion_bounds(LAN, members) == pytest.approx((low, high))


@pytest.mark.parametrize(
    ("confirmations", "expected", "timeout"),
    [
        (0, 2, 72.0),  # nobody agrees yet: the longest
        (1, 2, 72.0 - 60.0 * math.log(2) / math.log(3)),  # one more accuser: shorter
        (2, 2, 12.0),  # as many as expected: the shortest
        (5, 2, 12.0),  # never below it
        (0, 0, 12.0),  # nobody to confirm (tiny mesh): the shortest at once
    ],
)
def test_suspicion_timeout_shrinks_with_confirmations(
    confirmations: int, expected: int, timeout: float
) -> None:
    assert suspicion_timeout(confirmations, expected, 12.0, 72.0) == pytest.approx(timeout)


@pytest.mark.parametrize(("members", "limit"), [(1, 4), (9, 4), (10, 8), (999, 12), (1_000, 16)])
def test_retransmit_limit_grows_with_log_n(members: int, limit: int) -> None:
    assert retransmit_limit(LAN, members) == limit


@pytest.mark.parametrize(
    ("members", "interval"), [(10, 30.0), (32, 30.0), (64, 30.0), (1_000, 150.0)]
)
def test_push_pull_stretches_above_32_members(members: int, interval: float) -> None:
    assert push_pull_interval(LAN, members) == interval


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="probe_timeout"):
        MembershipSettings(probe_interval=1.0, probe_timeout=1.0)
    with pytest.raises(ValueError, match="gossip_nodes"):
        MembershipSettings(gossip_nodes=0)


# -- a few real cores, messages passed by hand ----------------------------------------------


def member(i: int) -> Member:
    return Member(f"{i:032x}", f"node-{i}", f"tcp://10.0.0.{i}:7946")


def cores(n: int, settings: MembershipSettings = LAN, now: float = 0.0) -> list[Membership]:
    everyone = [member(i) for i in range(n)]
    return [
        Membership(m, settings, random.Random(i), now, everyone) for i, m in enumerate(everyone)
    ]


def by_address(nodes: list[Membership]) -> dict[str, Membership]:
    return {n.me.address: n for n in nodes}


def deliver(
    nodes: list[Membership], sends: list[Send], now: float, drop: set[str] = frozenset()
) -> None:
    """Deliver ``sends`` and everything they cause, at ``now``, except to ``drop``."""
    table = by_address(nodes)
    queue = list(sends)
    while queue:
        send = queue.pop(0)
        if send.to in drop or send.to not in table:
            continue
        queue.extend(table[send.to].receive(send.message, now))


def tick_all(nodes: list[Membership], now: float, drop: set[str] = frozenset()) -> None:
    for node in nodes:
        if node.me.address not in drop:
            deliver(nodes, node.tick(now), now, drop)


def run(nodes: list[Membership], start: float, end: float, drop: set[str] = frozenset()) -> None:
    """Tick every node every 10 ms from ``start`` to ``end`` (messages arrive at once)."""
    steps = round((end - start) / 0.01)
    for step in range(1, steps + 1):
        tick_all(nodes, start + step * 0.01, drop)


def probe(node: Membership) -> tuple[float, Send]:
    """Tick ``node`` at its deadlines until it sends a ping: (when, the ping)."""
    for _ in range(100):
        now = node.next_deadline()
        pings = [s for s in node.tick(now) if isinstance(s.message, Ping)]
        if pings:
            return now, pings[0]
    raise AssertionError("no probe")


def status(node: Membership, other: Membership) -> Status | None:
    seen = node.get(other.id)
    return None if seen is None else seen.status


def test_a_probe_is_acked_and_accuses_nobody() -> None:
    a, b = cores(2)
    now, ping = probe(a)
    assert ping.to == b.me.address
    answer = b.receive(ping.message, now)
    assert [type(s.message) for s in answer] == [Ack]
    a.receive(answer[0].message, now)
    run([a, b], now, 5.0)
    assert status(a, b) is Status.ALIVE
    assert a.statistics.probes_failed == 0
    assert a.awareness == 0


def test_a_silent_member_is_probed_indirectly_then_suspected_then_dead() -> None:
    nodes = cores(5, TEST)
    a, silent = nodes[0], nodes[4]
    drop = {silent.me.address}
    now = 0.0
    while status(a, silent) is Status.ALIVE and now < 2.0:
        run(nodes, now, now + 0.01, drop)
        now += 0.01
    assert status(a, silent) is Status.SUSPECT
    # Relays were asked and nacked: the silence is the target's, not the prober's.
    assert sum(n.statistics.indirect_probes for n in nodes) > 0
    assert sum(n.statistics.nacks for n in nodes) > 0
    _low, high = suspicion_bounds(TEST, 5)
    run(nodes, now, now + high + 0.2, drop)
    assert all(status(n, silent) is Status.DEAD for n in nodes[:4])
    kinds = [c.kind for c in a.changes() if c.member.id == silent.id]
    assert kinds == ["suspect", "failed"]


def test_a_late_ack_is_dropped_by_sequence_number_and_the_verdict_stands() -> None:
    a, b, c = cores(3, TEST)
    now, ping = probe(a)
    target = b if ping.to == b.me.address else c
    ack = target.receive(ping.message, now)[0]
    # The ack is held back until the probe is over (relays do not answer either).
    run([a], now, now + TEST.probe_interval + 0.02)
    assert a.statistics.probes_failed == 1
    a.receive(ack.message, now + TEST.probe_interval + 0.03)
    assert a.statistics.late_acks == 1
    assert status(a, target) is Status.ALIVE  # no relay nacked: nobody was accused


def test_a_suspect_refutes_and_everyone_believes_it() -> None:
    nodes = cores(4, TEST)
    a, b = nodes[0], nodes[1]
    rumour = Member(b.id, b.me.name, b.me.address, 0, Status.SUSPECT, a.id)
    deliver(nodes, a.receive(Gossip(nodes[2].id, (rumour,)), 0.01), 0.01)
    assert status(a, b) is Status.SUSPECT
    b.receive(Gossip(a.id, (rumour,)), 0.02)  # b hears of it
    assert b.me.incarnation == 1
    assert b.statistics.refutations == 1
    run(nodes, 0.02, 0.5)
    assert all(status(n, b) is Status.ALIVE for n in nodes if n is not b)
    assert all(n.get(b.id).incarnation == 1 for n in nodes if n is not b)  # type: ignore[union-attr]
    assert any(c.kind == "alive" for c in a.changes() if c.member.id == b.id)


def test_a_suspect_that_makes_contact_is_told_and_refutes() -> None:
    """Whoever holds a member as suspect tells it so when it hears from it (at most once a
    probe interval): after a partition heals, a suspect learns of its suspicion from its
    first message out, not when some suspecting node happens to probe it."""
    nodes = cores(3, TEST)
    a, b = nodes[0], nodes[1]
    rumour = Member(b.id, b.me.name, b.me.address, 0, Status.SUSPECT, nodes[2].id)
    a.receive(Gossip(nodes[2].id, (rumour,)), 0.01)
    assert status(a, b) is Status.SUSPECT
    news = Gossip(b.id, ())  # b gossips, with nothing about itself
    [told] = [s for s in a.receive(news, 0.02) if s.to == b.me.address]
    assert a.statistics.suspects_told == 1
    assert a.receive(news, 0.03) == []  # not again within a probe interval
    for send in b.receive(told.message, 0.04):
        if send.to == a.me.address:
            a.receive(send.message, 0.04)
    assert b.me.incarnation == 1  # b refuted
    b_news = [s for s in b.tick(b.next_deadline()) if s.to == a.me.address]
    for send in b_news:
        a.receive(send.message, 0.1)
    run(nodes, 0.1, 0.6)
    assert status(a, b) is Status.ALIVE


def last_check(node: Membership, suspect: Membership, limit: float = 10.0) -> tuple[float, Send]:
    """Tick ``node`` alone (nothing it sends arrives) until a suspicion runs out and it
    pings ``suspect`` one last time: (when, that ping)."""
    now = 0.0
    while node.statistics.last_checks == 0:
        now = node.next_deadline()
        assert now < limit, "the suspicion never ran out"
        sends = node.tick(now)
        assert status(node, suspect) is Status.SUSPECT
    [check] = [
        s
        for s in sends
        if s.to == suspect.me.address
        and isinstance(s.message, Ping)
        and any(m.id == suspect.id and m.status is Status.DEAD for m in s.message.updates)
    ]
    return now, check


def test_a_suspect_reachable_when_its_time_runs_out_is_asked_once_more_and_refutes() -> None:
    """A suspicion that runs out is a death only once a last direct ping goes unanswered:
    after a partition heals, a suspect that is reachable again answers it with its
    refutation, wherever the gossip of that refutation has not reached yet."""
    a, b, c = cores(3, TEST)
    rumour = Member(b.id, b.me.name, b.me.address, 0, Status.SUSPECT, c.id)
    a.receive(Gossip(c.id, (rumour,)), 0.0)
    now, check = last_check(a, b)
    assert check.message.target == b.id
    assert rumour.id in [m.id for m in check.message.updates if m.status is Status.DEAD]
    for answer in b.receive(check.message, now):
        assert answer.to == a.me.address
        a.receive(answer.message, now + 0.001)
    assert b.me.incarnation == 1
    assert status(a, b) is Status.ALIVE
    assert a.get(b.id).incarnation == 1  # type: ignore[union-attr]
    assert "failed" not in [x.kind for x in a.changes() if x.member.id == b.id]


def second_stage(node: Membership, check: Send, limit: float = 10.0) -> tuple[float, list[Send]]:
    """Tick ``node`` until its unanswered ``check`` asks again: (when, what it sent)."""
    while True:
        now = node.next_deadline()
        assert now < limit, "the last check never asked again"
        sends = [s for s in node.tick(now) if getattr(s.message, "seq", 0) == check.message.seq]
        if sends:
            return now, sends


def test_an_unanswered_last_check_asks_again_through_relays_then_is_a_death() -> None:
    """Unanswered for a probe timeout, the check asks once more, directly and through
    relays (a lost message is not a dead member); unanswered again, it is a death."""
    a, b, c, d = cores(4, TEST)
    rumour = Member(b.id, "node-1", b.me.address, 0, Status.SUSPECT, c.id)
    a.receive(Gossip(c.id, (rumour,)), 0)
    now, check = last_check(a, b)
    wait = TEST.probe_timeout * (a.awareness + 1)
    later, second = second_stage(a, check)
    assert later == pytest.approx(now + wait)
    wait = TEST.probe_timeout * (a.awareness + 1)  # its own failed probes may raise it
    assert status(a, b) is Status.SUSPECT
    again = sorted((type(s.message).__name__, s.to) for s in second)
    assert again == sorted(
        [("Ping", b.me.address), ("PingReq", c.me.address), ("PingReq", d.me.address)]
    )
    while status(a, b) is Status.SUSPECT:
        a.tick(a.next_deadline())
    assert status(a, b) is Status.DEAD
    [failed] = [x for x in a.changes() if x.member.id == b.id and x.kind == "failed"]
    assert failed.at == pytest.approx(later + wait)
    assert a.statistics.last_checks == 1


def test_a_last_check_answered_through_a_relay_is_no_death() -> None:
    a, b, c, _d = cores(4, TEST)
    a.receive(Gossip(c.id, (Member(b.id, "node-1", b.me.address, 0, Status.SUSPECT, c.id),)), 0)
    _now, check = last_check(a, b)
    later, second = second_stage(a, check)
    [request] = [s for s in second if s.to == c.me.address]
    [ping] = c.receive(request.message, later)
    [ack] = b.receive(ping.message, later)
    [relayed] = c.receive(ack.message, later)
    a.receive(relayed.message, later + 0.001)
    # Past the second stage's deadline at the worst health score, step by step (one
    # jump would look like a stalled loop and push every deadline out): unanswered,
    # the check would have made b dead by then.
    end = later + 2 * TEST.probe_timeout * (TEST.awareness_max + 1)
    while (deadline := a.next_deadline()) < end:
        a.tick(deadline)
    assert status(a, b) is not Status.DEAD
    assert "failed" not in [x.kind for x in a.changes() if x.member.id == b.id]


def test_a_probe_unanswered_at_its_timeout_pings_again_beside_the_relays() -> None:
    """memberlist's fallback ping: a message lost once does not make a suspect."""
    a, b, c = cores(3, TEST)
    now, ping = probe(a)
    sends: list[Send] = []
    while not any(isinstance(s.message, PingReq) for s in sends):
        later = a.next_deadline()
        sends = a.tick(later)
    assert later == pytest.approx(now + TEST.probe_timeout)
    target = ping.to
    direct = [s for s in sends if s.to == target and isinstance(s.message, Ping)]
    assert [s.message.seq for s in direct] == [ping.message.seq]
    assert [type(s.message) for s in sends if s.to != target] == [PingReq]
    target_core = b if target == b.me.address else c
    [ack] = target_core.receive(direct[0].message, later)
    a.receive(ack.message, later + 0.001)
    run([a], later, later + TEST.probe_interval)
    assert a.statistics.probes_failed == 0
    assert status(a, target_core) is Status.ALIVE


def test_an_ack_without_a_refutation_keeps_the_suspect_and_asks_again_later() -> None:
    """An answer proves the suspect reachable, so no death; but only a refutation (a higher
    incarnation) makes it alive again: the suspicion starts over and ends in a new check."""
    a, b, c = cores(3, TEST)
    a.receive(Gossip(c.id, (Member(b.id, "node-1", b.me.address, 0, Status.SUSPECT, c.id),)), 0)
    now, check = last_check(a, b)
    a.receive(Ack(check.message.seq, b.id), now + 0.001)
    assert status(a, b) is Status.SUSPECT
    low, _high = suspicion_bounds(TEST, 3)
    end = now + low + TEST.probe_timeout * (TEST.awareness_max + 1)
    while a.statistics.last_checks == 1:
        later = a.next_deadline()
        assert later < end + 1.0
        sends = a.tick(later)
        assert status(a, b) is Status.SUSPECT
    assert later >= now + low
    assert a.statistics.last_checks == 2
    assert any(s.to == b.me.address and isinstance(s.message, Ping) for s in sends)


def test_a_death_heard_is_believed_only_once_the_member_fails_a_last_ping() -> None:
    """Another node's "b is dead" makes a ping b with the verdict, not a death: b answers
    with its refutation and stays alive (a partition that healed brings such deaths to
    the nodes that talked to b all along); a b that does not answer is dead."""
    a, b, c = cores(3, TEST)
    verdict = Member(b.id, b.me.name, b.me.address, 0, Status.DEAD, c.id)
    [check] = a.receive(Gossip(c.id, (verdict,)), 0.0)
    assert status(a, b) is Status.ALIVE
    assert (check.to, type(check.message)) == (b.me.address, Ping)
    for answer in b.receive(check.message, 0.001):
        a.receive(answer.message, 0.002)
    assert b.me.incarnation == 1
    assert status(a, b) is Status.ALIVE
    a.tick(1.0)
    assert status(a, b) is Status.ALIVE
    assert a.get(b.id).incarnation == 1  # type: ignore[union-attr]
    assert [x.kind for x in a.changes() if x.member.id == b.id] == []  # never dead here
    # The same verdict, and b silent: dead once asked twice (directly, then through
    # relays too), a probe timeout each.
    a2, b2, c2 = cores(3, TEST)
    a2.receive(Gossip(c2.id, (Member(b2.id, "node-1", b2.me.address, 0, Status.DEAD, c2.id),)), 0)
    a2.tick(TEST.probe_timeout * (a2.awareness + 1))
    assert status(a2, b2) is Status.ALIVE
    a2.tick(2 * TEST.probe_timeout * (a2.awareness + 1))
    assert status(a2, b2) is Status.DEAD
    assert a2.get(b2.id).by == c2.id  # type: ignore[union-attr]


def test_a_member_held_dead_that_makes_contact_is_told_and_comes_back() -> None:
    """A node stopped (SIGSTOP) past the suspicion time is dead to the others, and when it
    runs again nobody talks to it: the first message it sends is answered with its death,
    so it refutes at once instead of at the next push-pull."""
    a, b, c = cores(3, TEST)
    a.receive(Gossip(c.id, (Member(b.id, "node-1", b.me.address, 0, Status.DEAD, c.id),)), 0)
    a.tick(TEST.probe_timeout)
    a.tick(2 * TEST.probe_timeout)  # the last check went unanswered twice
    assert status(a, b) is Status.DEAD
    now = 2 * TEST.probe_timeout + 0.01
    sends = a.receive(Ping(1, b.id, b.me.address, a.id, ()), now)
    told = [s for s in sends if s.to == b.me.address and isinstance(s.message, Gossip)]
    assert told
    assert told[0].message.updates[0].status is Status.DEAD
    b.receive(told[0].message, now + 0.01)
    assert b.me.incarnation == 1
    a.receive(Gossip(b.id, (b.me,)), now + 0.02)
    assert status(a, b) is Status.ALIVE


def test_a_member_replaced_while_its_last_check_runs_is_no_death() -> None:
    """The same name and address under a new id (a restart) replaces the member at once;
    the check of the old one ends with it, and nobody is declared dead."""
    a, b, c = cores(3, TEST)
    a.receive(Gossip(c.id, (Member(b.id, "node-1", b.me.address, 0, Status.SUSPECT, c.id),)), 0)
    now, _check = last_check(a, b)
    restarted = Member("e" * 32, b.me.name, b.me.address)
    a.receive(Gossip(c.id, (restarted,)), now + 0.001)
    assert a.get(b.id) is None
    later = now + 4 * TEST.probe_timeout * (TEST.awareness_max + 1)
    while (due := a.next_deadline()) < later:
        a.tick(due)
    changes = a.changes()
    assert "replaced" in [x.kind for x in changes]
    assert [x.member.id for x in changes if x.kind == "failed"] == []
    assert a.get(restarted.id) is not None


def test_older_news_never_wins() -> None:
    a, b = cores(2, TEST)
    b.receive(Gossip(a.id, (Member(b.id, "node-1", b.me.address, 0, Status.SUSPECT, a.id),)), 0)
    assert b.me.incarnation == 1
    a.receive(Gossip(b.id, (b.me,)), 0.01)
    stale = Member(b.id, "node-1", b.me.address, 0, Status.DEAD, "x")
    a.receive(Gossip("x" * 32, (stale,)), 0.02)
    assert status(a, b) is Status.ALIVE


def test_a_ping_for_an_earlier_node_at_the_same_address_gets_no_ack() -> None:
    a, b = cores(2, TEST)
    assert b.receive(Ping(7, a.id, a.me.address, "f" * 32), 0.0) == []


def test_relays_ack_for_the_target_or_nack_in_time() -> None:
    a, relay, target = cores(3, TEST)
    request = PingReq(41, a.id, a.me.address, target.id, target.me.address)
    pings = relay.receive(request, 0.0)
    assert [(type(s.message), s.to) for s in pings] == [(Ping, target.me.address)]
    ack = target.receive(pings[0].message, 0.001)[0]
    forwarded = relay.receive(ack.message, 0.002)
    assert [(type(s.message), s.message.seq, s.to) for s in forwarded] == [(Ack, 41, a.me.address)]
    # Unanswered: a nack, before the requester's probe interval is over.
    relay.receive(PingReq(42, a.id, a.me.address, target.id, target.me.address), 0.1)
    nacks: list[Send] = []
    while not nacks:
        due = relay.next_deadline()
        nacks = [s for s in relay.tick(due) if isinstance(s.message, Nack)]
    assert due - 0.1 < TEST.probe_interval - TEST.probe_timeout
    assert [(n.message.seq, n.to) for n in nacks] == [(42, a.me.address)]


def failed_probe(nodes: list[Membership], answering: int, now: float = 0.0) -> tuple[float, Send]:
    """Tick every node each millisecond through one probe of ``nodes[0]`` whose target
    never answers and of whose relays only the first ``answering`` hear the request (and
    nack); every other message is lost. Returns (when the probe failed, its ping)."""
    a, table = nodes[0], by_address(nodes)
    failed = a.statistics.probes_failed
    ping: Send | None = None
    relays: list[Membership] = []
    while a.statistics.probes_failed == failed:
        now += 0.001
        for node in nodes:
            for send in node.tick(now):
                if node is a and isinstance(send.message, Ping) and ping is None:
                    ping = send
                elif node is a and isinstance(send.message, PingReq):
                    if len(relays) < answering:
                        relays.append(table[send.to])
                        table[send.to].receive(send.message, now)  # its ping is lost
                elif node in relays and isinstance(send.message, Nack) and send.to == a.me.address:
                    a.receive(send.message, now)
    assert ping is not None
    return now, ping


def test_a_failed_probe_with_relays_unheard_probes_again_before_accusing() -> None:
    """Relays that nack saw the target silent; relays not heard from point at messages
    being lost: the target is the next one probed, and accused only when a probe fails
    with every relay's nack."""
    nodes = cores(5, TEST)
    a = nodes[0]
    now, ping = failed_probe(nodes, answering=2)
    target = by_address(nodes)[ping.to]
    assert a.statistics.nacks == 2
    assert status(a, target) is Status.ALIVE
    _, again = failed_probe(nodes, answering=3, now=now)
    assert again.to == target.me.address  # at once, out of turn
    assert a.statistics.nacks == 5
    assert status(a, target) is Status.SUSPECT


def test_after_lost_messages_a_member_is_accused_on_a_second_failed_probe() -> None:
    """Every relay nacking a silent target means dead, unless this node saw messages
    lost lately (a probe answered only after its timeout): then a probe that fails
    that way is repeated at once, and only the second failure accuses."""
    fresh = cores(6, TEST)
    _, ping = failed_probe(fresh, answering=3)
    assert status(fresh[0], by_address(fresh)[ping.to]) is Status.SUSPECT  # no loss seen

    nodes = cores(6, TEST)
    a, table = nodes[0], by_address(nodes)
    now, ping = probe(a)
    sends: list[Send] = []
    while not any(isinstance(s.message, PingReq) for s in sends):
        now = a.next_deadline()
        sends = a.tick(now)
    [fallback] = [s for s in sends if s.to == ping.to and isinstance(s.message, Ping)]
    [ack] = table[ping.to].receive(fallback.message, now)  # the first ping was lost
    a.receive(ack.message, now)
    now, first = failed_probe(nodes, answering=3, now=now)
    target = table[first.to]
    assert status(a, target) is Status.ALIVE
    _, second = failed_probe(nodes, answering=3, now=now)
    assert second.to == first.to
    assert status(a, target) is Status.SUSPECT


def test_lost_messages_are_forgotten_after_loss_memory_probe_intervals() -> None:
    """Loss seen long ago delays no verdict: LOSS_MEMORY probe intervals of a healthy
    network later, a probe failing with every relay's nack accuses at once."""
    nodes = cores(6, TEST)
    a, table = nodes[0], by_address(nodes)
    now, ping = probe(a)
    sends: list[Send] = []
    while not any(isinstance(s.message, PingReq) for s in sends):
        now = a.next_deadline()
        sends = a.tick(now)
    [fallback] = [s for s in sends if s.to == ping.to and isinstance(s.message, Ping)]
    [ack] = table[ping.to].receive(fallback.message, now)  # the first ping was lost
    a.receive(ack.message, now)
    later = now + LOSS_MEMORY * TEST.probe_interval
    run(nodes, now, later)  # everything arrives
    _, failed = failed_probe(nodes, answering=3, now=later)
    assert status(a, table[failed.to]) is Status.SUSPECT


def test_a_suspect_is_confirmed_by_a_failed_probe_with_relays_unheard() -> None:
    """Probing again instead of accusing is for a target held alive: the suspicion of a
    suspect is out already, and this node's failed probe is its confirmation."""
    nodes = cores(6, TEST)
    a = nodes[0]
    now, ping = failed_probe(nodes, answering=2)
    target = by_address(nodes)[ping.to]
    accuser = next(n for n in nodes[1:] if n is not target)
    rumour = target.me._replace(status=Status.SUSPECT, by=accuser.id)
    a.receive(Gossip(accuser.id, (rumour,)), now)
    assert status(a, target) is Status.SUSPECT
    _, again = failed_probe(nodes, answering=2, now=now)
    assert again.to == target.me.address
    assert a.get(target.id).by == a.id  # type: ignore[union-attr]


def test_relays_are_members_held_alive_never_suspects() -> None:
    """As memberlist picks them: a suspect relay is likely silent, and a relay unheard
    from delays the verdict."""
    nodes = cores(6, TEST)
    a, silent, suspect = nodes[0], nodes[4], nodes[5]
    rumour = suspect.me._replace(status=Status.SUSPECT, by=nodes[1].id)
    a.receive(Gossip(nodes[1].id, (rumour,)), 0.0)
    drop, table = {silent.me.address, suspect.me.address}, by_address(nodes)
    asked: list[tuple[Membership, Status | None]] = []
    now = 0.0
    while now < 2.0:
        now += 0.005
        for node in nodes:
            if node.me.address not in drop:
                sends = node.tick(now)
                if node is a:
                    relays = [table[s.to] for s in sends if isinstance(s.message, PingReq)]
                    asked += [(relay, status(a, relay)) for relay in relays]
                deliver(nodes, sends, now, drop)
    assert len(asked) >= 3
    assert all(seen is Status.ALIVE for _, seen in asked)
    assert suspect not in [relay for relay, _ in asked]


def test_a_cut_off_node_doubts_itself_instead_of_accusing() -> None:
    nodes = cores(6, TEST)
    lonely = nodes[0]
    others = {n.me.address for n in nodes[1:]}
    # Nothing reaches anyone else from the lonely node, and nothing comes back.
    for step in range(1, 60):
        deliver(nodes, lonely.tick(step * 0.01), step * 0.01, drop=others)
    assert lonely.statistics.probes_failed > 0
    assert lonely.awareness > 0  # relays did not even nack: Lifeguard's local health
    assert all(status(lonely, n) is Status.ALIVE for n in nodes[1:])


def test_a_node_cut_off_for_long_comes_to_see_its_partition() -> None:
    """At the worst health score (it has failed for long) it accuses again, slowly."""
    nodes = cores(6, TEST)
    lonely = nodes[0]
    others = {n.me.address for n in nodes[1:]}
    now = 0.0
    while now < 30.0 and any(status(lonely, n) is Status.ALIVE for n in nodes[1:]):
        now += 0.01
        deliver(nodes, lonely.tick(now), now, drop=others)
    assert lonely.awareness == TEST.awareness_max
    assert all(status(lonely, n) is not Status.ALIVE for n in nodes[1:]), now
    print(f"a cut-off node saw every peer not alive after {now:.2f} s (test profile)")


def test_an_implausible_incarnation_is_refused_and_counted() -> None:
    """A member refutes by adding one: a jump near 2**64 is forged (it would leave the
    member no number to refute with), about itself or anyone."""
    a, b = cores(2)
    forged = b.me._replace(incarnation=2**64 - 1, status=Status.DEAD, by="x")
    a.receive(Gossip("x", (forged,)), 1.0)
    b.receive(Gossip("x", (forged,)), 1.0)
    assert status(a, b) is Status.ALIVE
    assert b.me.incarnation == 0
    assert b.statistics.refutations == 0
    assert a.statistics.implausible == b.statistics.implausible == 1
    step = b.me._replace(incarnation=MAX_INCARNATION_JUMP, status=Status.SUSPECT, by="x")
    a.receive(Gossip("x", (step,)), 1.0)  # within the bound: taken
    assert status(a, b) is Status.SUSPECT


def test_awareness_slows_probing_and_recovers_with_acks() -> None:
    a, b = cores(2, TEST)
    a.awareness = 3
    now, ping = probe(a)
    assert a._probe is not None
    assert a._probe.timeout_at == pytest.approx(now + 4 * TEST.probe_timeout)
    a.receive(b.receive(ping.message, now)[0].message, now)
    assert a.awareness == 2


def test_a_stalled_loop_forgives_its_stale_timers() -> None:
    a, b = cores(2, TEST)
    now, ping = probe(a)
    ack = b.receive(ping.message, now)[0]
    late = now + 1.0  # a's loop ran nothing for a second; the ack waited in the socket
    a.tick(late)
    assert a.statistics.stalls == 1
    a.receive(ack.message, late)
    assert a.statistics.probes_failed == 0
    assert a.statistics.late_acks == 0
    assert status(a, b) is Status.ALIVE


def test_disconnected_probes_now_and_judges_nothing() -> None:
    a, b, _c = cores(3, TEST)
    sends = a.disconnected(b.me.address, 0.0)
    assert [(type(s.message), s.to) for s in sends] == [(Ping, b.me.address)]
    assert status(a, b) is Status.ALIVE
    assert a.disconnected("tcp://10.9.9.9:1", 0.0) == []  # a stranger: nothing to do


def test_leaving_is_not_failing_and_is_forgotten_after_the_ttl() -> None:
    nodes = cores(4, TEST)
    a, leaver = nodes[0], nodes[3]
    deliver(nodes, leaver.leave(0.0), 0.0)
    run(nodes[:3], 0.0, 0.3)
    assert all(status(n, leaver) is Status.LEFT for n in nodes[:3])
    assert [c.kind for c in a.changes() if c.member.id == leaver.id] == ["left"]
    run(nodes[:3], 0.3, TEST.dead_ttl + 0.5)
    assert a.get(leaver.id) is None
    assert [c.kind for c in a.changes() if c.member.id == leaver.id] == ["forgotten"]


def test_a_restart_with_the_same_name_and_address_replaces_the_old_member_at_once() -> None:
    a, b = cores(2, TEST)
    reborn = Member("e" * 32, b.me.name, b.me.address)
    a.receive(Gossip(reborn.id, (reborn,)), 0.0)
    assert a.get(b.id) is None
    assert a.get(reborn.id) is not None
    assert [c.kind for c in a.changes()] == ["replaced", "joined"]
    assert a.live_count() == 2


def test_a_node_joining_through_one_seed_learns_everyone_and_everyone_learns_it() -> None:
    nodes = cores(5, TEST)
    newcomer = Membership(member(9), TEST, random.Random(9), 0.0)
    everyone = [*nodes, newcomer]
    sends = newcomer.join([nodes[0].me.address], 0.0)
    assert [type(s.message) for s in sends] == [Sync]
    deliver(everyone, sends, 0.0)
    assert newcomer.live_count() == 6
    # Gossip reaches nearly everyone at once; push-pull is the backstop for the rest.
    run(everyone, 0.0, 2.5 * TEST.push_pull_interval)
    assert all(status(n, newcomer) is Status.ALIVE for n in nodes)


def test_catalog_versions_travel_and_are_spread_only_once_held() -> None:
    a, b, _c = cores(3, TEST)
    a.set_versions(record=3)
    gossip = Gossip(a.id, (a.me,))
    b.receive(gossip, 0.0)
    adverts = b.adverts()
    assert [(x.id, x.version, x.via) for x in adverts] == [(a.id, 3, a.me.address)]
    assert [ch.kind for ch in b.changes()] == ["updated"]
    # b does not pass the news on until it holds the record...
    assert not any(
        isinstance(s.message, Gossip) for s in b.tick(b.next_deadline() + TEST.gossip_interval)
    )
    b.hold_record(a.id, 3)
    sent = b.tick(b.next_deadline() + 2 * TEST.gossip_interval)
    assert any(
        m.id == a.id and m.record == 3
        for s in sent
        if isinstance(s.message, Gossip)
        for m in s.message.updates
    )
    a.set_versions(stats=8)  # stats versions are not gossiped on their own
    assert a.me.stats == 8


def test_message_sizes_count_what_they_carry() -> None:
    m = member(1)
    empty = Gossip(m.id, ())
    full = Gossip(m.id, (m, m, m))
    assert size_of(full) - size_of(empty) == 3 * (size_of(Gossip(m.id, (m,))) - size_of(empty))
    assert size_of(Sync(m.id, m.address, (m,) * 10, True)) > 10 * len(m.id)
