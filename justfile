# mesh: the commands a person runs, and CI too.

# install with the test and dev tools
install:
    python -m pip install -e '.[test,dev]'

# the test suite (as README.md and CI run it)
test *args:
    pytest {{args}}

# format check, lint and strict types
lint:
    ruff format --check .
    ruff check .
    mypy

# the codec fuzz tests with 100,000 examples each (CI runs 10,000)
fuzz:
    MESH_FUZZ_EXAMPLES=100000 pytest tests/test_wire_fuzz.py -o timeout=0 -q

# `just bench rpc ARGS`, `just bench events ARGS` or `just bench jobs ARGS`: one of them
# benchmarks: mesh against raw pyzmq in the same run (docs/performance.md), RPC then events
bench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    set -- {{args}}
    case "${1:-}" in
        rpc | events | jobs) which="$1"; shift; python -m "tests.bench.$which" "$@" ;;
        *) python -m tests.bench.rpc "$@"; python -m tests.bench.events; python -m tests.bench.jobs ;;
    esac

# the membership simulator at 10,000 nodes (CI runs 1,000 in the test suite): the standard
# campaign, 30 node processes converging, then steady 0%, 5% and 20% message loss
# (docs/reliability.md; about an hour and 8 GB of memory at most)
sim *args:
    python -m tests.sim --nodes 10000 {{args}}
    python -m tests.converge --nodes 30
    python -m tests.sim --nodes 10000 --loss 0 --loss 0.05 --loss 0.2 {{args}}

# real node processes on 127.0.0.1 start together and converge (default 30; docs/performance.md)
converge *args:
    python -m tests.converge {{args}}

# 1,000,000 calls and events through two node processes; memory and fds before and after
soak *args:
    python -m tests.soak {{args}}

# the chaos campaign (~10 min): 10 hosts x 3 nodes on a namespace LAN under scripted
# faults; `just chaos --short` for the one-minute version the test suite runs
chaos *args:
    python -m tests.chaos {{args}}

# a local demo mesh and its listing
demo:
    meshctl demo
