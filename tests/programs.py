"""Start node programs as real processes and read their JSON lines."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

Spawn = Callable[..., subprocess.Popen[bytes]]
#: The repository: programs run from here, so ``python -m tests.x`` finds its modules.
ROOT = Path(__file__).resolve().parents[1]


def before_exec(cpus: set[int] | None = None) -> Callable[[], None]:
    """What a child process does before exec: get SIGTERM if this process dies (Linux),
    and keep to ``cpus`` if given (its threads inherit that)."""

    def prepare() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if cpus:
            os.sched_setaffinity(0, cpus)

    return prepare


def spawner(stderr: IO[bytes] | int, *, stdin: int | None = None) -> Spawn:
    """Popen for :func:`node_program`: from the repository, SIGTERM if this process dies,
    stderr to ``stderr`` (not a pipe nobody reads: a full one would block the node), and
    ``stdin`` (e.g. ``subprocess.PIPE`` for a program that takes commands) if given."""

    def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs["stderr"] = stderr
        if stdin is not None:
            kwargs["stdin"] = stdin
        return subprocess.Popen(argv, cwd=ROOT, preexec_fn=before_exec(), **kwargs)

    return spawn


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
    found = read_any([proc], timeout)
    if found is None:
        raise TimeoutError(f"no line from pid {proc.pid} within {timeout} s")
    return found[1]


def read_any(
    procs: Sequence[subprocess.Popen[bytes]], timeout: float
) -> tuple[subprocess.Popen[bytes], dict[str, Any]] | None:
    """The next JSON line any of ``procs`` prints within ``timeout`` seconds, and which
    printed it; None when none did. EOFError when one of them exits."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for proc in procs:
            assert proc.stdout is not None
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, proc)
        while True:
            for proc in procs:
                line = _take_line(_pending.setdefault(proc.pid, bytearray()))
                if line is not None:
                    return proc, line
            left = deadline - time.monotonic()
            ready = selector.select(left) if left > 0 else []
            if not ready:
                return None
            for key, _ in ready:
                proc = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    raise EOFError(f"pid {proc.pid} exited with {proc.wait(5)}")
                _pending[proc.pid] += chunk


def _take_line(pending: bytearray) -> dict[str, Any] | None:
    """Take the first JSON line out of ``pending`` (skipping other whole lines)."""
    while b"\n" in pending:
        end = pending.index(b"\n")
        text = pending[:end].decode().strip()
        del pending[: end + 1]
        if text.startswith("{"):
            return dict(json.loads(text))
    return None


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
