"""Real node processes on this machine start together and converge:
``python -m tests.converge [--nodes 30] [--profile local] [--discovery zeroconf|seeds]
[--quiet S] [--json] [--time-limit S]``.

Starts ``--nodes`` processes of ``tests.lan_node`` at once, all on 127.0.0.1, in a mesh
of their own (``converge-PID``): with ``--discovery zeroconf`` they find each other by
zeroconf on the interface 127.0.0.1 only; with ``seeds`` (no zeroconf) every node has
the first node's address as its seed (a port chosen before the start). Each node
prints its view (members and their status, gossip bytes sent) whenever it changes and
at least every 0.5 s, stamped with ``time.time()``.

- **converged**: from the moment this process starts the first node to the first view,
  on every node, that lists all the nodes alive (the latest of those views); also from
  the last node's ``ready`` line, which leaves out the start of Python.
- **quiet window** (``--quiet`` seconds after convergence): gossip bytes sent per node
  per second, the CPU the nodes use (per node, % of one CPU), and views that did not
  list everyone alive (there should be none: nothing failed).
- CPU of all the nodes from their start to convergence (starting Python and importing
  mesh is most of it).

Exit 1 when the nodes do not converge within ``--time-limit`` or a view in the quiet
window lists a node not alive. Every process is ended by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from tests.bench._harness import counted, time_limit
from tests.procstat import usage
from tests.programs import node_env, node_program, read_any, spawner

#: Discovery modes.
MODES = ("zeroconf", "seeds")


@dataclass(frozen=True)
class Convergence:
    """What one run measured (seconds, bytes, CPU seconds, % of one CPU)."""

    nodes: int
    profile: str
    discovery: str
    #: From the first spawn to every node listing all alive.
    converged_s: float
    #: From the last node's ready line to every node listing all alive.
    converged_after_ready_s: float
    #: From the first spawn to the last ready line.
    started_s: float
    #: CPU seconds of all the nodes together, from their start to convergence.
    cpu_to_converge_s: float
    quiet_s: float
    gossip_bytes_per_node_s: float
    cpu_per_node_percent: float
    #: Views in the quiet window that did not list every node alive.
    unconverged_views: int
    exit_codes: list[int]
    #: The machine's load average (1 minute) at the end: figures under load differ.
    load_average: float

    @property
    def ok(self) -> bool:
        return self.unconverged_views == 0 and all(code == 0 for code in self.exit_codes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _envs(nodes: int, profile: str, discovery: str) -> list[dict[str, str]]:
    common = {
        "MESH_NAME": f"converge-{os.getpid()}",
        "MESH_PROFILE": profile,
        "MESH_HOST": "127.0.0.1",
    }
    seed_port = None
    if discovery == "zeroconf":
        common.update(MESH_DISCOVERY="on", MESH_INTERFACE="127.0.0.1")
    else:
        seed_port = _free_port()
        common.update(MESH_DISCOVERY="off", MESH_SEEDS=f"tcp://127.0.0.1:{seed_port}")
    envs = [node_env(MESH_NODE_NAME=f"n{i:02}", **common) for i in range(nodes)]
    if seed_port is not None:
        envs[0]["MESH_PORT"] = str(seed_port)
    return envs


def _drain_until_exit(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Read (and forget) what ``procs`` print until they all exit or ``timeout`` passes: a
    node blocked writing to a full pipe would never see its SIGTERM."""
    deadline = time.monotonic() + timeout
    running = procs
    while running and time.monotonic() < deadline:
        with contextlib.suppress(EOFError):  # one exited: read_any reaped it
            read_any(running, 0.1)
        running = [proc for proc in running if proc.poll() is None]


