"""The pure part of supervision (mesh/_core/supervision.py), without sockets or a loop: the
state machine of one service with ``now`` stepped by hand, cycle detection, dependency
order; the supervision item of a service's listing; the events derived from listings."""

from __future__ import annotations

import re

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.deps import dependency_trees, lines
from mesh import PROFILES, ConfigError, MeshError, SupervisionSettings, Timings, method, service
from mesh._core.catalog import WIRE_STATE, Record, ServiceInfo
from mesh._core.events import SystemEvents
from mesh._core.listing import MemberInfo, choose_provider
from mesh._core.supervision import (
    Crash,
    Dependency,
    Lost,
    Start,
    Stop,
    Supervised,
    dependency_order,
    find_cycle,
)
from mesh._errors import ProtocolError
from mesh._rpc.services import ServiceRegistry

SETTINGS = SupervisionSettings(
    max_restarts=3, restart_window=10.0, backoff_initial=0.1, backoff_max=0.5
)
DB = Dependency("db")
CACHE = Dependency("cache", "2")


def present(*names: str):  # type: ignore[no-untyped-def]
    return lambda d: d.service in names


def crash(text: str = "boom", at: float = 0.0) -> Crash:
    return Crash(at, f"ValueError: {text}")


# -- the state machine ---------------------------------------------------------------------


def test_a_service_without_dependencies_starts_at_once_and_is_up_once_started() -> None:
    m = Supervised("api", (), SETTINGS)
    assert m.state == "stopped"
    assert not m.offered
    assert m.begin(present(), 0.0) == [Start()]
    assert m.state == "starting"
    assert not m.offered
    assert m.started(0.1) == []
    assert (m.state, m.running, m.offered, m.restarts) == ("up", True, True, 0)


def test_a_service_waits_for_its_dependencies_then_starts() -> None:
    m = Supervised("api", (DB, CACHE), SETTINGS)
    assert m.begin(present("db"), 0.0) == []
    assert m.state == "waiting"
    assert m.missing == (CACHE,)
    assert m.dependencies(present("db"), 1.0) == []
    assert m.dependencies(present("db", "cache"), 2.0) == [Start()]
    assert m.state == "starting"
    assert m.restarts == 0


def test_crashes_restart_with_doubling_backoff_then_give_up_past_the_window_limit() -> None:
    m = Supervised("api", (), SETTINGS)
    m.begin(present(), 0.0)
    m.started(0.0)
    now = 0.0
    waits = []
    for n in range(1, SETTINGS.max_restarts + 1):
        assert m.crashed(crash(str(n)), now) == [Stop()]
        assert m.state == "restarting"
        assert not m.running
        assert m.due is not None
        waits.append(round(m.due - now, 3))
        due = m.due
        assert m.tick(present(), due - 0.001) == []  # not yet
        assert m.tick(present(), due) == [Start()]
        assert m.restarts == n
        m.started(due)
        now = due + 0.01
    assert waits == [0.1, 0.2, 0.4]
    # one crash more than max_restarts within the window: failed, stopped for good
    assert m.crashed(crash("last"), now) == [Stop()]
    assert m.state == "failed"
    assert m.due is None
    assert not m.offered
    assert m.last_crash == crash("last")
    assert m.tick(present(), now + 100) == []
    assert m.dependencies(present(), now + 100) == []


def test_crashes_that_age_out_of_the_window_never_add_up_to_a_failure() -> None:
    m = Supervised("api", (), SETTINGS)
    m.begin(present(), 0.0)
    m.started(0.0)
    now = 0.0
    for _ in range(20):  # one crash every 5 s: at most 2 within any 10 s
        m.crashed(crash(), now)
        assert m.state == "restarting"
        assert m.due is not None
        assert m.due - now <= 0.2 + 1e-9
        m.tick(present(), m.due)
        m.started(m.due)
        now += 5.0
    assert m.restarts == 20


