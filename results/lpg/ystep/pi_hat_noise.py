"""What a rule emits on one DeepSea-bsuite rollout of a fresh MLP agent (256 streams x 20 steps), with
the agent's y head started at random (lecun) or at zero. From the repository root:

    python results/lpg/ystep/pi_hat_noise.py RULE [RULE ...]

Every stream starts together and DeepSea's episodes last 8 steps, so steps 0-7 of every stream are one
episode in the same rows: π̂'s spread over streams at one step, among episodes that missed the goal,
is noise no outcome explains. Prints π̂'s mean per step (what a per-step baseline removes), that spread,
and the action means (action 1 moves right, which costs 0.00125). Diagnostic of session 12.
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lpg import rollout as engine
from lpg.evaluate import eval_env
from lpg.inner import Hypers, make_lpg_agent
from lpg.update_rule import load_rule

ev = eval_env("DeepSea-bsuite", 1, jax.random.PRNGKey(0))
level = ev.level(0)
hypers = Hypers(*(jnp.float32(x) for x in (0.995, 5e-3, 0.5, 0.0, 100)))
for path in sys.argv[1:]:
    rule_params, config = load_rule(path)
    for y_init in ("lecun", "zeros"):
        agent = make_lpg_agent(ev.env, level, dataclasses.replace(config, y_init=y_init), optimizer="adam")
        state = agent.init(jax.random.PRNGKey(0), hypers.learning_rate)
        rollout_state = engine.reset(ev.env, level, jax.random.PRNGKey(1), 256)
        _, traj = engine.rollout(ev.env, level, agent.policy_fn, state.params, rollout_state, jax.random.PRNGKey(2), 20)
        inputs = jax.vmap(agent.rule_inputs, in_axes=(None, 1, None, None))(state.params, traj, hypers, 0)
        pi_hat = np.asarray(jax.vmap(lambda x: agent.rule.apply(rule_params, x))(inputs)[0])  # [B, T]
        reward, action = np.asarray(traj.reward).T, np.asarray(traj.action).T
        first = reward[:, :8].sum(1)
        missed = pi_hat[first <= 0.5, :8]
        print(f"{path} y_init={y_init}: steps 0-7 of the {len(missed)} streams whose first episode missed the "
              f"goal: π̂'s mean per step {np.round(missed.mean(0), 2)}, its spread over streams per step "
              f"{np.round(missed.std(0), 3)}; "
              f"mean π̂ of action 0 {pi_hat[action == 0].mean():.3f}, action 1 {pi_hat[action == 1].mean():.3f}")