def run(
    nodes: int = 30,
    profile: str = "local",
    discovery: str = "zeroconf",
    quiet: float = 5.0,
    stderr_dir: Path | None = None,
    timeout: float = 120.0,
) -> Convergence:
    """Start the nodes, wait until they converge, watch them for ``quiet`` seconds, stop
    them; TimeoutError if they have not converged within ``timeout`` seconds."""
    names = {f"n{i:02}" for i in range(nodes)}
    envs = _envs(nodes, profile, discovery)
    with ExitStack() as stack:
        start = time.time()
        procs = []
        for i, env in enumerate(envs):
            errors: IO[bytes] | int = subprocess.DEVNULL
            if stderr_dir is not None:
                errors = stack.enter_context(open(stderr_dir / f"n{i:02}.err", "wb"))
            procs.append(stack.enter_context(node_program("tests.lan_node", env, spawner(errors))))
        role = {proc.pid: i for i, proc in enumerate(procs)}
        ready: dict[int, float] = {}
        converged: dict[int, float] = {}
        last_view: dict[int, dict[str, Any]] = {}

        def everyone_alive(view: dict[str, Any]) -> bool:
            members = view["members"]
            return set(members) == names and all(s == "alive" for s in members.values())

        def read(until: float) -> dict[str, Any] | None:
            found = read_any(procs, max(0.0, until - time.monotonic()))
            if found is None:
                return None
            proc, line = found
            i = role[proc.pid]
            if line["event"] == "ready":
                ready[i] = line["t"]
            elif line["event"] == "view":
                last_view[i] = line
                return line | {"node": i}
            return None

        give_up = time.monotonic() + timeout
        while len(converged) < nodes:
            if time.monotonic() > give_up:
                waiting = sorted(f"n{i:02}" for i in range(nodes) if i not in converged)
                raise TimeoutError(f"not converged within {timeout:g} s: {waiting}")
            view = read(min(give_up, time.monotonic() + 1.0))
            if view is not None and view["node"] not in converged and everyone_alive(view):
                converged[view["node"]] = view["t"]
        converged_at = max(converged.values())
        cpu_start = sum(usage(proc.pid).cpu_seconds for proc in procs)

        window_start = {i: last_view[i] for i in range(nodes)}
        unconverged = 0
        quiet_until = time.monotonic() + quiet
        while time.monotonic() < quiet_until:
            view = read(quiet_until)
            if view is not None and not everyone_alive(view):
                unconverged += 1
        cpu_end = sum(usage(proc.pid).cpu_seconds for proc in procs)
        rates = []
        for i in range(nodes):
            a, b = window_start[i], last_view[i]
            if b["t"] > a["t"]:
                rates.append((b["gossip_bytes_out"] - a["gossip_bytes_out"]) / (b["t"] - a["t"]))

        for proc in procs:
            os.kill(proc.pid, signal.SIGTERM)
        _drain_until_exit(procs, 30.0)
        # -1: still running after 30 s; its thread stacks go to its stderr (SIGUSR1), then
        # node_program kills it
        exit_codes = [-1 if proc.poll() is None else proc.returncode for proc in procs]
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(0.5)
    return Convergence(
        nodes=nodes,
        profile=profile,
        discovery=discovery,
        converged_s=converged_at - start,
        converged_after_ready_s=converged_at - max(ready.values()),
        started_s=max(ready.values()) - start,
        cpu_to_converge_s=cpu_start,
        quiet_s=quiet,
        gossip_bytes_per_node_s=sum(rates) / max(len(rates), 1),
        cpu_per_node_percent=(cpu_end - cpu_start) / quiet / nodes * 100,
        unconverged_views=unconverged,
        exit_codes=exit_codes,
        load_average=os.getloadavg()[0],
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.converge", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--nodes", type=counted(2), default=30)
    parser.add_argument(
        "--profile",
        action="append",
        choices=("test", "local", "lan"),
        help="profile (repeat for several runs; default local and lan)",
    )
    parser.add_argument(
        "--discovery",
        action="append",
        choices=MODES,
        help="zeroconf on 127.0.0.1 or seeds (repeat; default both)",
    )
    parser.add_argument(
        "--quiet", type=float, default=5.0, help="seconds watched after convergence (default 5)"
    )
    parser.add_argument("--time-limit", type=counted(1), default=600)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stderr-dir", type=Path, help="each node's stderr in DIR/nNN.err")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    with time_limit(args.time_limit):
        for profile in args.profile or ["local", "lan"]:
            for discovery in args.discovery or list(MODES):
                results.append(run(args.nodes, profile, discovery, args.quiet, args.stderr_dir))
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    else:
        print(
            f"{'nodes':>5} {'profile':7} {'discovery':9} {'converged':>9} {'after ready':>11} "
            f"{'started':>7} {'CPU to conv.':>12} {'gossip B/node/s':>15} {'CPU/node':>8} ok"
        )
        for r in results:
            print(
                f"{r.nodes:>5} {r.profile:7} {r.discovery:9} {r.converged_s:>8.2f}s "
                f"{r.converged_after_ready_s:>10.2f}s {r.started_s:>6.2f}s "
                f"{r.cpu_to_converge_s:>11.1f}s {r.gossip_bytes_per_node_s:>15,.0f} "
                f"{r.cpu_per_node_percent:>7.1f}% {'yes' if r.ok else 'NO'}"
            )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