def test_backoff_stops_growing_at_its_maximum() -> None:
    settings = SupervisionSettings(max_restarts=50, backoff_initial=0.1, backoff_max=0.5)
    m = Supervised("api", (), settings)
    m.begin(present(), 0.0)
    m.started(0.0)
    for i in range(10):
        m.crashed(crash(), i * 0.01)
        assert m.due is not None
        assert m.due - i * 0.01 <= 0.5
        m.tick(present(), m.due)
        m.started(m.due)
    assert m.backoff() == 0.5


def test_a_crash_in_start_is_restarted_without_calling_stop() -> None:
    m = Supervised("api", (), SETTINGS)
    m.begin(present(), 0.0)
    assert m.crashed(crash(), 0.0) == []  # start() never returned: nothing to stop
    assert m.state == "restarting"


def test_a_lost_dependency_degrades_and_its_return_restarts_at_once() -> None:
    m = Supervised("api", (DB, CACHE), SETTINGS)
    m.begin(present("db", "cache"), 0.0)
    m.started(0.0)
    assert m.dependencies(present("cache"), 1.0) == [Lost(DB)]
    assert m.state == "degraded"
    assert m.offered
    assert m.dependencies(present("cache"), 1.5) == []  # told once
    assert m.dependencies(present(), 2.0) == [Lost(CACHE)]
    assert m.dependencies(present("cache"), 2.5) == []  # cache is back, db is not
    assert m.state == "degraded"
    assert m.dependencies(present("db", "cache"), 3.0) == [Stop()]
    assert m.state == "restarting"
    assert m.due == 3.0
    assert m.tick(present("db", "cache"), 3.0) == [Start()]
    assert m.restarts == 1
    assert m.last_crash is None
    m.started(3.1)
    # lost again later: told again
    assert m.dependencies(present("cache"), 4.0) == [Lost(DB)]


def test_a_dependency_lost_while_starting_is_told_once_up() -> None:
    m = Supervised("api", (DB,), SETTINGS)
    m.begin(present("db"), 0.0)
    assert m.dependencies(present(), 0.5) == []  # starting: nothing to tell yet
    m.started(1.0)
    assert m.dependencies(present(), 1.0) == [Lost(DB)]


def test_a_restart_due_while_a_dependency_is_gone_waits_for_it() -> None:
    m = Supervised("api", (DB,), SETTINGS)
    m.begin(present("db"), 0.0)
    m.started(0.0)
    m.crashed(crash(), 1.0)
    assert m.due is not None
    assert m.tick(present(), m.due) == []
    assert m.state == "waiting"
    assert m.dependencies(present("db"), 5.0) == [Start()]
    assert m.restarts == 1  # this start is a restart


def test_stop_stops_what_runs_and_nothing_else() -> None:
    m = Supervised("api", (), SETTINGS)
    assert m.stop() == []
    m.begin(present(), 0.0)
    m.started(0.0)
    assert m.stop() == [Stop()]
    assert m.state == "stopped"
    assert not m.running
    assert m.crashed(crash(), 1.0) == []  # a late crash of a stopped service is no crash
    assert m.state == "stopped"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["begin", "started", "crashed", "deps", "tick", "stop"]),
            st.frozensets(st.sampled_from(["db", "cache"])),
            st.floats(0, 5),
        ),
        max_size=60,
    )
)
def test_any_sequence_keeps_the_machine_consistent(steps: list) -> None:  # type: ignore[type-arg]
    m = Supervised("api", (DB, CACHE), SETTINGS)
    now = 0.0
    starts = stops = 0
    for what, there, dt in steps:
        now += dt
        p = present(*there)
        if what == "begin":
            actions = m.begin(p, now)
        elif what == "started":
            actions = m.started(now)
        elif what == "crashed":
            actions = m.crashed(crash(), now)
        elif what == "deps":
            actions = m.dependencies(p, now)
        elif what == "tick":
            actions = m.tick(p, now)
        else:
            actions = m.stop()
        starts += actions.count(Start())
        stops += actions.count(Stop())
        assert m.state in {
            "stopped", "waiting", "starting", "up", "degraded", "restarting", "failed",
        }  # fmt: skip
        assert m.running == (m.state in ("up", "degraded"))
        assert (m.due is not None) == (m.state == "restarting")
        assert stops <= starts
        assert m.offered == (m.state in ("up", "degraded"))


