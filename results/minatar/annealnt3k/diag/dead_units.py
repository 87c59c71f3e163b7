"""Ad hoc (session 28): do the conv agent's hidden units stay alive? One lifetime per (learner, rate)
on a game, 64 envs x 20 steps, γ 0.995, LPG α_y 0.5 (the MinAtar protocol's settings; A2C as `experiments.evaluate` builds it); per window of
updates, the share of the 64 hidden units (the Dense layer after the conv) that are active on at
least one observation of the update's batch ("alive"), and the sd across states of log π(a|s)
(0: the policy no longer depends on the state). A dead unit (inactive on every input) gets no
gradient and never comes back.

    python results/minatar/annealnt3k/diag/dead_units.py GAME UPDATES RATE [RATE ...] -- RULE.msgpack [RULE ...]

Variants of the LPG agent (A2C then left out): `--alpha-y X` (default 0.5), `--y-init lecun` (the y
head at random instead of the rules' zeros), `--clip X` (Adam after clipping the gradient's global
norm at X, as A2C does), given before GAME.
"""
import dataclasses
import sys

import optax

import jax
import jax.numpy as jnp
import numpy as np

from experiments import evaluate as evaluate_cli
from lpg import agents, evaluate as ev_lib, inner, learner as learner_lib, update_rule
from lpg.a2c import make_a2c
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.learner import Learner

args = sys.argv[1:]
variant = {}
while args[0].startswith("--"):
    variant[args[0][2:]] = args[1]
    args = args[2:]
split = args.index("--")
game, updates, rates = args[0], int(args[1]), [float(x) for x in args[2:split]]
rule_paths = args[split + 1:]
alpha_y = float(variant.get("alpha-y", 0.5))
if "clip" in variant:
    inner.OPTIMIZERS["adam"] = lambda learning_rate: optax.chain(optax.clip_by_global_norm(float(variant["clip"])),
                                                                 optax.adam(learning_rate, eps_root=1e-8))
ev = ev_lib.eval_env(game, 1, jax.random.PRNGKey(0))
env, level = ev.env, ev.level(0)
WINDOWS = 10


def watched(base: Learner, network) -> Learner:
    """`base` with the alive share and the state-dependence of log π measured before each update."""

    def update(state, traj):
        params = base.policy_params(state)
        obs = traj.obs.reshape((-1,) + traj.obs.shape[2:])
        (logits, _), inter = jax.vmap(lambda o: network.apply(params, o, capture_intermediates=True,
                                                              mutable=["intermediates"]))(obs)
        h = inter["intermediates"]["Dense_0"]["__call__"][0]  # [N, hidden] before the ReLU
        new, _ = base.update(state, traj)
        return new, {"alive": jnp.mean(jnp.any(h > 0, axis=0)),
                     "logp_state_sd": jnp.mean(jnp.std(jax.nn.log_softmax(logits), axis=0))}

    return Learner(base.init, base.policy_fn, base.policy_params, update)


def lifetime(make_learner):
    train = learner_lib.make_train(env, level, make_learner(), 64, 20)
    _, metrics = jax.jit(train.run, static_argnums=1)(train.init(jax.random.PRNGKey(1)), updates)
    w = max(updates // WINDOWS, 1)
    return {k: np.asarray(v)[: w * WINDOWS].reshape(WINDOWS, w).mean(1) for k, v in metrics.items()}


def show(label, m):
    for k in ("alive", "logp_state_sd"):
        print(f"{label:28s} {k:14s}", " ".join(f"{x:6.3f}" for x in m[k]), flush=True)


print(f"== {game}, {updates} updates, {WINDOWS} windows of {updates // WINDOWS}" + (f", LPG {variant}" if variant else ""))
for lr in rates:
    if not variant:
        a2c_config = evaluate_cli.a2c_config(tabular=False)  # the evaluation's A2C for networks
        net = agents.make_agent(env, level, aux_size=1, kind=a2c_config.agent, hidden=a2c_config.hidden)
        show(f"A2C lr {lr:g}", lifetime(lambda: watched(make_a2c(env, level, a2c_config, learning_rate=lr), net)))
    for path in rule_paths:
        params, config = update_rule.load_rule(path)
        config = dataclasses.replace(config, y_init=variant.get("y-init", config.y_init))
        agent = make_lpg_agent(env, level, config, agent="auto", optimizer="adam", hidden=64)
        hypers = Hypers(*(jnp.float32(x) for x in (0.995, lr, alpha_y, 0.0, updates)))
        label = f"LPG {path.split('/')[-2]} lr {lr:g}"
        show(label, lifetime(lambda: watched(make_lpg_learner(agent, params, hypers), agent.network)))
