"""Meta-training throughput: environment steps per second of one full LPG meta-step.

    python -m benchmarks.meta            # 8 lifetimes x 64 envs x 20 steps x K = 5, LSTM-256; prints JSON
    python -m benchmarks.meta --paper    # the paper's shape (960 lifetimes); for accelerators

A meta-step is K inner updates (each from a fresh T x B rollout, applied by the rule) plus
the meta-loss rollout, the meta-gradient through all of it, the critic update, the rule's
optimiser step and the renewal of finished lifetimes: `config.env_steps_per_meta_step`
environment steps. Reported: compile time of the jitted chunk (trace + lower + XLA) and the
best of `--repeats` timed chunks. Lifetimes are sharded over all local devices as in
`experiments.meta_train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax

from benchmarks.timing import machine, progress
from lpg import sharding
from lpg.meta import MetaConfig, make_meta_trainer, sources_for
from lpg.update_rule import RuleConfig

# The benchmark shape of the "LPG" issue.
BENCH = MetaConfig(envs=("tabular_dense",), lifetimes_per_env=8, num_envs=64, rollout_len=20,
                   inner_updates=5, rule=RuleConfig(hidden=256), steps_per_chunk=1, num_meta_steps=1)

# The paper's shape (Table 2): 960 lifetimes x 64 environments x 20 steps, K = 5, LSTM-256,
# here as 8 tabular sources x 120 lifetimes.
PAPER = dataclasses.replace(
    BENCH,
    envs=("tabular_dense", "tabular_sparse", "tabular_long_horizon", "tabular_longer_horizon",
          "tabular_long_dense", "chain_short", "chain_long", "chain_short_noisy"),
    lifetimes_per_env=120, lifetime_updates=2500,
)


def measure(config: MetaConfig, repeats: int) -> dict:
    mesh = sharding.lifetime_mesh()
    sharding.check_divisible(config.lifetimes_per_env, mesh)
    t0 = time.perf_counter()
    trainer = make_meta_trainer(config, sources_for(config.envs))
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    shardings = sharding.meta_state_shardings(abstract, mesh)
    state = jax.jit(trainer.init, out_shardings=shardings)(jax.random.PRNGKey(0))
    setup_s = time.perf_counter() - t0

    progress(f"compiling one meta-step ({config.env_steps_per_meta_step:,} env steps; minutes on a 2-core CPU)...")
    t0 = time.perf_counter()
    run = jax.jit(trainer.run, in_shardings=(shardings,), out_shardings=(shardings, None), donate_argnums=0)
    lowered = run.lower(state)
    trace_s = time.perf_counter() - t0
    run = lowered.compile()
    compile_s = time.perf_counter() - t0

    progress(f"compiled in {compile_s:.0f}s; warm-up and {repeats} timed meta-steps...")
    state, _ = jax.block_until_ready(run(state))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(run(state))
        times.append(time.perf_counter() - t0)
    per_step = min(times) / config.steps_per_chunk
    return {
        "env_steps_per_meta_step": config.env_steps_per_meta_step,
        "steps_per_s": round(config.env_steps_per_meta_step / per_step),
        "s_per_meta_step": round(per_step, 4),
        "median_s_per_meta_step": round(sorted(times)[len(times) // 2] / config.steps_per_chunk, 4),
        "compile_s": round(compile_s, 2),
        "trace_lower_s": round(trace_s, 2),
        "setup_s": round(setup_s, 2),
        "meta_loss_finite": bool(jax.numpy.isfinite(metrics["meta_loss"]).all()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper's shape: 960 lifetimes (accelerators)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lifetimes", type=int, default=None, help="override lifetimes_per_env")
    parser.add_argument("--hidden", type=int, default=None, help="override the LSTM width")
    args = parser.parse_args(argv)
    config = PAPER if args.paper else BENCH
    if args.lifetimes is not None:
        config = dataclasses.replace(config, lifetimes_per_env=args.lifetimes)
    if args.hidden is not None:
        config = dataclasses.replace(config, rule=dataclasses.replace(config.rule, hidden=args.hidden))
    shape = {"sources": list(config.envs), "lifetimes_per_env": config.lifetimes_per_env,
             "num_envs": config.num_envs, "rollout_len": config.rollout_len,
             "inner_updates": config.inner_updates, "lstm_hidden": config.rule.hidden}
    result = {"benchmark": "meta", "shape": "paper" if args.paper else "bench", "config": shape,
              "machine": machine(), **measure(config, args.repeats)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
