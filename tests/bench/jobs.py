"""Durable queues: jobs/s stored (enqueue until the hand-off) and done, on 127.0.0.1.

python -m tests.bench.jobs [--jobs N] [--concurrency C] [--synchronous FULL|NORMAL] [--json]

A sender node and a provider node (of ``bench.nop``, a coroutine that returns at once)
in this process, each with its own sqlite job database in a temporary directory. C
tasks enqueue N jobs in all, each waiting for its hand-off (the job is in the sender's
outbox and the provider's inbox, both committed): "stored/s" is N over that time.
"done/s" is N over the time from the first enqueue until the provider has run them all
and recorded them done. Figures of one run only compare with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

from mesh import Node


async def bench(jobs: int, concurrency: int, synchronous: str) -> dict[str, float]:
    done = 0
    finished = asyncio.Event()

    async def nop(n: int) -> None:
        nonlocal done
        done += 1
        if done == jobs:
            finished.set()

    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            mesh=f"bench-{secrets.token_hex(4)}",
            profile="test",
            discovery=False,
            jobs_synchronous=synchronous,
        )
        async with Node(name="sender", jobs_db=Path(tmp) / "s.db", **common) as sender:  # type: ignore[arg-type]
            provider = Node(
                name="provider",
                jobs_db=Path(tmp) / "p.db",
                seeds=(sender.address,),
                **common,  # type: ignore[arg-type]
            )
            provider.add_service(nop, name="bench.nop")
            async with provider:
                await sender.wait_for_service("bench", timeout=10)
                queue = iter(range(jobs))
                began = time.perf_counter()

                async def worker() -> None:
                    for n in queue:
                        await sender.enqueue("bench.nop", n, wait_handed_off=True, retries=())

                await asyncio.gather(*(worker() for _ in range(concurrency)))
                stored = time.perf_counter() - began
                await asyncio.wait_for(finished.wait(), 120)
                all_done = time.perf_counter() - began
                store = provider._jobs.store  # type: ignore[union-attr]
                writes_per_commit = store.writes / max(1, store.commits)
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "synchronous": synchronous,  # type: ignore[dict-item]
        "stored_per_s": jobs / stored,
        "done_per_s": jobs / all_done,
        "provider_writes_per_commit": writes_per_commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default=None)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    modes = [options.synchronous] if options.synchronous else ["FULL", "NORMAL"]
    for mode in modes:
        for concurrency in sorted({1, options.concurrency}):
            count = options.jobs if concurrency > 1 else max(1, options.jobs // 10)
            result = asyncio.run(bench(count, concurrency, mode))
            if options.json:
                print(json.dumps(result))
            else:
                print(
                    f"synchronous={mode:6} concurrency={concurrency:4} jobs={count:6}: "
                    f"stored {result['stored_per_s']:8.0f}/s  done {result['done_per_s']:8.0f}/s  "
                    f"({result['provider_writes_per_commit']:.1f} writes per commit)"
                )


if __name__ == "__main__":
    main()
