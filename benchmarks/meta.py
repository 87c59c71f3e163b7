"""Meta-training throughput: environment steps per second of one full LPG meta-step, its
compiled memory, and how close its LSTM matmuls come to the machine's dense-matmul peak.

    python -m benchmarks.meta                     # 8 lifetimes x 64 envs x 20 steps x K = 5, LSTM-256; prints JSON
    python -m benchmarks.meta --paper --memory-only   # the `paper` preset: compiled memory, no timing
    python -m benchmarks.meta --rule              # also: the rule alone, and its matmuls without the LSTM's gates
    python -m benchmarks.meta --scaling           # the scaling table of BENCHMARKS.md (about 30 min on 2 cores);
                                                  # shapes that would not fit this machine are compiled, not run

A meta-step is K inner updates (each from a fresh T x B rollout, applied by the rule) plus
the meta-loss rollout, the meta-gradient through all of it, the critic update, the rule's
optimiser step and the renewal of finished lifetimes: `config.env_steps_per_meta_step`
environment steps. Reported per shape: compile time of the jitted chunk (trace + lower + XLA),
XLA's memory analysis of the compiled program per device (`lpg.budget.compiled_footprint`),
the best of `--repeats` timed chunks, the rule's analytic LSTM matmul FLOPs
(`MetaConfig.rule_matmul_flops`) and the rate they run at against this machine's measured
dense-matmul FLOP/s (`matmul_peak`). Lifetimes are sharded over all local devices as in
`experiments.meta_train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import best_interleaved, compile_timed, machine, progress
from experiments.presets import META_PRESETS
from experiments import meta_train
from lpg import budget
from lpg.meta import MetaConfig
from lpg.update_rule import RuleConfig, RuleInputs, UpdateRule, init_rule

# The benchmark shape of the "LPG" issue.
BENCH = MetaConfig(envs=("tabular_dense",), lifetimes_per_env=8, num_envs=64, rollout_len=20,
                   inner_updates=5, rule=RuleConfig(hidden=256), steps_per_chunk=1, num_meta_steps=1)

# The `paper` preset as meta_train runs it (24 sources x 40 lifetimes = 960, 4 micro-batches), one meta-step.
PAPER = dataclasses.replace(META_PRESETS["paper"], steps_per_chunk=1, num_meta_steps=1, checkpoint_every=1)

# The scaling table: (label, change to BENCH). Lifetimes 8 -> 64 -> 256 with micro-batch settings,
# then one factor at a time at 8 lifetimes: rollout length T, inner updates K, LSTM width.
SCALING = (
    ("lifetimes 8", {}),
    ("lifetimes 64", {"lifetimes_per_env": 64}),
    ("lifetimes 64, 4 micro-batches", {"lifetimes_per_env": 64, "lifetime_microbatches": 4}),
    ("lifetimes 256", {"lifetimes_per_env": 256}),
    ("lifetimes 256, 4 micro-batches", {"lifetimes_per_env": 256, "lifetime_microbatches": 4}),
    ("lifetimes 256, 16 micro-batches", {"lifetimes_per_env": 256, "lifetime_microbatches": 16}),
    ("lifetimes 256, 4 micro-batches, remat", {"lifetimes_per_env": 256, "lifetime_microbatches": 4, "remat": True}),
    ("T 10", {"rollout_len": 10}),
    ("T 40", {"rollout_len": 40}),
    ("K 1", {"inner_updates": 1}),
    ("K 3", {"inner_updates": 3}),
    ("LSTM 64", {"rule": RuleConfig(hidden=64)}),
    ("LSTM 128", {"rule": RuleConfig(hidden=128)}),
)


def matmul_peak(repeats: int = 5, size: int = 2048, streams: int = 512, hidden: int = 256, steps: int = 100) -> dict:
    """This machine's dense float32 matmul FLOP/s: a [size, size] @ [size, size] product, and the
    rule's own shape, `steps` sequential [streams, H] @ [H, 4H] products in a scan (an LSTM's
    recurrent projection), best of `repeats`."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    square = jax.jit(lambda x: x @ x).lower(a).compile()
    h0 = jax.random.normal(jax.random.PRNGKey(1), (streams, hidden), jnp.float32) * 0.1
    w = jax.random.normal(jax.random.PRNGKey(2), (hidden, 4 * hidden), jnp.float32) / hidden

    def recurrent(h, w):
        def step(h, _):
            return jnp.tanh(h @ w)[:, :hidden], None
        return jax.lax.scan(step, h, None, length=steps)[0]

    lstm = jax.jit(recurrent).lower(h0, w).compile()
    best = {"square": float("inf"), "lstm_shape": float("inf")}
    for _ in range(repeats + 1):  # the first round warms up
        for name, (fn, args) in {"square": (square, (a,)), "lstm_shape": (lstm, (h0, w))}.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
    return {
        "square_flops_per_s": 2.0 * size ** 3 / best["square"],
        "lstm_shape_flops_per_s": 2.0 * streams * hidden * 4 * hidden * steps / best["lstm_shape"],
        "square_size": size, "lstm_shape": [streams, hidden, 4 * hidden, steps],
    }


