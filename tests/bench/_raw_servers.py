"""Raw pyzmq echo servers for the benchmark, each run as its own process.

``python -m tests.bench._raw_servers blocking|asyncio PORT`` binds a ROUTER on
127.0.0.1 (PORT 0 picks a free one), prints one JSON line
``{"event": "ready", "address": "tcp://127.0.0.1:PORT"}`` and echoes every message
back to its sender until SIGTERM. It also leaves on its own when its standard
input closes (the benchmark died) or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from typing import Any

import zmq
import zmq.asyncio

HWM = 100_000


def _configure(sock: zmq.Socket[Any], port: int) -> str:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.bind(f"tcp://127.0.0.1:{port or '*'}")
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(last, bytes)
    return last.decode()


def _ready(address: str) -> None:
    print(json.dumps({"event": "ready", "address": address, "pid": os.getpid()}), flush=True)


def _watchdog(max_seconds: float) -> None:
    """Exit when stdin closes (the parent is gone) or after ``max_seconds``."""

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    timer = threading.Timer(max_seconds, os._exit, args=(3,))
    timer.daemon = True
    timer.start()


def blocking(port: int) -> None:
    """A blocking ROUTER: recv_multipart, send_multipart back, forever."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    _ready(_configure(sock, port))
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        send(recv())


async def drained(port: int) -> None:
    """A zmq.asyncio ROUTER that, on each wake-up, reads every ready message with NOBLOCK.

    The awaited ``recv_multipart`` checks ZMQ_EVENTS before it sleeps (libzmq's fd is
    edge-triggered), then a NOBLOCK loop on the same socket (a shadow, used by this
    one task only) drains what is queued until ``zmq.Again``.
    """
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.ROUTER)
    _ready(_configure(sock, port))
    raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    recv, send = raw.recv_multipart, raw.send_multipart
    noblock = zmq.NOBLOCK
    while True:
        send(await sock.recv_multipart(), noblock)
        while True:
            try:
                frames = recv(noblock)
            except zmq.Again:
                break
            send(frames, noblock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["blocking", "asyncio"])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    _watchdog(args.max_seconds)
    if args.kind == "blocking":
        blocking(args.port)
    else:
        asyncio.run(drained(args.port))


if __name__ == "__main__":
    main()
