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


def rule_matmul_flops(num_streams: int, rollout_len: int, inner_updates: int, hidden: int, y_size: int,
                      embed: int = 16, num_inputs: int = 6, remat: bool = False) -> dict[str, float]:
    """Analytic matmul FLOPs (2 per multiply-add) of the LSTM update rule in one meta-step.

    Per step of one stream the rule does the LSTM's input and recurrent projections
    (2·4H·(inputs + H)), the π̂ and ŷ heads (2·H·(1 + m)) and φ on y(s_t) and y(s_t+1)
    (2·2·(m·e + e)). A meta-step applies it to `num_streams` x T steps in each of its K inner
    updates; the meta-gradient's backward pass costs about twice the forward (gradients with
    respect to the activations and to the weights), and rematerialisation adds one more forward.
    """
    h, m, e = hidden, y_size, embed
    per_step = 2 * 4 * h * (num_inputs + h) + 2 * h * (1 + m) + 2 * 2 * (m * e + e)
    forward = float(per_step) * num_streams * rollout_len * inner_updates
    passes = 4.0 if remat else 3.0
    return {"per_step": float(per_step), "forward": forward, "total": passes * forward}
