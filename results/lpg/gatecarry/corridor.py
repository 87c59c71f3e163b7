"""The README's custom-environment example (a corridor no source or suite uses), rules x Adam rates, 4 seeds.

    python results/lpg/gatecarry/corridor.py RULE [RULE ...]   # from the repository root
    python results/lpg/gatecarry/corridor.py --use y_init=zeros --use pi_hat_baseline=adam_step_mean RULE ...
    python results/lpg/gatecarry/corridor.py --updates 300 RULE ...   # lifetimes of 300 updates instead of the block's 150
    python results/lpg/gatecarry/corridor.py --rollout-len 20 RULE ... # rollouts of 20 steps instead of the block's 10
    python results/lpg/gatecarry/corridor.py --lrs 2e-2 --curve RULE ...  # one rate; the learning curve too

Runs the README block as written but for the rule, the agent's Adam rate (`--lrs`; 5e-3, 1e-2, 2e-2), 4
seeds and (`--updates N`, `--rollout-len T`) the lifetime's updates and rollout length; prints each
lifetime's final return (optimum 1.0, the uniform policy ~0.4) and with `--curve` the mean over seeds of
the episode return, π̂ and ŷ at updates 1, 26, 51, ... and the last. `--use FIELD=VALUE` replaces a RuleConfig field of how agents use the rule
(y_init, pi_hat_baseline) after loading it, as `experiments.evaluate --y-init/--pi-hat-baseline` do.
Ad hoc diagnostic, sessions 11-14.
"""
import argparse, re
from pathlib import Path
import numpy as np
blocks = re.findall(r"```python\n(.*?)```", Path("README.md").read_text(), flags=re.S)
code = [b for b in blocks if b.startswith("# example: custom-environment\n")][0]
head = code[:code.find("for name, learner in")]
old = "results/lpg/ablation/prev_seed0_baseline/rule.msgpack"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("rules", nargs="+", metavar="RULE")
parser.add_argument("--use", action="append", default=[], metavar="FIELD=VALUE")
parser.add_argument("--updates", type=int, help="updates per lifetime (the block's: 150)")
parser.add_argument("--rollout-len", type=int, help="the lifetime's rollout length (the block's: 10)")
parser.add_argument("--lrs", type=float, nargs="+", default=[5e-3, 1e-2, 2e-2], help="the agents' Adam rates")
parser.add_argument("--curve", action="store_true", help="print the learning curve too")
args = parser.parse_args()
use = dict(item.split("=") for item in args.use)
assert set(use) <= {"y_init", "pi_hat_baseline"}, use
for flag, before, after in (
        (args.updates, "num_updates=150", f"num_updates={args.updates}"),
        # the lifetime's rollouts (the block's A2C is not run here)
        (args.rollout_len, "num_envs=16, rollout_len=10, num_seeds", f"num_envs=16, rollout_len={args.rollout_len}, num_seeds")):
    if flag is not None:
        assert head.count(before) == 1, before
        head = head.replace(before, after)
load = "rule_params, rule_config = load_rule(\"%s\")\n"
for rule in args.rules:
    for lr in args.lrs:
        src = head.replace(load % old, load % old + "".join(
            f"rule_config = __import__('dataclasses').replace(rule_config, {k}={v!r})\n" for k, v in use.items()))
        assert src != head or not use
        src = src.replace(old, rule).replace("num_seeds=2", "num_seeds=4").replace("learning_rate=1e-2, alpha_y", f"learning_rate={lr}, alpha_y")
        g = {"__name__": "x"}
        exec(compile(src, "README.md", "exec"), g)
        m = g["evaluate"].run_lifetimes(g["env"], g["params"], g["lpg"], g["lifetime"], g["jax"].random.PRNGKey(0))
        f = np.asarray(g["evaluate"].summarise(m, g["lifetime"])["final"])
        print(f"{rule}{''.join(f' {k}={v}' for k, v in use.items())} lr {lr}: final {np.round(f, 2)} mean {f.mean():.2f}", flush=True)
        if args.curve:  # episode_return at one update: the mean of the episodes that ended in it
            at = sorted({*range(0, g["lifetime"].num_updates, 25), g["lifetime"].num_updates - 1})
            print(f"  at updates {[u + 1 for u in at]}:")
            for key in ("episode_return", "pi_hat", "y_hat"):
                print(f"  {key:>14}: {np.round(np.asarray(m[key]).mean(axis=0)[at], 3)}", flush=True)