# -- cycles and order ----------------------------------------------------------------------


def test_find_cycle_names_the_shortest_cycle_through_the_service() -> None:
    graph = {"api": ["db", "cache"], "db": ["disk"], "disk": ["api"], "cache": ["api"]}
    assert find_cycle(graph, "api") == ["api", "cache", "api"]
    assert find_cycle({"api": ["api"]}, "api") == ["api", "api"]
    assert find_cycle({"api": ["db"], "db": ["elsewhere"]}, "api") is None
    assert find_cycle({"api": ["db"], "db": ["cache"], "cache": ["db"]}, "api") is None


def test_dependency_order_puts_each_service_after_what_it_depends_on() -> None:
    graph = {"web": ["api"], "api": ["db", "cache", "remote"], "db": [], "cache": ["db"]}
    order = dependency_order(graph)
    assert order == ["db", "cache", "api", "web"]
    assert sorted(dependency_order({"a": ["b"], "b": ["a"], "c": []})) == ["a", "b", "c"]


def test_dependency_parse() -> None:
    assert Dependency.parse("db") == Dependency("db")
    assert Dependency.parse("cache@2.1") == Dependency("cache", "2.1")
    assert str(Dependency("cache", "2")) == "cache@2"
    for bad in ("", "db@", "db@x", "1db", "db.x", None, "db@1.2.3.4"):
        with pytest.raises(ValueError, match="a dependency is"):
            Dependency.parse(bad)


def test_the_registry_refuses_a_cycle_among_its_services_naming_it() -> None:
    @service("api", depends_on=["db"])
    class Api:
        @method
        def ping(self) -> None: ...

    @service("db", depends_on=["disk"])
    class Db:
        @method
        def ping(self) -> None: ...

    @service("disk", depends_on=["api", "other"])
    class Disk:
        @method
        def ping(self) -> None: ...

    @service("self", depends_on=["self"])
    class Self:
        @method
        def ping(self) -> None: ...

    registry = ServiceRegistry()
    registry.add(Api())
    registry.add(Db())
    with pytest.raises(MeshError, match=r"dependency cycle: disk -> api -> db -> disk"):
        registry.add(Disk())
    assert "disk" not in registry
    with pytest.raises(MeshError, match=r"dependency cycle: self -> self"):
        registry.add(Self())


def test_service_checks_depends_on() -> None:
    with pytest.raises(ValueError, match="a dependency is"):
        service("api", depends_on=["db@x"])
    with pytest.raises(TypeError, match="list of service names"):
        service("api", depends_on="db")
    with pytest.raises(ValueError, match="twice"):
        service("api", depends_on=["db", "db@2"])


def test_hooks_are_async_methods_without_arguments_and_not_exposed_methods() -> None:
    @service("worker")
    class Worker:
        async def start(self) -> None: ...
        async def run(self) -> None: ...
        def stop(self) -> None: ...  # not async: no hook

        def on_dependency_lost(self, name: str) -> None: ...

    @service("clockish")
    class Clockish:
        def start(self, node: object) -> None: ...  # takes an argument: no hook

        @method
        async def run(self) -> None: ...  # a method, not a hook

    registry = ServiceRegistry()
    spec = registry.add(Worker())  # no methods, but a run(): a background service
    assert spec.hooks.start is not None
    assert spec.hooks.run is not None
    assert spec.hooks.stop is None
    assert spec.hooks.on_dependency_lost is not None
    assert spec.supervised
    assert not spec.methods
    other = registry.add(Clockish())
    assert not other.hooks
    assert not other.supervised
    assert "run" in other.methods


# -- the listing ---------------------------------------------------------------------------


def test_a_plain_service_travels_in_four_items_as_before() -> None:
    info = ServiceInfo("calc", "1.0.0", "up")
    assert len(info.to_wire()) == 4
    assert ServiceInfo.from_wire(info.to_wire()) == info


