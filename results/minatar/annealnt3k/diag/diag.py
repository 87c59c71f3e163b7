"""Ad hoc (session 27): one LPG lifetime on a game, with per-update means over ten windows of the
policy's entropy, the push π̂ as used (its sd and the rule's mean), |y| and |ŷ|, the reward, and the
correlation of π̂ with the discounted reward-to-go inside the rollout.

    python results/minatar/annealnt3k/diag/diag.py RULE.msgpack GAME ADAM_LR UPDATES   # 64 envs x 20 steps, γ 0.995, α_y 0.5
"""
import sys
from pathlib import Path

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from lpg import evaluate as ev_lib, learner as learner_lib, update_rule
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.learner import Learner

rule_path = Path(sys.argv[1]); game = sys.argv[2]; lr = float(sys.argv[3]); updates = int(sys.argv[4])
rule_params, rule_config = update_rule.load_rule(rule_path)
ev = ev_lib.eval_env(game, 1, jax.random.PRNGKey(0))
agent = make_lpg_agent(ev.env, ev.level(0), rule_config, agent="auto", optimizer="adam", hidden=64)
hypers = Hypers(*(jnp.float32(x) for x in (0.995, lr, 0.5, 0.0, updates)))
base = make_lpg_learner(agent, rule_params, hypers)

def update(state, traj):
    logits, y = jax.vmap(jax.vmap(lambda o: agent.network.apply(state.params, o)))(traj.obs)
    ent = distrax.Categorical(logits=logits).entropy()
    new, m = agent.update(rule_params, state, traj, hypers)
    pi_hat, y_hat = m
    used = agent.pi_hat_used(pi_hat)  # [B, T]
    # Reward-to-go inside the rollout (discount 0.995, cut at episode ends): does the push follow reward?
    def back(g, x):
        r, d = x
        g = r + 0.995 * (1.0 - d) * g
        return g, g
    _, rtg = jax.lax.scan(back, jnp.zeros(traj.reward.shape[1]), (traj.reward, traj.done.astype(jnp.float32)), reverse=True)
    a, b = used.T.ravel(), rtg.ravel()
    corr = jnp.mean((a - a.mean()) * (b - b.mean())) / (a.std() * b.std() + 1e-8)
    return new, {"entropy": ent.mean(), "pi_hat_sd": used.std(), "pi_hat_mean": pi_hat.mean(),
                 "y_abs": jnp.abs(y).mean(), "y_hat_abs": jnp.abs(y_hat).mean(),
                 "reward": traj.reward.mean(), "corr_rtg": corr}

learner = Learner(base.init, base.policy_fn, base.policy_params, update)
train = learner_lib.make_train(ev.env, ev.level(0), learner, 64, 20)
state = train.init(jax.random.PRNGKey(1))
_, metrics = jax.jit(train.run, static_argnums=1)(state, updates)
metrics = jax.tree.map(np.asarray, metrics)
w = updates // 10
for k in ["entropy", "pi_hat_sd", "pi_hat_mean", "y_abs", "y_hat_abs", "reward", "corr_rtg"]:
    v = metrics[k][: w * 10].reshape(10, w).mean(1)
    print(f"{k:12s}", " ".join(f"{x:8.4f}" for x in v))
