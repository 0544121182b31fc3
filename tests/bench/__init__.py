"""Benchmarks: ``python -m tests.bench.rpc`` measures mesh against raw pyzmq in one run."""
