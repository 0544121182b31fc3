"""Eight real node processes on 127.0.0.1 start together and converge by zeroconf on
127.0.0.1 (``python -m tests.converge``; 30 of them with ``just converge``)."""

from __future__ import annotations

import pytest

from tests.converge import run

NODES = 8


@pytest.mark.timeout(60)
def test_eight_processes_converge_and_stay_converged() -> None:
    result = run(nodes=NODES, profile="local", discovery="zeroconf", quiet=1.0, timeout=40.0)
    print(result)  # the figures, for whoever reads the log

    # Every node listed all eight alive (run() waits for that), soon after the last
    # one was ready: the LAN goal is 0.5 s; 10x, as this machine may be busy.
    assert result.converged_after_ready_s < 5.0
    assert result.unconverged_views == 0  # nobody suspected once converged
    assert result.exit_codes == [0] * NODES  # each left cleanly on SIGTERM
    assert 0 < result.gossip_bytes_per_node_s < 20_000
