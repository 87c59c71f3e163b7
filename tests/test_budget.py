"""Sizing a run before it starts: XLA's memory analysis against known buffers, the refusal of a
program that cannot fit (naming the settings to change), and `meta_train --dry-run`."""

from __future__ import annotations

import dataclasses

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
