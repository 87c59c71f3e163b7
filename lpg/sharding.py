"""Spreading lifetimes over devices (and hosts) with `jax.sharding`.

One mesh axis, "lifetimes": every leaf of a batched `Lifetime` is split along its
leading axis; the rule's parameters, its optimiser state and the step counter are
replicated. `jax.jit` with these shardings makes the mean meta-gradient an
all-reduce across devices, on one host or, after `jax.distributed.initialize()`,
across several.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "lifetimes"


def initialize_distributed() -> None:
    """Joins JAX's multi-process runtime (one process per host, all running the same command).

    Coordinator, process count and id come from the standard variables
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (or are auto-detected
    on managed clusters such as SLURM, TPU pods and Kubernetes).
    """
    if jax.distributed.is_initialized():  # already joined (e.g. early, before anything touched the backend)
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    jax.distributed.initialize(**kwargs)


def sync_processes(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process has reached this point (a no-op with one process).

    Call it between compiling and running: on CPU, processes meet in a cross-process collective
    (gloo) with a fixed 30 s timeout, so a process that finishes compiling (or reads the compile
    cache) much earlier than another fails with "Gloo context initialization failed:
    DEADLINE_EXCEEDED". This barrier is the coordination service's, with `timeout_s`.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # its client's barrier is what jax's and orbax's own checkpointing use

    distributed.global_state.client.wait_at_barrier(f"lpg:{name}", timeout_in_ms=int(timeout_s * 1000))


def lifetime_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices; {len(devices)} are available ({devices[0].platform})")
    # Auto axes: the compiler propagates shardings (jax >= 0.7 defaults make_mesh to Explicit).
    return jax.make_mesh((n,), (AXIS,), devices=devices[:n], axis_types=(jax.sharding.AxisType.Auto,))


def check_divisible(lifetimes: int, mesh: jax.sharding.Mesh) -> None:
    n = mesh.devices.size
    if lifetimes % n:
        raise ValueError(
            f"lifetimes_per_env={lifetimes} cannot be split evenly over {n} devices; "
            f"use a multiple of {n} (or run on fewer devices with --devices)"
        )


def meta_state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for a `lpg.meta.MetaState`: lifetimes split, everything else replicated."""
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P(AXIS))
    shardings = jax.tree.map(lambda _: replicated, abstract_state)
    return shardings.replace(lifetimes=jax.tree.map(lambda _: split, abstract_state.lifetimes))


def to_host(tree: Any) -> Any:
    """Fetches (replicated) arrays to numpy, also when not every shard is addressable here."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)
