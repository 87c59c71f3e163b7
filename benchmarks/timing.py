"""Timing helpers shared by the benchmarks: compile time and best-of-n run time of a jitted function."""

from __future__ import annotations

import platform
import time
from datetime import date

import jax


def compile_and_time(fn, args, repeats: int = 3, static_argnums=()) -> dict:
    """Compiles `jax.jit(fn)` for `args` (timed: trace + lower + XLA compile), then runs it
    `repeats` times; returns compile seconds and the best run's seconds (the machine is shared,
    so the fastest run is the least disturbed one). The first run is a warm-up and not counted."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, static_argnums=static_argnums).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return {"compile_s": round(compile_s, 2), "run_s": min(runs)}


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
        "cpu": cpu,
        "cpu_count": __import__("os").cpu_count(),
    }
