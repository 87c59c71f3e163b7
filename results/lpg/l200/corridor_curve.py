"""The README corridor's learning curve under a rule used with both options: mean over 4 seeds.

    python results/lpg/l200/corridor_curve.py RULE [RULE ...]   # from the repository root

Runs the README's custom-environment block but for the rule (y_init=zeros,
pi_hat_baseline=adam_step_mean), the Adam rate (2e-2) and 4 seeds, and prints the mean episode
return, the mean π̂ and the mean ŷ at updates 1, 26, 51, ..., 150. Ad hoc diagnostic, session 14.
"""
import dataclasses, re, sys
from pathlib import Path
import numpy as np
blocks = re.findall(r"```python\n(.*?)```", Path("README.md").read_text(), flags=re.S)
code = [b for b in blocks if b.startswith("# example: custom-environment\n")][0]
head = code[:code.find("for name, learner in")]
old = "results/lpg/ablation/prev_seed0_baseline/rule.msgpack"
use = "rule_config = dataclasses.replace(rule_config, y_init='zeros', pi_hat_baseline='adam_step_mean')\n"
at = [0, 25, 50, 75, 100, 125, 149]
for rule in sys.argv[1:]:
    src = head.replace(old, rule).replace("num_seeds=2", "num_seeds=4")
    src = src.replace("learning_rate=1e-2, alpha_y", "learning_rate=2e-2, alpha_y").replace("hypers = Hypers", use + "hypers = Hypers")
    assert src.count(use) == 1 and "learning_rate=2e-2, alpha_y" in src and "num_seeds=4" in src
    g = {"__name__": "x", "dataclasses": dataclasses}
    exec(compile(src, "README.md", "exec"), g)
    m = g["evaluate"].run_lifetimes(g["env"], g["params"], g["lpg"], g["lifetime"], g["jax"].random.PRNGKey(0))
    print(f"{rule} (Adam 2e-2, 4 seeds), at updates {[u + 1 for u in at]}:")
    for key in ("episode_return", "pi_hat", "y_hat"):
        print(f"  {key:>14}: {np.round(np.asarray(m[key]).mean(axis=0)[at], 3)}", flush=True)