def test_supervision_travels_in_a_fifth_item_and_item_2_says_what_old_readers_need() -> None:
    for state in ("waiting", "degraded", "restarting", "failed", "starting", "stopped"):
        info = ServiceInfo(
            "api", "1.0.0", state, (), 3, Crash(1700000000.5, "ValueError: x"), ("db", "c@2")
        )
        wire = info.to_wire()
        assert wire[2] == WIRE_STATE[state] == ("up" if state == "degraded" else "down")
        assert wire[4] == [state, 3, [1700000000.5, "ValueError: x"], ["db", "c@2"]]
        assert ServiceInfo.from_wire(wire) == info
        # an older reader: the first four items only
        assert wire[:4] == ServiceInfo("api", "1.0.0", wire[2]).to_wire()
    deps_only = ServiceInfo("api", "1.0.0", "up", depends_on=("db",))
    assert deps_only.to_wire()[4] == ["up", 0, None, ["db"]]


def test_a_state_from_a_later_version_reads_as_item_2_and_trailing_items_are_ignored() -> None:
    wire = ["api", "1.0.0", "down", [], ["hibernating", 0, None, [], "later"], "later"]
    info = ServiceInfo.from_wire(wire)
    assert info.state == "down"


@pytest.mark.parametrize(
    ("item", "where"),
    [
        (["failed", 0, None], "service.supervision: expected 4 items"),
        (["up", 0, None, []], "state 'up' is listed as 'up', not 'down'"),
        (["waiting", -1, None, []], "service.supervision[1]"),
        (["waiting", 0, [1.0], []], "service.supervision[2]: expected 2 items"),
        (["waiting", 0, [-1.0, "x"], []], "service.supervision[2][0]"),
        (["waiting", 0, None, ["db@x"]], "service.supervision[3][0]"),
        (["waiting", 0, None, ["db", "db"]], "listed twice"),
        ("waiting", "service.supervision: expected a list"),
    ],
)
def test_a_bad_supervision_item_is_a_protocol_error_naming_it(item: object, where: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(where)):
        ServiceInfo.from_wire(["api", "1.0.0", "down", [], item])


def test_unknown_states_in_item_2_are_still_refused() -> None:
    with pytest.raises(ProtocolError, match=r"service.state: expected one of up, draining, down"):
        ServiceInfo.from_wire(["api", "1.0.0", "waiting", []])


# -- routing and events from listings ------------------------------------------------------


def member(id: str, *services: ServiceInfo, status: str = "alive") -> MemberInfo:
    record = Record(id, f"n-{id}", "m", services=services, addresses={"rpc": f"tcp://h:{id}"})
    return MemberInfo(id, f"n-{id}", status, 1, "tcp://h:1", record.addresses["rpc"], record)


def test_calls_go_to_up_providers_first_then_degraded_never_waiting_or_failed() -> None:
    up = member("3", ServiceInfo("api", "1.0.0", "up"))
    degraded = member("2", ServiceInfo("api", "1.0.0", "degraded"))
    waiting = member("1", ServiceInfo("api", "1.0.0", "waiting"))
    failed = member("0", ServiceInfo("api", "1.0.0", "failed"))

    def choose(*members: MemberInfo) -> str | None:
        chosen = choose_provider(members, "api", "", lambda m: 0)
        return None if chosen is None else chosen.id

    assert choose(waiting, failed, degraded, up) == "3"
    assert choose(waiting, failed, degraded) == "2"
    assert choose(waiting, failed) is None


