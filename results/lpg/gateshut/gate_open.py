"""How open is a gated rule's bootstrap gate on a delayed chain? (ad hoc diagnostic, session 10)

    PYTHONPATH=. python results/lpg/gateshut/gate_open.py LENGTH RULE [RULE ...]

For each rule: a table agent trained by the rule on one chain of LENGTH steps (good branch on action 0),
γ 0.995, SGD 80, α_y 0.5, 32 envs x 20 steps, 3 seeds, 50 updates (as y_propagation.py). Then the rule
is applied to 20-step windows of one episode on each branch, read from the agent's own π and y tables,
and the gate g (mean over y's components) is printed: at the last step of a window that ends before
the reward (the LSTM has seen no reward: the bootstrap across a rollout's end), at the other reward-free
steps, and at the terminal step.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from envs.chain import DelayedChain, make_chain
from lpg.evaluate import lpg_learner
from lpg.inner import Hypers
from lpg.learner import make_train
from lpg.update_rule import RuleInputs, UpdateRule, load_rule

L, T = int(sys.argv[1]), 20
env = DelayedChain(50)
params = make_chain(env, L, good_action=0)
for path in sys.argv[2:]:
    rule_params, cfg = load_rule(path)
    assert cfg.bootstrap_gate, path
    hyp = Hypers(*(jnp.asarray(x, jnp.float32) for x in (0.995, 80.0, 0.5, 0.0, 100)))
    tr = make_train(env, params, lpg_learner(env, params, rule_params, cfg, hyp, agent="tabular", optimizer="sgd"), 32, T)
    run = jax.jit(tr.run, static_argnums=1)
    ends, inner, terminal = [], [], []
    for seed in range(3):
        st, _ = run(tr.init(jax.random.PRNGKey(seed)), 50)
        p = st.learner.params["params"]
        y, logits = np.asarray(p["aux"]), np.asarray(p["pi"])
        for branch in (0, 1):
            obs = np.array([0] + [pos * 2 + branch for pos in range(1, L + 1)])  # s_0 .. s_L (s_L: terminal)
            acts = np.array([branch] + [0] * (L - 1))
            pi = np.asarray(jax.nn.softmax(logits[obs[:-1]]))[np.arange(L), acts]
            r = np.zeros(L); r[-1] = 1.0 if branch == 0 else -1.0
            d = np.zeros(L); d[-1] = 1.0
            for start in range(0, L - T + 1):
                sl = slice(start, start + T)
                inputs = RuleInputs(jnp.asarray(r[sl]), jnp.asarray(d[sl]), jnp.asarray(d[sl]), jnp.full((T,), 0.995),
                                    jnp.asarray(pi[sl]), jnp.asarray(y[obs[:-1][sl]]), jnp.asarray(y[obs[1:][sl]]))
                _, state = UpdateRule(cfg).apply(rule_params, inputs, capture_intermediates=True, mutable=["intermediates"])
                g = np.asarray(jax.nn.sigmoid(state["intermediates"]["gate"]["__call__"][0])).mean(-1)
                if start + T < L:  # no reward in the window
                    ends.append(g[-1]); inner.extend(g[:-1])
                else:
                    terminal.append(g[-1])
    print(f"{path}: gate at a window's last step (no reward seen) {np.mean(ends):.3f} "
          f"[{np.percentile(ends, 5):.3f}, {np.percentile(ends, 95):.3f}]; other reward-free steps {np.mean(inner):.3f}; "
          f"terminal step {np.mean(terminal):.3f}")
