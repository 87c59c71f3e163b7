"""Environment steps per second on the tabular dense grid, three ways, in one run.

    python -m benchmarks.envs                       # B = 64, 1024, 4096; prints JSON
    python -m benchmarks.envs --batch 1024 --steps 500

(a) `bare`:   gymnax-style stepping with random actions, `vmap(env.step)` inside `lax.scan`
              (auto-reset included, as every learner pays it);
(b) `engine`: `lpg.rollout.rollout` with a fixed uniformly random policy;
(c) `a2c`:    A2C training through the engine (`make_train` + `make_a2c`, tabular agent,
              T = 20 rollouts, one SGD update per rollout).
Each row gives steps/s, the compile time and the ratio to (a) at the same B. A gymnax
FourRooms-misc row of (a) is the reference for the grid's own speed. Ratios are only
meaningful within one run: the machine is shared, so the three (and the reference) are compiled
first and then timed in turn, a, b, c, a, b, c, ..., best of --repeats each.
"""

from __future__ import annotations

import argparse
import json

import jax

import envs
from benchmarks.timing import best_interleaved, compile_timed, machine, progress
from lpg import rollout as engine
from lpg.a2c import A2CConfig, make_a2c
from lpg.learner import make_train


def bare_stepping(env, env_params, batch: int, steps: int):
    """(a): random actions, vmap(env.step) over B, lax.scan over T.

    The observation is carried in the scan state, as any acting loop must: a loop that drops
    it lets XLA delete the observation code altogether, which no learner can do.
    """
    num_actions = env.action_space(env_params).n

    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, batch), env_params)

        def body(carry, key):
            _, state = carry
            k_act, k_step = jax.random.split(key)
            action = jax.random.randint(k_act, (batch,), 0, num_actions)
            obs, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, batch), state, action, env_params
            )
            return (obs, state), reward.sum()

        (obs, _), rewards = jax.lax.scan(body, (obs, state), jax.random.split(k_run, steps))
        return rewards.sum() + jax.tree.map(lambda x: x.sum(), obs)

    return run, (jax.random.PRNGKey(0),), batch * steps


def engine_stepping(env, env_params, batch: int, steps: int):
    """(b): the rollout engine under a fixed uniformly random policy."""
    num_actions = env.action_space(env_params).n

    def policy_fn(params, carry, timestep, key):
        return jax.random.randint(key, (), 0, num_actions), (), carry

    def run(key):
        k_reset, k_run = jax.random.split(key)
        state = engine.reset(env, env_params, k_reset, batch)
        _, traj = engine.rollout(env, env_params, policy_fn, (), state, k_run, steps)
        return traj.reward.sum()

    return run, (jax.random.PRNGKey(0),), batch * steps


def a2c_training(env, env_params, batch: int, steps: int, rollout_len: int = 20):
    """(c): A2C (tabular agent, SGD) trained through the engine; `steps` env steps per run."""
    config = A2CConfig(num_envs=batch, rollout_len=rollout_len, agent="tabular")
    train = make_train(env, env_params, make_a2c(env, env_params, config), batch, rollout_len)
    updates = max(1, steps // rollout_len)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))

    def run(state):
        return train.run(state, updates)[1]["loss"].sum()

    return run, (state,), batch * rollout_len * updates


def measure(setups: dict, repeats: int) -> dict:
    """Compiles every `name -> (fn, args, env_steps)`, then times them interleaved."""
    compiled = {name: compile_timed(fn, args, name=name) for name, (fn, args, _) in setups.items()}
    best = best_interleaved({name: (c, setups[name][1]) for name, (c, _) in compiled.items()}, repeats)
    return {
        name: {"steps_per_s": round(setups[name][2] / best[name]), "compile_s": compiled[name][1],
               "run_s": round(best[name], 4), "env_steps": setups[name][2]}
        for name in setups
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--steps", type=int, default=1000, help="T: steps per stream per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, interleaved (best counts)")
    parser.add_argument("--env", default="tabular_dense")
    parser.add_argument("--no-reference", action="store_true", help="skip the gymnax FourRooms-misc row")
    args = parser.parse_args(argv)

    env, env_params = envs.make(args.env)
    rows = []
    for batch in args.batch:
        progress(f"B = {batch} streams x T = {args.steps} steps")
        setups = {
            "bare": bare_stepping(env, env_params, batch, args.steps),
            "engine": engine_stepping(env, env_params, batch, args.steps),
            "a2c": a2c_training(env, env_params, batch, args.steps),
        }
        if not args.no_reference:
            ref_env, ref_params = envs.make("FourRooms-misc")
            setups["FourRooms-misc bare"] = bare_stepping(ref_env, ref_params, batch, args.steps)
        measured = measure(setups, args.repeats)
        bare = measured["bare"]["steps_per_s"]
        for mode, row in measured.items():
            env_name, mode = ("FourRooms-misc", "bare") if mode == "FourRooms-misc bare" else (args.env, mode)
            rows.append({"env": env_name, "mode": mode, "batch": batch, **row,
                         "ratio_to_bare": round(row["steps_per_s"] / bare, 3)})
    print(json.dumps({"benchmark": "envs", "machine": machine(), "steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
