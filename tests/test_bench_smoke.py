"""The RPC and events benchmarks run end to end and report every figure.

Speed goals live in the benchmarks (``python -m tests.bench.rpc``,
``python -m tests.bench.events``), not here: this only checks that a short run
completes and every figure is produced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bench import events
from tests.bench._harness import positive
from tests.bench.rpc import LABELS, RATIOS
from tests.programs import ROOT


@pytest.mark.timeout(120)
def test_benchmark_runs_and_reports_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.rpc",
            "--calls",
            "300",
            "--throughput-calls",
            "2000",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(json.dumps(result["figures"], indent=1))  # the figures, for whoever reads the log

    assert set(result["figures"]) == set(LABELS)
    for key, figure in result["figures"].items():
        for name in ("p50_us", "p99_us", "calls_per_s"):
            assert positive(figure[name]), f"{key}.{name} = {figure[name]!r}"
    assert set(result["ratios"]) == {ratio.name for ratio in RATIOS}
    for name, ratio in result["ratios"].items():
        assert positive(ratio["value"]), f"{name} = {ratio['value']!r}"


@pytest.mark.timeout(120)
def test_events_benchmark_runs_and_prints_every_row() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    command = [sys.executable, "-m", "tests.bench.events", "--events", "3000", "--time-limit"]
    done = subprocess.run(
        [*command, "100"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)  # the table, for whoever reads the log

    lines = done.stdout.splitlines()
    for key, label in events.LABELS.items():
        text = label.format(k=100)
        row = next((line for line in lines if line.startswith(text)), None)
        assert row is not None, f"no row {key!r} in:\n{done.stdout}"
        assert row[len(text) :].split()[0] == "3,000", row  # events sent
    for ratio in events.RATIOS:
        assert any(line.startswith(ratio.name) for line in lines), ratio.name
