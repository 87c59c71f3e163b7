"""Sizing a run before it starts: XLA's memory analysis against known buffers, the refusal of a
program that cannot fit (naming the settings to change), `meta_train --dry-run`, and the
compile cache that spares a resumed run its compile."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from experiments import meta_train
from experiments.presets import META_PRESETS
from lpg import budget
from lpg.update_rule import RuleConfig, RuleInputs, UpdateRule, init_rule


def test_footprint_counts_arguments_outputs_and_temporaries_of_a_known_program():
    x = jax.ShapeDtypeStruct((1000, 1000), jnp.float32)  # 4 MB
    compiled = jax.jit(lambda a: (a @ a) + 1.0).lower(x).compile()
    f = budget.compiled_footprint(compiled)
    assert f["argument_bytes"] == 4_000_000 and f["output_bytes"] == 4_000_000
    assert f["flops"] >= 2 * 1000**3  # one 1000^3 matmul: 2e9 flops
    # An output that reuses a donated argument's buffer is counted once: the same program with and
    # without donation differs by exactly that buffer, and every footprint is the sum of its parts.
    plain = budget.compiled_footprint(jax.jit(lambda a: a + 1.0).lower(x).compile())
    donated = budget.compiled_footprint(jax.jit(lambda a: a + 1.0, donate_argnums=0).lower(x).compile())
    assert plain["alias_bytes"] == 0 and donated["alias_bytes"] == 4_000_000
    assert plain["bytes"] - donated["bytes"] == 4_000_000
    for g in (f, plain, donated):
        assert g["temp_bytes"] >= 0
        assert g["bytes"] == g["argument_bytes"] + g["output_bytes"] + g["temp_bytes"] - g["alias_bytes"]


@pytest.mark.parametrize("hidden", [128, 256])
def test_analytic_rule_flops_match_xla_count_of_one_rule_step(hidden):
    # XLA's cost analysis of one step of the rule counts its matmuls plus a few elementwise ops
    # (gates, activations): the analytic matmul count must be just under it.
    config = RuleConfig(hidden=hidden, y_size=30)
    params = init_rule(config, jax.random.PRNGKey(0))
    one_step = RuleInputs(*(jnp.zeros((1,)) for _ in range(5)), jnp.zeros((1, 30)), jnp.zeros((1, 30)))
    cost = jax.jit(lambda p, x: UpdateRule(config).apply(p, x)).lower(params, one_step).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    analytic = budget.rule_matmul_flops(1, 1, 1, hidden, 30)
    assert analytic["per_step"] <= cost["flops"] <= 1.05 * analytic["per_step"]
    meta = dataclasses.replace(META_PRESETS["quick"], rule=config)
    flops = meta.rule_matmul_flops()
    streams = len(meta.envs) * meta.lifetimes_per_env * meta.num_envs
    assert flops["forward"] == analytic["per_step"] * streams * meta.rollout_len * meta.inner_updates
    assert flops["total"] == 3 * flops["forward"]  # forward + a backward of twice its cost


def test_a_program_that_cannot_fit_is_refused_with_what_to_change():
    with pytest.raises(ValueError, match="needs 2.0 GB per device.*1.0 GB the device holds: use more devices"):
        budget.check_fits({"bytes": 2e9}, 1e9, "use more devices")
    budget.check_fits({"bytes": 2e9}, None, "unknown capacity: nothing to check")
    assert budget.device_capacity(jax.devices()[0]) > 1e9  # a CPU: the host's RAM


@pytest.mark.slow  # default-suite time (session 30): ~14 s; the refusal itself is tested above on a known program
def test_meta_training_refuses_to_start_when_its_chunk_cannot_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "device_capacity", lambda device: 1e5)  # a 100 kB device
    config = dataclasses.replace(META_PRESETS["tiny"], num_meta_steps=2)
    with pytest.raises(ValueError, match="lifetime_microbatches"):
        meta_train.meta_train(config, str(tmp_path / "run"), quiet=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing ran


def test_dry_run_reports_memory_and_a_measured_step_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    meta_train.main(["--preset", "tiny", "--dry-run"])
    out = capsys.readouterr().out
    assert "memory per device" in out and "s per meta-step" in out and "env steps/s" in out
    assert "LSTM matmuls alone" in out
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(budget, "device_capacity", lambda device: 1e5)
    with pytest.raises(SystemExit) as exit_info:
        meta_train.main(["--preset", "tiny", "--dry-run"])
    assert exit_info.value.code == 2 and "does not fit" in capsys.readouterr().out


_CACHED = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, numpy as np
    from lpg.runs import compile_cache_hits, use_compile_cache
    use_compile_cache(sys.argv[1])
    value = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(np.arange(64.0, dtype=np.float32).reshape(8, 8) / 64)
    print(compile_cache_hits(), float(value))
    """
)
_ROOT = Path(__file__).resolve().parents[1]


def _python(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=_ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **env})


def test_a_second_process_loads_its_program_from_the_compile_cache(tmp_path):
    # Two fresh processes compile the same program with the cache in one folder: the first compiles
    # and stores it, the second loads it (one cache hit: the only program) and computes the same value. Every program is
    # kept here (min compile time 0); the entry points keep those that compile in over a second.
    runs = [_python(["-c", _CACHED, str(tmp_path / "cache")], JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
            for _ in range(2)]
    (hits_1, value_1), (hits_2, value_2) = [r.stdout.split() for r in runs]
    assert (int(hits_1), int(hits_2)) == (0, 1), [r.stderr[-2000:] for r in runs]
    assert value_1 == value_2
    assert any((tmp_path / "cache").iterdir())


@pytest.mark.slow  # two meta-training processes: about a minute on 2 cores
def test_a_resumed_meta_training_loads_its_chunk_from_the_run_dirs_compile_cache(tmp_path):
    args = ["-m", "experiments.meta_train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--no-resume"]
    first, second = _python(args), _python(args)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert "compiled in" in first.stderr and "loaded from the compile cache" not in first.stderr
    assert "loaded from the compile cache" in second.stderr
    assert any((tmp_path / "run" / "xla_cache").iterdir())
