"""meshctl as a user runs it: real processes, real output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MESHCTL = str(Path(sys.executable).parent / "meshctl")


@pytest.mark.timeout(60)
def test_demo_starts_lists_and_stops_a_local_mesh() -> None:
    result = subprocess.run(
        [MESHCTL, "demo", "--nodes", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["mesh"].startswith("demo-")
    nodes = listing["nodes"]
    assert [n["name"] for n in nodes] == ["demo-1", "demo-2", "demo-3"]
    assert len({n["id"] for n in nodes}) == 3
    assert all(n["address"].startswith("tcp://127.0.0.1:") for n in nodes)
    assert all(n["protocol"] == 1 for n in nodes)
    assert [n["services"] for n in nodes] == [{"calc": "1.0.0"}, {"echo": "0.0.0"}, {}]
    # the listing is the gossiped one, read through the first node
    assert listing["via"] == nodes[0]["address"]
    assert [n["status"] for n in nodes] == ["alive"] * 3
    assert all(n["rss_bytes"] > 0 and n["uptime"] > 0 for n in nodes)
    calls = {c["target"]: c for c in listing["calls"]}
    assert calls["calc.add"]["result"] == 5
    assert calls["echo.say"]["result"] == "hello, mesh"
    assert calls["calc.div"]["error"]["type"] == "RemoteError"
    assert calls["calc.slow"]["error"]["type"] == "CallTimeout"
    assert listing["stream"]["items"] == [0, 1, 2, 3, 4]
    assert listing["left_cleanly"] == 3


@pytest.mark.timeout(60)
def test_demo_table_for_people() -> None:
    result = subprocess.run(
        [MESHCTL, "demo", "--nodes", "2"], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "NAME" in result.stdout
    assert "listed by gossip through tcp://127.0.0.1:" in result.stdout
    assert [line.split()[3] for line in result.stdout.splitlines() if line.startswith("demo-")] == [
        "alive",
        "alive",
    ]
    assert "calc.add(2, 3) = 5" in result.stdout
    assert "stream calc.count(5): 0 1 2 3 4" in result.stdout
    assert "all 2 nodes left cleanly" in result.stdout
