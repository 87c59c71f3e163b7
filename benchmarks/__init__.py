"""Throughput benchmarks: `python -m benchmarks.envs` and `python -m benchmarks.meta` print JSON."""
