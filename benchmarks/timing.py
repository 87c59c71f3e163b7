"""Timing helpers shared by the benchmarks: compile time, and best-of-n run times taken interleaved."""

from __future__ import annotations

import platform
import sys
import time
from datetime import date

import jax


def progress(text: str) -> None:
    """What a benchmark is doing, on stderr (stdout carries only the JSON result)."""
    print(text, file=sys.stderr, flush=True)


def compile_timed(fn, args, static_argnums=(), name: str = ""):
    """(compiled function, compile seconds) for `jax.jit(fn)` at `args`, after one warm-up run."""
    progress(f"compiling {name or getattr(fn, '__name__', 'a benchmark')}...")
    t0 = time.perf_counter()
    compiled = jax.jit(fn, static_argnums=static_argnums).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    progress(f"  compiled in {compile_s:.1f}s")
    return compiled, round(compile_s, 2)


def best_interleaved(calls: dict, repeats: int) -> dict:
    """Best-of-`repeats` seconds of each `name -> (compiled, args)`, running them in turn
    (a, b, c, a, b, c, ...) so that a change in the machine's load hits every one alike."""
    best = {name: float("inf") for name in calls}
    for i in range(repeats):
        progress(f"timing round {i + 1}/{repeats}: {', '.join(calls)}")
        for name, (compiled, args) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": date.today().isoformat(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": cpu,
        "cpu_count": __import__("os").cpu_count(),
    }
