"""Ad hoc (session 31): does the learned rule's y become a prediction of return on a game?

One LPG lifetime (rule RULE, Adam at LR, 64 envs x 20 steps, γ 0.995, α_y 0.5) and one A2C lifetime
(the evaluation's A2C settings, same rate and budget) on ENV; then each final agent acts for 1,000 more steps in 64 envs, and the
discounted return G_γ(s_t) from the first 300 steps of each stream (cut at episode ends; the rest of
the 1,000 steps keeps the truncation below 0.995^700 = 3%) is regressed, by ridge least squares
fitted on 32 streams and scored on the other 32 (held-out R²), on:
  LPG: y(s) [30] and the torso's last hidden layer h(s) [64];
  A2C: its value v(s) [1] and h(s) [64].
h says how much of G the agent's features hold; y and v whether the rule / A2C made a return
predictor out of them. A y R² near h's means y reads return as well as the features allow. Control:
h through a fixed random projection to 30 dimensions (y's size), which is what y's R² would be if y
were any 30 linear readouts of h rather than ones shaped by the rule.

    python results/minatar/annealnt3k/diag/y_return.py RULE.msgpack ENV LR UPDATES
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import rlax

from lpg import evaluate as ev_lib, learner as learner_lib, rollout as engine, update_rule
from experiments.evaluate import a2c_config as evaluation_a2c_config
from lpg.a2c import actor_critic_network, make_a2c
from lpg.agents import FEATURES
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner

rule_path, game, lr, updates = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
NUM_ENVS, T_EVAL, T_FIT, DISCOUNTS = 64, 1000, 300, (0.995, 0.99, 0.95)

rule_params, rule_config = update_rule.load_rule(rule_path)
ev = ev_lib.eval_env(game, 1, jax.random.PRNGKey(0))
env, level = ev.env, ev.level(0)


def features(network, params, obs):
    """(aux head output, torso features h) for obs [T, B, ...]."""
    def one(o):
        (_, aux), state = network.apply(params, o, mutable=["intermediates"])
        return aux, state["intermediates"][FEATURES][0]
    return jax.vmap(jax.vmap(one))(obs)


def returns(traj, discount):
    """G_γ(s_t) [T, B]: discounted rewards to the end of the episode or of the T steps."""
    discount_t = discount * (1.0 - traj.done.astype(jnp.float32))
    return jax.vmap(lambda r, d: rlax.discounted_returns(r, d, 0.0), in_axes=1, out_axes=1)(traj.reward, discount_t)


def held_out_r2(x, g):
    """Ridge fit of g [T, B] on x [T, B, F] over streams :B/2, R² on streams B/2:."""
    x = np.asarray(x, np.float64)[:T_FIT]; g = np.asarray(g, np.float64)[:T_FIT]
    half = x.shape[1] // 2
    xf, gf = x[:, :half].reshape(-1, x.shape[-1]), g[:, :half].ravel()
    xt, gt = x[:, half:].reshape(-1, x.shape[-1]), g[:, half:].ravel()
    mu, sd = xf.mean(0), xf.std(0) + 1e-8
    xf, xt = (xf - mu) / sd, (xt - mu) / sd
    a = np.c_[xf, np.ones(len(xf))]
    w = np.linalg.solve(a.T @ a + 1e-3 * len(xf) * np.eye(a.shape[1]), a.T @ gf)
    pred = np.c_[xt, np.ones(len(xt))] @ w
    return 1.0 - np.mean((gt - pred) ** 2) / (np.var(gt) + 1e-12)


def lifetime(learner, network, params_of, key):
    train = learner_lib.make_train(env, level, learner, NUM_ENVS, 20)
    state, _ = jax.jit(train.run, static_argnums=1)(train.init(key), updates)
    params = params_of(state.learner)
    _, traj = jax.jit(lambda s, k: engine.rollout(env, level, learner.policy_fn, params, s, k, T_EVAL))(
        state.rollout, jax.random.PRNGKey(7))
    aux, h = jax.jit(lambda o: features(network, params, o))(traj.obs)
    return traj, aux, h


hypers = Hypers(*(jnp.float32(x) for x in (0.995, lr, 0.5, 0.0, updates)))
agent = make_lpg_agent(env, level, rule_config, agent="auto", optimizer="adam", hidden=64)
lpg = make_lpg_learner(agent, rule_params, hypers)
a2c_config = evaluation_a2c_config(tabular=False)  # the evaluation's A2C for networks (Adam, clip 0.5)
a2c = make_a2c(env, level, a2c_config, learning_rate=lr)
rows = {}
projection = jax.random.normal(jax.random.PRNGKey(3), (64, 30))  # the control: 30 random readouts of h
for name, learner, network in (("LPG", lpg, agent.network), ("A2C", a2c, actor_critic_network(env, level, a2c_config))):
    traj, aux, h = lifetime(learner, network, learner.policy_params, jax.random.PRNGKey(1))
    ep = np.asarray(traj.done).sum()
    mean_ret = float(np.asarray(traj.episode_return)[np.asarray(traj.done)].mean()) if ep else float("nan")
    for d in DISCOUNTS:
        g = returns(traj, d)
        rows[(name, d)] = (held_out_r2(aux, g), held_out_r2(h, g), held_out_r2(h @ projection, g),
                           float(np.std(np.asarray(g)[:T_FIT])))
    print(f"{name}: episodes ending in the 1,000 evaluation steps {ep}, their mean return {mean_ret:.2f}, "
          f"|aux| mean {float(jnp.abs(aux).mean()):.4f}", flush=True)
print(f"{game}, rule {rule_path}, lr {lr:g}, {updates} updates")
print("learner  γ      R²(aux: y or v)  R²(h)   R²(h, 30 random readouts)  sd(G)")
for (name, d), (r_aux, r_h, r_proj, sd) in rows.items():
    print(f"{name:7s}  {d:<6g} {r_aux:8.3f}        {r_h:6.3f}  {r_proj:8.3f}                  {sd:7.3f}")
