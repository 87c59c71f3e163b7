"""The README's custom-environment example (a corridor no source or suite uses), rules x Adam rates, 4 seeds.

    python results/lpg/gatecarry/corridor.py RULE [RULE ...]   # from the repository root
    python results/lpg/gatecarry/corridor.py --use y_init=zeros --use pi_hat_baseline=adam_step_mean RULE ...
    python results/lpg/gatecarry/corridor.py --updates 300 RULE ...   # lifetimes of 300 updates instead of the block's 150
    python results/lpg/gatecarry/corridor.py --rollout-len 20 RULE ... # rollouts of 20 steps instead of the block's 10

Runs the README block as written but for the rule, the agent's Adam rate (5e-3, 1e-2, 2e-2), 4 seeds
and (`--updates N`, `--rollout-len T`) the lifetime's updates and rollout length; prints each lifetime's final return (optimum 1.0, the
uniform policy ~0.4). `--use FIELD=VALUE` replaces a RuleConfig field of how agents use the rule
(y_init, pi_hat_baseline) after loading it, as `experiments.evaluate --y-init/--pi-hat-baseline` do.
Ad hoc diagnostic, sessions 11-14.
"""
import re, sys
from pathlib import Path
import numpy as np
blocks = re.findall(r"```python\n(.*?)```", Path("README.md").read_text(), flags=re.S)
code = [b for b in blocks if b.startswith("# example: custom-environment\n")][0]
head = code[:code.find("for name, learner in")]
old = "results/lpg/ablation/prev_seed0_baseline/rule.msgpack"
argv, use, updates, rollout_len = sys.argv[1:], {}, None, None
while argv and argv[0] in ("--use", "--updates", "--rollout-len"):
    if argv[0] == "--updates":
        updates, argv = int(argv[1]), argv[2:]
        continue
    if argv[0] == "--rollout-len":
        rollout_len, argv = int(argv[1]), argv[2:]
        continue
    field, value = argv[1].split("=")
    assert field in ("y_init", "pi_hat_baseline"), field
    use[field], argv = value, argv[2:]
if updates is not None:
    assert head.count("num_updates=150") == 1
    head = head.replace("num_updates=150", f"num_updates={updates}")
if rollout_len is not None:  # the lifetime's rollouts (the A2C in the block is not run here)
    assert head.count("num_envs=16, rollout_len=10, num_seeds") == 1
    head = head.replace("num_envs=16, rollout_len=10, num_seeds", f"num_envs=16, rollout_len={rollout_len}, num_seeds")
load = "rule_params, rule_config = load_rule(\"%s\")\n"
for rule in argv:
    for lr in (5e-3, 1e-2, 2e-2):
        src = head.replace(load % old, load % old + "".join(
            f"rule_config = __import__('dataclasses').replace(rule_config, {k}={v!r})\n" for k, v in use.items()))
        assert src != head or not use
        src = src.replace(old, rule).replace("num_seeds=2", "num_seeds=4").replace("learning_rate=1e-2, alpha_y", f"learning_rate={lr}, alpha_y")
        g = {"__name__": "x"}
        exec(compile(src, "README.md", "exec"), g)
        m = g["evaluate"].run_lifetimes(g["env"], g["params"], g["lpg"], g["lifetime"], g["jax"].random.PRNGKey(0))
        f = np.asarray(g["evaluate"].summarise(m, g["lifetime"])["final"])
        print(f"{rule}{''.join(f' {k}={v}' for k, v in use.items())} lr {lr}: final {np.round(f, 2)} mean {f.mean():.2f}", flush=True)
