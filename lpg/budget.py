"""What a compiled program needs, against what a device holds: sizing a run before it starts.

    footprint = compiled_footprint(jax.jit(fn).lower(*args).compile())
    check_fits(footprint, device_capacity(jax.devices()[0]), hint="...")

`footprint["bytes"]` is XLA's own memory analysis of the compiled program per device: the
buffers of its arguments, outputs and temporaries (aliased, i.e. donated, arguments counted
once). `footprint["flops"]` is XLA's cost analysis, which counts the body of every loop once:
a lower bound for programs built from `lax.scan` (every meta-step is), useful for comparing
shapes, not for predicting time; time one step instead.
"""

from __future__ import annotations

import os
from typing import Any

GB = 1e9


def compiled_footprint(compiled: Any) -> dict[str, float]:
    """Per-device bytes (arguments + outputs + temporaries − aliased) and XLA's flop count."""
    m = compiled.memory_analysis()
    parts = {
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "temp_bytes": m.temp_size_in_bytes,
        "alias_bytes": m.alias_size_in_bytes,
    }
    parts["bytes"] = parts["argument_bytes"] + parts["output_bytes"] + parts["temp_bytes"] - parts["alias_bytes"]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per program
    parts["flops"] = float((cost or {}).get("flops", float("nan")))
    return parts


def device_capacity(device: Any) -> float | None:
    """Bytes one device can hold: the accelerator's memory limit, or the host's RAM for a CPU."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(footprint: dict, capacity: float | None, hint: str, headroom: float = 0.9) -> None:
    """Raises ValueError (one line, with `hint`: which setting to change) when the program needs
    more than `headroom` of the device's capacity; nothing when the capacity is unknown."""
    if capacity is not None and footprint["bytes"] > headroom * capacity:
        raise ValueError(
            f"the compiled program needs {footprint['bytes'] / GB:.1f} GB per device, more than "
            f"{headroom:.0%} of the {capacity / GB:.1f} GB the device holds: {hint}")