def measure(config: MetaConfig, repeats: int, memory_only: bool = False) -> dict:
    """Compiles one meta-step of `config` and reports its memory, XLA's and the analytic FLOPs, and
    (unless `memory_only`) the best of `repeats` timed meta-steps after a warm-up."""
    config = dataclasses.replace(config, steps_per_chunk=1, num_meta_steps=1, checkpoint_every=1)
    t0 = time.perf_counter()
    built = meta_train.build(config)  # the trainer and shardings exactly as meta_train builds them
    setup_s = time.perf_counter() - t0

    progress(f"compiling one meta-step ({config.env_steps_per_meta_step:,} env steps; minutes on a 2-core CPU)...")
    t0 = time.perf_counter()
    lowered = built.run_chunk.lower(built.template)
    trace_s = time.perf_counter() - t0
    run = lowered.compile()
    compile_s = time.perf_counter() - t0
    footprint = budget.compiled_footprint(run)
    flops = config.rule_matmul_flops()
    result = {
        "env_steps_per_meta_step": config.env_steps_per_meta_step,
        "memory_gb_per_device": round(footprint["bytes"] / budget.GB, 3),
        "temp_gb": round(footprint["temp_bytes"] / budget.GB, 3),
        "xla_flops": footprint["flops"],
        "rule_matmul_gflop": round(flops["total"] / 1e9, 2),
        "compile_s": round(compile_s, 2),
        "trace_lower_s": round(trace_s, 2),
        "setup_s": round(setup_s, 2),
    }
    try:
        budget.check_fits(footprint, budget.device_capacity(jax.local_devices()[0]), "not timed")
    except ValueError as e:
        return {**result, "not_timed": str(e)}
    if memory_only:
        return result
    state = built.init(jax.random.PRNGKey(0))
    progress(f"compiled in {compile_s:.0f}s ({result['memory_gb_per_device']} GB); warm-up and {repeats} timed meta-steps...")
    state, _ = jax.block_until_ready(run(state))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(run(state))
        times.append(time.perf_counter() - t0)
    per_step = min(times)
    return {
        **result,
        "steps_per_s": round(config.env_steps_per_meta_step / per_step),
        "s_per_meta_step": round(per_step, 4),
        "median_s_per_meta_step": round(sorted(times)[len(times) // 2], 4),
        "rule_matmul_flops_per_s": flops["total"] / per_step,
        "meta_loss_finite": bool(jnp.isfinite(metrics["meta_loss"]).all()),
    }


def shape_of(config: MetaConfig) -> dict:
    return {"sources": len(config.envs), "lifetimes_per_env": config.lifetimes_per_env,
            "num_envs": config.num_envs, "rollout_len": config.rollout_len, "inner_updates": config.inner_updates,
            "lstm_hidden": config.rule.hidden, "lifetime_microbatches": config.lifetime_microbatches,
            "remat": config.remat}


def rule_alone(config: MetaConfig, repeats: int) -> dict:
    """The rule on its own, at one inner update's streams of `config` (sources x lifetimes x envs, T
    steps), applied as `lpg.inner.LPGAgent.update` applies it (vmapped over streams): its forward, and
    its forward with the VJP the meta-gradient takes (cotangents for the parameters and for the inputs
    that depend on the agent: π(a_t|s_t), y(s_t), y(s_t+1)).
    Beside it, the same matmuls without the LSTM's gates: a scan of h ← tanh(x W_i + h W_h)[:, :H]
    over [B, 6 + H] @ [6 + H, 4H] products, forward and forward + VJP. Each with its analytic matmul
    FLOP/s; the gap between the two rows is what the gates' elementwise arithmetic, the resets, the
    heads and φ cost."""
    rule_cfg = config.rule
    streams = len(config.envs) * config.lifetimes_per_env * config.num_envs
    t, h, m = config.rollout_len, rule_cfg.hidden, rule_cfg.y_size
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    uniform = lambda k, shape: jax.random.uniform(k, shape, jnp.float32)  # noqa: E731
    lifetime = (uniform(keys[6], (streams, t)), jnp.full((streams, t), 5.3)) if rule_cfg.lifetime_inputs else (None, None)
    inputs = RuleInputs(
        r_t=jax.random.normal(keys[0], (streams, t)), d_t=(uniform(keys[1], (streams, t)) < 0.1).astype(jnp.float32),
        done_t=(uniform(keys[2], (streams, t)) < 0.1).astype(jnp.float32), discount=jnp.full((streams, t), 0.99),
        pi_a_t=uniform(keys[3], (streams, t)), y_t=uniform(keys[4], (streams, t, m)),
        y_tp1=uniform(keys[5], (streams, t, m)), progress=lifetime[0], log_lifetime=lifetime[1])
    rule = UpdateRule(rule_cfg)
    params = init_rule(rule_cfg, keys[7])
    apply = lambda p, x: jax.vmap(lambda s: rule.apply(p, s))(x)  # noqa: E731

    def rule_grad(p, pi_a_t, y_t, y_tp1):
        # The meta-gradient's cotangents: the parameters and the inputs that depend on the agent
        # (π(a_t|s_t), y(s_t), y(s_t+1)); rewards, discounts and episode ends are constants.
        def weighted(p, pi_a_t, y_t, y_tp1):
            pi_hat, y_hat = apply(p, inputs._replace(pi_a_t=pi_a_t, y_t=y_t, y_tp1=y_tp1))
            return jnp.sum(pi_hat * inputs.r_t) + jnp.sum(y_hat * y_t)
        return jax.grad(weighted, argnums=(0, 1, 2, 3))(p, pi_a_t, y_t, y_tp1)

    def with_vjp(fn, *args):
        out, vjp = jax.vjp(fn, *args)
        return vjp(jax.tree.map(jnp.ones_like, out))

    num_inputs = 8 if rule_cfg.lifetime_inputs else 6
    x = jax.random.normal(keys[0], (streams, num_inputs))
    w_i = jax.random.normal(keys[1], (num_inputs, 4 * h)) / num_inputs
    w_h = jax.random.normal(keys[2], (h, 4 * h)) / h

    def matmuls_only(w_i, w_h, x):
        def step(h_t, _):
            return jnp.tanh(x @ w_i + h_t @ w_h)[:, :h], h_t
        return jax.lax.scan(step, jnp.zeros((streams, h)), None, length=t)[1]

    forward_flops = budget.rule_matmul_flops(streams, t, 1, h, m, rule_cfg.embed, num_inputs)["forward"]
    lstm_flops = 2.0 * streams * t * 4 * h * (num_inputs + h)
    timed = {
        "rule_forward": (apply, (params, inputs), forward_flops),
        "rule_forward_vjp": (rule_grad, (params, inputs.pi_a_t, inputs.y_t, inputs.y_tp1), 3 * forward_flops),
        "matmuls_only_forward": (matmuls_only, (w_i, w_h, x), lstm_flops),
        "matmuls_only_forward_vjp": (lambda *a: with_vjp(matmuls_only, *a), (w_i, w_h, x), 3 * lstm_flops),
    }
    calls = {name: (compile_timed(fn, args, name=name)[0], args) for name, (fn, args, _) in timed.items()}
    best = best_interleaved(calls, repeats)
    result = {"streams": streams, "rollout_len": t, "hidden": h}
    for name, (_, _, flops) in timed.items():
        result[name] = {"s": round(best[name], 4), "matmul_flops_per_s": flops / best[name]}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the `paper` preset's shape (960 lifetimes)")
    parser.add_argument("--scaling", action="store_true", help="every shape of the scaling table, in turn")
    parser.add_argument("--memory-only", action="store_true", help="compile and report memory and FLOPs; no timing")
    parser.add_argument("--rule", action="store_true",
                        help="also time the rule alone at one inner update's streams (forward, forward + VJP) "
                             "beside the same matmuls without the LSTM's gates")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lifetimes", type=int, default=None, help="override lifetimes_per_env")
    parser.add_argument("--hidden", type=int, default=None, help="override the LSTM width")
    args = parser.parse_args(argv)
    config = PAPER if args.paper else BENCH
    if args.lifetimes is not None:
        config = dataclasses.replace(config, lifetimes_per_env=args.lifetimes)
    if args.hidden is not None:
        config = dataclasses.replace(config, rule=dataclasses.replace(config.rule, hidden=args.hidden))
    shapes = [(label, dataclasses.replace(BENCH, **change)) for label, change in SCALING] if args.scaling \
        else [("paper" if args.paper else "bench", config)]
    progress("measuring this machine's dense-matmul FLOP/s...")
    peak = matmul_peak()
    rows = []
    for label, shape in shapes:
        progress(f"== {label}")
        row = {"label": label, "config": shape_of(shape), **measure(shape, args.repeats, args.memory_only)}
        if "rule_matmul_flops_per_s" in row:
            row["fraction_of_square_peak"] = round(row["rule_matmul_flops_per_s"] / peak["square_flops_per_s"], 3)
            row["fraction_of_lstm_shape_peak"] = round(row["rule_matmul_flops_per_s"] / peak["lstm_shape_flops_per_s"], 3)
        rows.append(row)
    report = {"benchmark": "meta", "machine": machine(), "matmul_peak": peak, "shapes": rows}
    if args.rule:
        progress("== the rule alone")
        alone = rule_alone(config, max(args.repeats, 5))
        for part in alone.values():
            if isinstance(part, dict):
                part["fraction_of_square_peak"] = round(part["matmul_flops_per_s"] / peak["square_flops_per_s"], 3)
        meta_step = rows[0].get("s_per_meta_step")
        if meta_step:  # K rule forwards with their VJP, against the whole meta-step
            alone["rule_share_of_meta_step"] = round(
                config.inner_updates * alone["rule_forward_vjp"]["s"] / meta_step, 3)
        report["rule_alone"] = alone
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