def test_system_events_from_another_nodes_listing() -> None:
    events = SystemEvents(local="me")

    def api(state: str, restarts: int = 0, crash: Crash | None = None) -> ServiceInfo:
        return ServiceInfo("api", "1.0.0", state, (), restarts, crash)

    def update(info: MemberInfo) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
        return [(t, d) for t, d in events.update(info.id, info)]

    assert [t for t, _ in update(member("x", api("waiting")))] == ["$mesh.node.joined"]
    assert [t for t, _ in update(member("x", api("up")))] == ["$mesh.service.up"]
    first = Crash(10.0, "ValueError: one")
    out = update(member("x", api("restarting", 0, first)))
    assert [t for t, _ in out] == ["$mesh.service.crashed", "$mesh.service.down"]
    data = out[0][1]
    assert (data["service"], data["error"], data["traceback"], data["node"]) == (
        "api", "ValueError: one", None, "n-x",
    )  # fmt: skip
    # a crash and a restart between two listings seen: both told
    second = Crash(11.0, "ValueError: two")
    out = update(member("x", api("up", 2, second)))
    assert [t for t, _ in out] == [
        "$mesh.service.crashed", "$mesh.service.restarted", "$mesh.service.up",
    ]  # fmt: skip
    assert out[1][1]["restarts"] == 2
    out = update(member("x", api("failed", 2, Crash(12.0, "ValueError: three"))))
    assert [t for t, _ in out] == [
        "$mesh.service.crashed", "$mesh.service.failed", "$mesh.service.down",
    ]  # fmt: skip
    assert out[1][1]["error"] == "ValueError: three"
    # degraded still takes calls: no down
    assert update(member("y", api("up")))
    assert update(member("y", api("degraded"))) == []
    # this node's own listing: its supervisor tells crashes itself (with the traceback)
    update(member("me", api("up")))
    assert [t for t, _ in update(member("me", api("restarting", 0, first)))] == [
        "$mesh.service.down"
    ]


# -- settings --------------------------------------------------------------------------------


def test_supervision_settings_are_checked_and_profiles_have_them() -> None:
    assert PROFILES["lan"].supervision == SupervisionSettings()
    assert PROFILES["test"].supervision.backoff_max < SupervisionSettings().backoff_max
    for bad, words in [
        ({"max_restarts": 0}, "supervision.max_restarts"),
        ({"restart_window": -1.0}, "supervision.restart_window"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "must not be more than backoff_max"),
        ({"hook_timeout": float("inf")}, "supervision.hook_timeout"),
    ]:
        with pytest.raises(ConfigError, match=words):
            SupervisionSettings(**bad)
    with pytest.raises(ConfigError, match=r"timings\.supervision"):
        Timings(1.0, 1.0, 1.0, supervision="fast")  # type: ignore[arg-type]


# -- meshctl deps ----------------------------------------------------------------------------


def test_dependency_trees_follow_constraints_and_mark_missing_and_cycles() -> None:
    crash = Crash(5.0, "ValueError: x")
    members = [
        member("1", ServiceInfo("web", "1.0.0", "up", depends_on=("api",))),
        member("2", ServiceInfo("api", "1.0.0", "degraded", (), 1, None, ("db@2", "cache"))),
        member("3", ServiceInfo("api", "1.0.0", "failed", (), 5, crash, ("db@2",))),
        member("4", ServiceInfo("db", "1.4.0", "up")),  # not 2.x: does not count
        member("5", ServiceInfo("ping", "1.0", "waiting", depends_on=("pong",))),
        member("6", ServiceInfo("pong", "1.0", "waiting", depends_on=("ping",))),
        member("7", ServiceInfo("cache", "1.0", "up"), status="dead"),  # not live
    ]
    trees = dependency_trees(members)
    assert trees is not None
    assert [t["service"] for t in trees] == ["web", "ping"]  # pong: in ping's tree
    web = trees[0]
    (api,) = web["depends_on"]
    assert api["state"] == "degraded"
    assert [p["state"] for p in api["providers"]] == ["degraded", "failed"]
    assert [(d["requires"], d["state"]) for d in api["depends_on"]] == [
        ("db@2", "missing"), ("cache", "missing"),
    ]  # fmt: skip
    ping = trees[1]
    back = ping["depends_on"][0]["depends_on"][0]
    assert (back["service"], back["cycle"], back["depends_on"]) == ("ping", True, [])
    assert dependency_trees(members, "nothing") is None
    assert [click.unstyle(line) for line in lines(trees[0])] == [
        "web  up  n-1 up",
        "└── api  degraded  n-2 degraded (1 restart), n-3 failed (5 restarts; ValueError: x)",
        "    ├── db@2  missing",
        "    └── cache  missing",
    ]
    last = click.unstyle(lines(trees[1])[-1])
    assert last == "    └── ping  waiting  n-5 waiting  (cycle: depends on a service above)"
