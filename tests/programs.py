"""Start node programs as real processes and read their JSON lines."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

Spawn = Callable[..., subprocess.Popen[bytes]]


def node_env(**settings: str) -> dict[str, str]:
    """The environment of a node program: this one, minus MESH_*, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update({"MESH_NAME": "test", "MESH_PROFILE": "test", "PYTHONUNBUFFERED": "1"})
    env["MESH_DISCOVERY"] = "off"  # tests that use zeroconf turn it on, on their own LAN
    env.update(settings)
    return env


def read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> dict[str, Any]:
    """The next JSON line the program prints, within ``timeout`` seconds.

    Reads the pipe's file descriptor itself (os.read), keeping what follows the line
    for the next call: a buffered ``readline`` would take several lines into its buffer
    while ``select`` reports the pipe empty, and the next call would wait in vain."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending: bytearray = _pending.setdefault(proc.pid, bytearray())
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in pending:
                end = pending.index(b"\n")
                text = pending[:end].decode().strip()
                del pending[: end + 1]
                if text.startswith("{"):
                    return dict(json.loads(text))
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError(f"no line from pid {proc.pid} within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"pid {proc.pid} exited with {proc.wait(5)}")
            pending += chunk


#: What was read from each program's stdout after its last whole line, by PID.
_pending: dict[int, bytearray] = {}


@contextmanager
def node_program(
    module: str,
    env: Mapping[str, str],
    spawn: Spawn = subprocess.Popen,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m module``; SIGKILL it (by PID) and reap it at the end, whatever happens."""
    proc = spawn(
        [sys.executable, "-m", module],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _pending.pop(proc.pid, None)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the program and return its exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)
