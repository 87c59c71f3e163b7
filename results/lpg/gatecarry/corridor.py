"""The README's custom-environment example (a corridor no source or suite uses), rules x Adam rates, 4 seeds.

    python results/lpg/gatecarry/corridor.py RULE [RULE ...]   # from the repository root

Runs the README block as written but for the rule, the agent's Adam rate (5e-3, 1e-2, 2e-2) and 4 seeds;
prints each lifetime's final return (optimum 1.0, the uniform policy ~0.4). Ad hoc diagnostic, session 11.
"""
import re, sys
from pathlib import Path
import numpy as np
blocks = re.findall(r"```python\n(.*?)```", Path("README.md").read_text(), flags=re.S)
code = [b for b in blocks if b.startswith("# example: custom-environment\n")][0]
head = code[:code.find("for name, learner in")]
old = "results/lpg/ablation/prev_seed0_baseline/rule.msgpack"
for rule in sys.argv[1:]:
    for lr in (5e-3, 1e-2, 2e-2):
        src = head.replace(old, rule).replace("num_seeds=2", "num_seeds=4").replace("learning_rate=1e-2, alpha_y", f"learning_rate={lr}, alpha_y")
        g = {"__name__": "x"}
        exec(compile(src, "README.md", "exec"), g)
        m = g["evaluate"].run_lifetimes(g["env"], g["params"], g["lpg"], g["lifetime"], g["jax"].random.PRNGKey(0))
        f = np.asarray(g["evaluate"].summarise(m, g["lifetime"])["final"])
        print(f"{rule} lr {lr}: final {np.round(f, 2)} mean {f.mean():.2f}", flush=True)
