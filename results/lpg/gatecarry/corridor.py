"""The README's custom-environment example (a corridor no source or suite uses), rules x Adam rates, 4 seeds.

    python results/lpg/gatecarry/corridor.py RULE [RULE ...]   # from the repository root
    python results/lpg/gatecarry/corridor.py --use y_init=zeros --use pi_hat_baseline=adam_step_mean RULE ...
    python results/lpg/gatecarry/corridor.py --updates 300 RULE ...   # lifetimes of 300 updates instead of the block's 150
    python results/lpg/gatecarry/corridor.py --rollout-len 20 RULE ... # rollouts of 20 steps instead of the block's 10
    python results/lpg/gatecarry/corridor.py --lrs 2e-2 --curve RULE ...  # one rate; the learning curve too
    python results/lpg/gatecarry/corridor.py --left wall RULE ...      # the left end neither pays nor ends the episode
    python results/lpg/gatecarry/corridor.py --by-cell RULE ...        # per cell at the end: P(right), π̂'s gap

Runs the README block as written but for the rule, the agent's Adam rate (`--lrs`; 5e-3, 1e-2, 2e-2), 4
seeds and (`--updates N`, `--rollout-len T`) the lifetime's updates and rollout length; prints each
lifetime's final return (optimum 1.0, the uniform policy ~0.4) and with `--curve` the mean over seeds of
the episode return, π̂ and ŷ at updates 1, 26, 51, ... and the last. `--left X` pays X at the left
end instead of 0.1 (`--left wall`: it pays nothing and ends nothing, so only the right end or the
time limit ends an episode); `--by-cell` prints, after the lifetime, per cell 1-8 (mean over seeds)
P(right) and the mean π̂ (as it pushes the policy) of steps that went right less that of steps that
went left, over 4 more rollouts per seed. `--use FIELD=VALUE` replaces a RuleConfig field of how agents use the rule
(y_init, pi_hat_baseline) after loading it, as `experiments.evaluate --y-init/--pi-hat-baseline` do.
Ad hoc diagnostic, sessions 11-15.
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
parser.add_argument("--left", help="the left end's reward instead of 0.1, or 'wall' (no reward, no end)")
parser.add_argument("--by-cell", action="store_true", help="per cell after the lifetime: P(right), π̂ right - left")
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
if args.left is not None:
    pays, ends = "jnp.where(pos == 0, 0.1, 0.0)", "done = (pos == 0) | (pos == 9)"
    assert head.count(pays) == 1 and head.count(ends) == 1
    if args.left == "wall":
        head = head.replace(pays, "0.0").replace(ends, "done = (pos == 9)")
    else:
        head = head.replace(pays, f"jnp.where(pos == 0, {float(args.left)!r}, 0.0)")


def lifetimes_by_cell(g, key):
    """The block's LPG lifetimes (as `run_lifetimes`: metrics [seeds, updates]) and, from their final
    states, [8] P(right | cell 1..8) and [8] mean π̂ (as used) of right steps less left steps, mean over seeds."""
    jax, jnp, ev, env, env_params, lifetime = (g[k] for k in ("jax", "jnp", "evaluate", "env", "params", "lifetime"))
    from lpg import rollout as engine
    from lpg.inner import make_lpg_learner
    agent = ev.make_lpg_agent(env, env_params, g["rule_config"], optimizer="adam")  # as the block's lpg_learner
    learner = make_lpg_learner(agent, g["rule_params"], g["hypers"])
    levels = jax.tree.map(lambda x: jnp.asarray(x)[None], env_params)
    state, metrics = ev.make_lifetimes(env, lambda _: learner, lifetime, return_state=True)(levels, (), key)

    @jax.jit
    @jax.vmap
    def probe(st, key):  # one seed's final state -> per cell and action: sum of π̂ used, count
        cells, acts = jnp.arange(10), jnp.arange(2)
        def one(rollout_state, key):
            rollout_state, traj = engine.rollout(env, env_params, learner.policy_fn, learner.policy_params(st.learner),
                                                 rollout_state, key, lifetime.rollout_len, learner.init_carry)
            inputs = jax.vmap(agent.rule_inputs, in_axes=(None, 1, None, None))(st.learner.params, traj, g["hypers"], st.step)
            pi_hat, _ = jax.vmap(lambda x: agent.rule.apply(g["rule_params"], x))(inputs)
            hit = (traj.obs.argmax(-1)[..., None, None] == cells[:, None]) & (traj.action[..., None, None] == acts)
            return rollout_state, (jnp.einsum("tb,tbca->ca", agent.pi_hat_used(pi_hat).T, hit), hit.sum((0, 1)))
        _, (sums, counts) = jax.lax.scan(one, st.rollout, jax.random.split(key, 4))
        logits, _ = jax.vmap(lambda o: agent.network.apply(st.learner.params, o))(jax.nn.one_hot(cells, 10))
        return sums.sum(0), counts.sum(0), jax.nn.softmax(logits)[:, 1]
    seeds = jax.tree.map(lambda x: x[0], state)
    sums, counts, p_right = (np.asarray(x) for x in probe(seeds, jax.random.split(jax.random.PRNGKey(1), lifetime.num_seeds)))
    pi_hat = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # [seeds, 10, 2]
    metrics = {k: np.asarray(v)[0] for k, v in metrics.items()}
    return metrics, p_right.mean(0)[1:9], np.nanmean(pi_hat[:, 1:9, 1] - pi_hat[:, 1:9, 0], axis=0)


load = "rule_params, rule_config = load_rule(\"%s\")\n"
for rule in args.rules:
    for lr in args.lrs:
        src = head.replace(load % old, load % old + "".join(
            f"rule_config = __import__('dataclasses').replace(rule_config, {k}={v!r})\n" for k, v in use.items()))
        assert src != head or not use
        src = src.replace(old, rule).replace("num_seeds=2", "num_seeds=4").replace("learning_rate=1e-2, alpha_y", f"learning_rate={lr}, alpha_y")
        g = {"__name__": "x"}
        exec(compile(src, "README.md", "exec"), g)
        key = g["jax"].random.PRNGKey(0)
        if args.by_cell:  # the same lifetimes, kept to their final states
            m, p_right, gap = lifetimes_by_cell(g, key)
        else:
            m = g["evaluate"].run_lifetimes(g["env"], g["params"], g["lpg"], g["lifetime"], key)
        f = np.asarray(g["evaluate"].summarise(m, g["lifetime"])["final"])
        print(f"{rule}{''.join(f' {k}={v}' for k, v in use.items())}{f' left={args.left}' if args.left else ''} lr {lr}: final {np.round(f, 2)} mean {f.mean():.2f}", flush=True)
        if args.curve:  # episode_return at one update: the mean of the episodes that ended in it
            at = sorted({*range(0, g["lifetime"].num_updates, 25), g["lifetime"].num_updates - 1})
            print(f"  at updates {[u + 1 for u in at]}:")
            for key in ("episode_return", "pi_hat", "y_hat"):
                print(f"  {key:>14}: {np.round(np.asarray(m[key]).mean(axis=0)[at], 3)}", flush=True)
        if args.by_cell:
            print(f"  cells 1..8: P(right) {np.round(p_right, 2)}; π̂(right) - π̂(left) {np.round(gap, 3)}", flush=True)
