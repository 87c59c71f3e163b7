"""The multi-host launch (`python -m experiments.meta_train --distributed`), run as several
processes on this machine: JAX's CPU multi-process mode, where `jax.distributed` connects the
processes and cross-process all-reduces go over gloo (`jax_cpu_collectives_implementation`,
"gloo" by default since jax 0.4.3x). Each process owns 2 virtual CPU devices and holds only its
share of the lifetimes; the rule it meta-trains equals a single-process run's."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments.meta_train import meta_train
from experiments.presets import META_PRESETS
from lpg.update_rule import load_rule

ROOT = Path(__file__).resolve().parents[1]
PROCESSES, DEVICES_PER_PROCESS = 2, 2
LIFETIMES = PROCESSES * DEVICES_PER_PROCESS  # per source: one per device
CONFIG = dataclasses.replace(META_PRESETS["tiny"], lifetimes_per_env=LIFETIMES, num_meta_steps=2)
ARGS = ["--preset", "tiny", "--set", f"lifetimes_per_env={LIFETIMES}", "--set", "num_meta_steps=2", "--distributed"]
TIMEOUT_S = 420  # for the whole launch; a failed or stuck process ends all of them

# Runs the documented command (`python -m experiments.meta_train ... --distributed`) unchanged,
# only watching `host_loop` to report which lifetimes this process held and the rule it ended with.
WORKER = textwrap.dedent(
    """
    import json, runpy, sys
    import numpy as np
    import lpg.runs

    final = {}
    host_loop = lpg.runs.host_loop

    def watched(*args, **kwargs):
        final["state"] = host_loop(*args, **kwargs)
        return final["state"]

    lpg.runs.host_loop = watched
    out = sys.argv.pop(1)
    runpy.run_module("experiments.meta_train", run_name="__main__", alter_sys=True)

    import jax
    from lpg import sharding
    state = final["state"]
    held = []
    for leaf in jax.tree.leaves(state.lifetimes):
        rows = set()
        for shard in leaf.addressable_shards:
            rows.update(range(*shard.index[0].indices(leaf.shape[0])))
        held.append({"global": leaf.shape[0], "rows": sorted(rows)})
    rule = [np.asarray(x) for x in jax.tree.leaves(sharding.to_host(state.rule_params))]
    np.savez(f"{out}/rule_{jax.process_index()}.npz", *rule)
    report = dict(process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count(),
                  local_devices=jax.local_device_count(), held=held)
    with open(f"{out}/report_{jax.process_index()}.json", "w") as f:
        json.dump(report, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(run_dir: Path, out: Path) -> list[str]:
    """Starts the processes; returns their logs. Fails (never hangs) if any fails or all don't finish in time."""
    cache = os.environ.get("LPG_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "lpg-jax-test-cache"))
    base = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}", "JAX_NUM_PROCESSES": str(PROCESSES),
            "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    logs = [out / f"log_{i}.txt" for i in range(PROCESSES)]
    procs = []
    try:
        for i, log in enumerate(logs):
            with log.open("w") as f:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(out), *ARGS, "--run-dir", str(run_dir)],
                    env={**base, "JAX_PROCESS_ID": str(i)}, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                ))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            codes = [p.poll() for p in procs]  # every one, each time
            if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    # (without abseil's native stack frames, which would hide the Python error)
    texts = ["".join(line for line in log.read_text().splitlines(True) if not line.startswith("    @ "))
             for log in logs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * PROCESSES, f"exit codes {codes} (negative: killed after another failed or after " \
        f"{TIMEOUT_S}s)\n" + "\n".join(f"--- process {i}:\n{t[-2500:]}" for i, t in enumerate(texts))
    return texts


@pytest.mark.slow  # 1.5 min with a warm compile cache on 2 busy CPU cores, 4 min cold
def test_distributed_cli_over_2_processes_equals_single_process(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    _launch(run_dir, out)

    reports = [json.loads((out / f"report_{i}.json").read_text()) for i in range(PROCESSES)]
    for i, report in enumerate(reports):
        assert report["process"] == i and report["processes"] == PROCESSES
        assert report["devices"] == PROCESSES * DEVICES_PER_PROCESS
        assert report["local_devices"] == DEVICES_PER_PROCESS
    # Each process held only its share of every source's lifetimes, and together they held all.
    for leaf in range(len(reports[0]["held"])):
        shares = [set(r["held"][leaf]["rows"]) for r in reports]
        assert all(len(s) == LIFETIMES // PROCESSES for s in shares), shares
        assert set.union(*shares) == set(range(LIFETIMES)) and reports[0]["held"][leaf]["global"] == LIFETIMES

    # Process 0 wrote the metrics (once, not once per process) and the rule; the checkpoint is there.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert [r["step"] for r in rows] == [1, 2]
    assert (run_dir / "checkpoints" / "1").is_dir()
    saved, _ = load_rule(run_dir / "rule.msgpack")

    single, _ = meta_train(CONFIG, None, quiet=True, devices=1)
    expected = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(single.rule_params))]
    close = dict(rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(saved), expected, strict=True):
        np.testing.assert_allclose(got, want, **close)
    for i in range(PROCESSES):  # the replicated rule is the same on every process
        held = np.load(out / f"rule_{i}.npz")
        for k, want in enumerate(expected):
            np.testing.assert_allclose(held[f"arr_{k}"], want, **close)
