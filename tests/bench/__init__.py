"""The service's throughput, latency, CPU and memory through real servers on loopback.

`python -m tests.bench` (see `tests.bench.cli` and docs/performance.md). It measures and asserts
nothing; tests/bench/test_bench_harness.py only keeps it from rotting.
"""
