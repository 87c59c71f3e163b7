"""How far up a delayed chain does y carry the branch's value? (an ad-hoc diagnostic, session 6)

    python results/lpg/cond_scales/y_propagation.py LENGTH RULE [RULE ...]
    ROLLOUT=10 UPDATES=200 python results/lpg/cond_scales/y_propagation.py LENGTH RULE   # other lifetimes
    GOOD=1 python results/lpg/cond_scales/y_propagation.py LENGTH RULE   # the good branch on action 1 (default 0)

For each rule: a table agent on one chain of LENGTH steps (good branch on action GOOD, default 0), γ 0.995, SGD 80,
α_y 0.5, 32 envs x 20 steps (ROLLOUT), 3 seeds, 100 updates (UPDATES); every quarter of them it prints π(good | start)
and, at positions 1-40 of the chain, φ(y(good-branch state)) − φ(y(bad-branch state)), where φ
is the rule's own embedding of y (all the rule sees of y). A rule that carries credit through y
shows a difference all the way to position 1.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from envs.chain import DelayedChain, make_chain
from lpg.update_rule import load_rule
from lpg.evaluate import lpg_learner
from lpg.inner import Hypers
from lpg.learner import make_train

L = int(sys.argv[1])
T, N = int(os.environ.get("ROLLOUT", 20)), int(os.environ.get("UPDATES", 100))
env = DelayedChain(50)
G = int(os.environ.get("GOOD", 0))  # the good branch's action
params = make_chain(env, L, good_action=G)
for path in sys.argv[2:]:
    rule_params, cfg = load_rule(path)
    hyp = Hypers(*(jnp.asarray(x, jnp.float32) for x in (0.995, 80.0, 0.5, 0.0, N)))
    learner = lpg_learner(env, params, rule_params, cfg, hyp, agent="tabular", optimizer="sgd")
    tr = make_train(env, params, learner, 32, T)
    out = []
    run = jax.jit(tr.run, static_argnums=1)
    for seed in range(3):
        st = tr.init(jax.random.PRNGKey(seed))
        rows = []
        for chunk in range(4):
            st, _ = run(st, N // 4)
            p = st.learner.params["params"]
            y = np.asarray(p["aux"]); pi = np.asarray(jax.nn.softmax(p["pi"][0]))
            # φ, the rule's embedding of y (Dense -> ReLU -> Dense), applied to every row of the y table
            d0, d1 = rule_params["params"]["Dense_0"], rule_params["params"]["Dense_1"]
            ph = np.asarray(jax.nn.relu(y @ d0["kernel"] + d0["bias"]) @ d1["kernel"] + d1["bias"])[:, 0]
            good = ph[[pos * 2 + G for pos in range(1, L)]]  # obs = position * 2 + branch (= first action)
            bad = ph[[pos * 2 + 1 - G for pos in range(1, L)]]
            rows.append((pi[G], good - bad))
        out.append(rows)
    print(path)
    for seed, rows in enumerate(out):
        for c, (p0, d) in enumerate(rows):
            print(f"  seed {seed} upd {N//4*(c+1):3d} pi(good|start)={p0:.2f} d(1,5,10,20,25,30,35,40) "
                  + " ".join(f"{d[i-1]:+.2f}" for i in (1, 5, 10, 20, 25, 30, 35, 40) if i < L))
