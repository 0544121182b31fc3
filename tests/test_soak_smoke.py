"""A short soak: 20,000 calls and 20,000 events through a pair of node processes
(``python -m tests.soak``; the full one is ``just soak``). Every call is answered with
what was sent, every event is received or counted as dropped, and neither process
holds more memory (beyond the soak's margin), file descriptors or threads after than
before."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bench._harness import positive
from tests.programs import ROOT
from tests.soak.__main__ import RSS_MARGIN

N = 20_000


@pytest.mark.timeout(60)
def test_short_soak_answers_every_call_and_leaks_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    command = [sys.executable, "-m", "tests.soak", "--calls", str(N), "--events", str(N)]
    done = subprocess.run(
        [*command, "--warmup", "5000", "--json", "--time-limit", "50"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(json.dumps(result, indent=1))  # the figures, for whoever reads the log

    calls, events = result["calls"], result["events"]
    assert (calls["calls"], calls["ok"], calls["wrong"], calls["errors"]) == (N, N, 0, 0)
    assert events["received"] + events["gaps"] == N  # at-most-once, but no loss unseen
    assert events["gaps"] == events["node_dropped"]  # the node's statistics agree
    assert positive(calls["per_s"])
    assert positive(events["per_s"])
    for role in ("server", "client"):
        p = result["processes"][role]
        assert p["rss_after"] - p["rss_before"] <= RSS_MARGIN, (role, p)
        assert p["fds_after"] == p["fds_before"], (role, p)
        assert p["threads_after"] == p["threads_before"], (role, p)
        assert positive(p["cpu_us_per_call"]), (role, p)
        assert p["exit_code"] == 0, (role, p)
    assert result["problems"] == []
    assert done.returncode == 0
