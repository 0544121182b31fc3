"""The leak check fails the test that leaks, not the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)

INNER = """
import socket, subprocess, sys, threading, time
import zmq

kept = []

def test_leaks_a_zmq_socket():
    ctx = zmq.Context()
    kept.append((ctx, ctx.socket(zmq.DEALER)))

def test_leaks_a_tcp_socket():
    kept.append(socket.socket())

def test_leaks_a_thread():
    stop = threading.Event()
    kept.append(stop)
    threading.Thread(target=stop.wait, daemon=True).start()

def test_leaks_a_child_process():
    kept.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))

def test_cleans_up():
    ctx = zmq.Context()
    ctx.socket(zmq.DEALER).close()
    ctx.term()
    with socket.socket():
        pass
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


@pytest.mark.timeout(120)
def test_leak_check_fails_the_leaking_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", ROOT)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "tests.leaks", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=4)
    text = result.stdout.str()
    assert "ERROR at teardown of test_leaks_a_zmq_socket" in text
    assert "file descriptors left open" in text
    assert "threads left running" in text
    assert "child processes left" in text
    assert "ERROR at teardown of test_cleans_up" not in text
