"""Conv agents on MinAtar: XLA's convolution vs the matmul convolution, and what a lifetime costs.

    python -m benchmarks.conv                      # prints JSON
    python -m benchmarks.conv --games Breakout-MinAtar --repeats 3

(a) `grad`: the A2C loss gradient of the conv agent on one rollout (64 streams x 20 steps of
    Breakout-MinAtar observations), with `nn.Conv` and with `lpg.agents.MatmulConv` (same
    parameters, same function), once on its own and 10 times inside a `lax.scan`, as a lifetime
    runs it. Rows give ms per gradient and the ratio nn.Conv / matmul.
(b) `a2c` / `env`: per game, env steps/s of A2C training through the engine (the conv agent as
    shipped, Adam, 64 x 20 per update, 10 updates per timed run) and of the engine alone under a
    uniformly random policy: what sets the time of a MinAtar lifetime on this machine.
Everything is compiled first and then timed in turn, best of --repeats each (benchmarks.timing).
"""

from __future__ import annotations

import argparse
import json

import flax.linen as nn
import gymnax
import jax

from benchmarks.envs import engine_stepping
from benchmarks.timing import best_interleaved, compile_timed, machine
from lpg import rollout as engine
from lpg.a2c import A2CConfig, a2c_loss, make_a2c
from lpg.agents import ConvAgent, MatmulConv
from lpg.learner import make_train

GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
NUM_ENVS, ROLLOUT_LEN = 64, 20


def one_rollout(env, env_params):
    """A [T, B] trajectory of Breakout observations under A2C's initial policy."""
    learner = make_a2c(env, env_params, A2CConfig(num_envs=NUM_ENVS, rollout_len=ROLLOUT_LEN, optimizer="adam"))
    state = make_train(env, env_params, learner, NUM_ENVS, ROLLOUT_LEN).init(jax.random.PRNGKey(0))
    _, traj = jax.jit(lambda s: engine.rollout(env, env_params, learner.policy_fn, learner.policy_params(s.learner),
                                               s.rollout, jax.random.PRNGKey(1), ROLLOUT_LEN))(state)
    return traj


def gradient_setups(conv, traj, num_actions: int) -> dict:
    network = ConvAgent(num_actions, 1, conv=conv)
    params = network.init(jax.random.PRNGKey(0), traj.obs[0, 0])
    config = A2CConfig(optimizer="adam")

    def grad(params):
        batch_loss = lambda p: jax.vmap(a2c_loss, in_axes=(None, None, 1, None))(network.apply, p, traj, config)[0].mean()  # noqa: E731
        return jax.grad(batch_loss)(params)

    def scanned(params):  # 10 gradient steps in a scan, as inside a lifetime
        step = lambda p, _: (jax.tree.map(lambda a, g: a - 1e-3 * g, p, grad(p)), None)  # noqa: E731
        return jax.lax.scan(step, params, None, length=10)[0]

    return {"alone": (grad, (params,), 1), "in scan": (scanned, (params,), 10)}


def a2c_setup(env, env_params, updates: int = 10):
    config = A2CConfig(num_envs=NUM_ENVS, rollout_len=ROLLOUT_LEN, optimizer="adam", learning_rate=1e-3)
    train = make_train(env, env_params, make_a2c(env, env_params, config), NUM_ENVS, ROLLOUT_LEN)
    state = jax.jit(train.init)(jax.random.PRNGKey(0))
    return (lambda s: train.run(s, updates)[1]["loss"].sum()), (state,), NUM_ENVS * ROLLOUT_LEN * updates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=list(GAMES))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, interleaved (best counts)")
    args = parser.parse_args(argv)

    env, env_params = gymnax.make("Breakout-MinAtar")
    traj = one_rollout(env, env_params)
    setups = {}
    for label, conv in (("nn.Conv", nn.Conv), ("matmul", MatmulConv)):
        for where, setup in gradient_setups(conv, traj, env.action_space(env_params).n).items():
            setups[f"{label} {where}"] = setup
    for game in args.games:
        game_env, game_params = gymnax.make(game)
        setups[f"{game} a2c"] = a2c_setup(game_env, game_params)
        setups[f"{game} env"] = engine_stepping(game_env, game_params, NUM_ENVS, 200)
    compiled = {key: compile_timed(fn, a, name=key) for key, (fn, a, _) in setups.items()}
    best = best_interleaved({key: (c, setups[key][1]) for key, (c, _) in compiled.items()}, args.repeats)

    grad_rows = []
    for where in ("alone", "in scan"):
        ms = {label: 1e3 * best[f"{label} {where}"] / setups[f"{label} {where}"][2] for label in ("nn.Conv", "matmul")}
        grad_rows.append({"where": where, "nn_conv_ms": round(ms["nn.Conv"], 2), "matmul_ms": round(ms["matmul"], 2),
                          "ratio": round(ms["nn.Conv"] / ms["matmul"], 2)})
    game_rows = [{"game": game, **{f"{mode}_steps_per_s": round(setups[f"{game} {mode}"][2] / best[f"{game} {mode}"])
                                   for mode in ("a2c", "env")},
                  "a2c_compile_s": compiled[f"{game} a2c"][1]} for game in args.games]
    print(json.dumps({"benchmark": "conv", "machine": machine(), "gradient": grad_rows, "games": game_rows}, indent=1))


if __name__ == "__main__":
    main()
