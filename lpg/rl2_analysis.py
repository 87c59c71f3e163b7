"""Evaluation and belief analysis of an RL² agent on any task distribution with exact posteriors.

A task distribution is a gymnax environment whose episode is one trial of one task and whose
state holds the exact posterior over tasks (`state.posterior`, also returned after each
transition as `info["posterior"]`; see `envs/bandits.py`, `envs/hidden_goal.py`). `TaskSuite`
bundles it with what the agent is compared against: baseline policies (the uniform random
policy is always among them), optionally a Bayes-optimal `reference` whose `policy_out`
carries `"q_values"`, an `oracle` that sees the task, and expected returns known exactly.
A known family brings its baselines from `lpg.bayes` (`beta_bandit_suite`,
`swapped_bandit_suite`, `hidden_goal_suite`); a new one brings its own or none.

  * `evaluate(suite, agent_config, params, config)`: returns, regret (oracle − policy) and
    agreement with the reference's best actions, every policy on the same held-out tasks
    with the same environment randomness (paired);
  * `analyse(...)`: the evaluation, then probes hidden state -> posterior next to an
    untrained network of the same size (on the agent's own histories and on random-policy
    histories that both networks watch), the reverse map belief -> hidden state with its
    state-machine simulation, and the equal-belief distance test (`lpg.probes`);
  * `plot_probes`, `plot_projection`, `plot_regret`, `write_report`: figures and summary files;
  * `seed_rows`, `seed_table`: the figures of several training seeds side by side.

This is the analysis floor above `lpg.rl2` (the agent and its training), `lpg.probes` (the
regressions and the on-policy data collection) and `lpg.bayes` (the exact baselines).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from envs import bandits, hidden_goal
from lpg import bayes, probes, rl2
from lpg.config import validate


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    eval_seed: int = 10_000  # held-out tasks: never the training seed
    num_trials: int = 10_000  # trials per policy for returns, regret and agreement
    probe_trials: int = 2000  # trials (the first of those, at most num_trials) whose hidden states are probed
    test_fraction: float = 0.3  # trials held out from the probe fits
    ridge_alpha: float = 1e-4
    mlp_hidden: int = 64
    mlp_steps: int = 2000
    control_seed: int = 1  # the untrained network of the same size
    num_pairs: int = 20_000  # equal- / different-belief pairs sampled

    def __post_init__(self):
        validate(self, [
            (0.0 < self.test_fraction < 1.0, "test_fraction must be in (0, 1)"),
            (min(self.probe_trials, self.num_trials) >= 10, "probe_trials and num_trials must be >= 10"),
            (self.ridge_alpha >= 0, "ridge_alpha must be >= 0"),
            (min(self.mlp_steps, self.mlp_hidden, self.num_pairs) >= 1, "mlp_steps, mlp_hidden and num_pairs must be >= 1"),
        ])


def posterior_components(posterior: np.ndarray) -> dict[str, np.ndarray]:
    """Default colourings of the hidden-state projection: the posterior's first two entries. [N, P] -> [N]."""
    return {f"posterior[{k}]": posterior[:, k] for k in range(min(2, posterior.shape[1]))}


def posterior_only(posterior: np.ndarray) -> dict[str, np.ndarray]:
    """Default probe targets: the posterior itself. [N, P] -> {name: [N, k]}."""
    return {"posterior": posterior}


def as_actor(policy) -> probes.Actor:
    """A `probes.Actor` from an Actor or a `bayes.BaselinePolicy` (policy_fn, params, init_carry)."""
    return probes.Actor(*policy)


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSuite:
    """A task distribution and what the agent is compared against on it.

    `baselines` act on `env` (named policies; `probes.Actor`, or `bayes.BaselinePolicy`, with
    `reads_posterior=True` for a policy that reads the exact posterior); "random" is added when
    missing. `reference` names the baseline the agent is compared with (regret ratio, return
    gap); if its policy_out holds `"q_values"` [A] (a Bayes-optimal policy), every policy's
    agreement with its best actions is measured too. The `oracle` acts on `oracle_env` (the same
    tasks with the task revealed; default `env`): regret = oracle return − policy return on the
    same tasks, and without an oracle no regret is reported. `exact` holds expected returns known
    in closed form or by DP (with "oracle" and "bayes_optimal": the exact Bayes regret).
    `probe_targets(posterior [N, P]) -> {name: [N, k]}` are what the probes decode;
    `belief_views(posterior) -> {name: [N]}` colour the hidden-state projection.
    `trial_len` defaults to `params.max_steps_in_episode`.
    """

    env: Any
    params: Any
    baselines: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: str | None = None
    oracle: Any = None
    oracle_env: Any = None
    exact: Mapping[str, float] = dataclasses.field(default_factory=dict)
    probe_targets: Callable[[np.ndarray], dict[str, np.ndarray]] = posterior_only
    belief_views: Callable[[np.ndarray], dict[str, np.ndarray]] = posterior_components
    trial_len: int | None = None

    def __post_init__(self):
        baselines = {name: as_actor(b) for name, b in self.baselines.items()}
        if "random" not in baselines:
            baselines["random"] = as_actor(bayes.make_random(self.env.action_space(self.params).n))
        resolved = {
            "baselines": baselines,
            "oracle": None if self.oracle is None else as_actor(self.oracle),
            "oracle_env": self.env if self.oracle_env is None else self.oracle_env,
            "exact": dict(self.exact),
            "trial_len": int(self.params.max_steps_in_episode) if self.trial_len is None else self.trial_len,
        }
        for name, value in resolved.items():  # a frozen dataclass sets its own fields this way
            object.__setattr__(self, name, value)
        validate(self, [
            (self.reference is None or self.reference in baselines,
             f"reference must be one of the baselines {list(baselines)}"),
            (self.trial_len >= 1, "trial_len must be >= 1"),
        ])


# --------------------------------------------------------------------------------------
# The known task families and their exact baselines (lpg.bayes)
# --------------------------------------------------------------------------------------


def beta_bandit_suite(trial_len: int, num_arms: int = 2) -> TaskSuite:
    """K arms with p ~ Beta(1, 1) each; Bayes-optimal by DP over Beta counts, greedy, Thompson."""
    env, params = bandits.make_beta_bandit(max_steps_in_episode=trial_len, num_arms=num_arms)
    oracle_env, _ = bandits.make_beta_bandit(max_steps_in_episode=trial_len, num_arms=num_arms, reveal_task=True)
    solution = bayes.beta_bandit_bayes_optimal(trial_len, num_arms=num_arms)
    baselines = {"bayes_optimal": bayes.make_beta_bayes_optimal(solution), "greedy": bayes.make_beta_greedy(num_arms),
                 "thompson": bayes.make_beta_thompson(num_arms), "random": bayes.make_random(num_arms)}
    exact = {"bayes_optimal": solution.value, "oracle": bayes.beta_bandit_oracle_value(trial_len, num_arms)}

    def targets(posterior):
        return {"posterior": posterior, "posterior_mean": bandits.posterior_mean(posterior)}

    def views(posterior):
        mean = bandits.posterior_mean(posterior)
        return {"posterior mean, arm 0": mean[:, 0], "posterior mean, arm 1": mean[:, 1]}

    return TaskSuite(env, params, baselines, "bayes_optimal", bayes.make_task_oracle(), oracle_env, exact,
                     probe_targets=targets, belief_views=views)


def swapped_bandit_suite(reward_prob: float, trial_len: int) -> TaskSuite:
    """Arms Bernoulli(p) / Bernoulli(1 - p) in unknown order; Bayes-optimal by DP over the evidence."""
    env, params = bandits.make_swapped_bandit(max_steps_in_episode=trial_len, reward_prob=reward_prob)
    oracle_env, _ = bandits.make_swapped_bandit(reveal_task=True)
    solution = bayes.swapped_bandit_bayes_optimal(reward_prob, trial_len)
    baselines = {"bayes_optimal": bayes.make_swapped_bayes_optimal(solution), "random": bayes.make_random(2)}
    exact = {"bayes_optimal": solution.value, "oracle": bayes.swapped_bandit_oracle_value(reward_prob, trial_len)}
    return TaskSuite(env, params, baselines, "bayes_optimal", bayes.make_task_oracle(), oracle_env, exact,
                     belief_views=lambda posterior: {"P(arm 0 is good)": posterior[:, 0]})


def hidden_goal_suite(size: int, trial_len: int) -> TaskSuite:
    """Open size x size grid, goal in one of the 4 corners, start in the centre; Bayes-optimal by
    DP over the candidates not yet ruled out, posterior sampling."""
    env, params = hidden_goal.make_hidden_goal(size=size, max_steps_in_episode=trial_len)
    oracle_env, _ = hidden_goal.make_hidden_goal(size=size, reveal_task=True)
    solution = bayes.hidden_goal_bayes_optimal(env, params, trial_len)
    baselines = {"bayes_optimal": bayes.make_hidden_goal_bayes_optimal(solution),
                 "posterior_sampling": bayes.make_hidden_goal_posterior_sampling(env),
                 "random": bayes.make_random(env.num_actions)}

    def views(posterior):
        entropy = -(posterior * np.log(np.where(posterior > 0, posterior, 1.0))).sum(-1)
        return {"posterior entropy (nats)": entropy, "P(goal = corner 0)": posterior[:, 0]}

    # the oracle walks the shortest path to the goal again and again: floor(T / distance) rewards
    distance = np.abs(np.asarray(params.candidates) - np.asarray(params.start)).sum(-1)
    exact = {"bayes_optimal": solution.value, "oracle": float(np.mean(trial_len // distance))}
    return TaskSuite(env, params, baselines, "bayes_optimal", bayes.make_hidden_goal_oracle(oracle_env), oracle_env,
                     exact, belief_views=views)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def agent_actor(network: rl2.RL2Network, params) -> probes.Actor:
    """The RL² agent as an actor whose policy_out holds its hidden features after each input."""
    return probes.Actor(rl2.make_policy(network, with_hidden=True), params, network.initial_carry())


def control_actor(suite: TaskSuite, agent: rl2.RL2Config, seed: int) -> probes.Actor:
    """The untrained network of the same size (initialised from `seed`)."""
    network = rl2.make_network(suite.env, suite.params, agent)
    params = network.init(jax.random.PRNGKey(seed), network.initial_carry(),
                          rl2.example_timestep(suite.env, suite.params))
    return agent_actor(network, params)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr)


def evaluate(suite: TaskSuite, agent: rl2.RL2Config, params, config: AnalysisConfig = AnalysisConfig(),
             quiet: bool = False) -> tuple[dict, dict]:
    """Returns, regret (oracle − policy, same tasks) and agreement with the reference's best
    actions, for the agent (`params` of a network built by `agent`) and every baseline, on
    `config.num_trials` held-out tasks from `config.eval_seed`.

    Returns (summary, data): data[policy] holds the per-trial arrays [N, T, ...] of
    `probes.run_trials`; data["agent"] also has the agent's hidden states ("actor") and those
    of the untrained control network on the same histories ("control").
    """
    key = jax.random.PRNGKey(config.eval_seed)
    network = rl2.make_network(suite.env, suite.params, agent)
    control = control_actor(suite, agent, config.control_seed)
    reference = {suite.reference: suite.baselines[suite.reference]} if suite.reference else {}

    def trials(actor, watchers=None, env=suite.env):
        return probes.run_trials(env, suite.params, actor, key, config.num_trials, suite.trial_len, watchers)

    t0 = time.time()
    data = {"agent": trials(agent_actor(network, params), {"control": control, **reference})}
    if suite.oracle is not None:
        data["oracle"] = trials(suite.oracle, env=suite.oracle_env)
    for name, actor in suite.baselines.items():
        data[name] = trials(actor, reference)
    policies = {}
    for name, d in data.items():
        ret = d["reward"].sum(-1)
        policies[name] = {"return": float(ret.mean()), "return_se": float(ret.std(ddof=1) / np.sqrt(len(ret)))}
        if "oracle" in data:
            regret, regret_se = probes.paired_gap(data["oracle"]["reward"].sum(-1), ret)
            policies[name].update(regret=regret, regret_se=regret_se)
        if suite.reference in d and "q_values" in d[suite.reference]:
            q_values = d[suite.reference]["q_values"]
            policies[name]["agreement"] = probes.agreement(d["action"], q_values)
            policies[name]["agreement_where_unique"] = probes.agreement(d["action"], q_values, unique_only=True)
            ties = (q_values >= q_values.max(-1, keepdims=True) - 1e-5).sum(-1)
            policies[name]["unique_fraction"] = float((ties == 1).mean())  # steps with one best action
        _say(quiet, f"  {name:>18}: {describe_policy(policies[name])}")
    summary = {"held_out_trials": config.num_trials, "eval_seed": config.eval_seed, "policies": policies,
               "exact": dict(suite.exact), "seconds": time.time() - t0}
    if suite.reference:
        ref = suite.reference
        gap, gap_se = probes.paired_gap(data[ref]["reward"].sum(-1), data["agent"]["reward"].sum(-1))
        versus = {"reference": ref}
        if "oracle" in data:
            versus["regret_ratio"] = policies["agent"]["regret"] / policies[ref]["regret"]
        versus.update(return_gap=gap, return_gap_se=gap_se)
        summary["agent_vs_reference"] = versus
    if "oracle" in data and {"bayes_optimal", "oracle"} <= suite.exact.keys():
        exact_regret = suite.exact["oracle"] - suite.exact["bayes_optimal"]
        summary.setdefault("agent_vs_reference", {})["exact_bayes_regret"] = exact_regret
        summary["agent_vs_reference"]["regret_ratio_to_exact"] = policies["agent"]["regret"] / exact_regret
    return summary, data


def describe_policy(p: dict) -> str:
    """One line: return, regret and agreement of one policy of `evaluate`'s summary."""
    text = f"return {p['return']:.3f} ± {p['return_se']:.3f}"
    if "regret" in p:
        text += f", regret {p['regret']:.3f} ± {p['regret_se']:.3f}"
    if "agreement" in p:
        text += f", agreement {p['agreement']:.4f} (where unique {p['agreement_where_unique']:.4f})"
    return text


# --------------------------------------------------------------------------------------
# Belief analysis
# --------------------------------------------------------------------------------------


def belief_inputs(d: dict) -> np.ndarray:
    """The information state of the finite-horizon POMDP at each step: the posterior over
    tasks, the observation (the observed part of the state: elapsed time for the bandits,
    the cell for the grid) and the elapsed fraction of the trial t/T. [N, T, P + O + 1]."""
    N, T = d["reward"].shape
    elapsed = np.broadcast_to((np.arange(T) / T)[None, :, None], (N, T, 1))
    return np.concatenate([d["posterior"], d["obs"].reshape(N, T, -1), elapsed], -1).astype(np.float32)


def mapped_state_policy(network: rl2.RL2Network, belief_to_state, init_carry, trial_len: int):
    """Acts from φ(belief) instead of the agent's own hidden state (reads the wrapped env's
    posterior; the agent's recurrence is not run at all). The carry counts the trial's steps."""

    def policy_fn(params, t, timestep, key):
        t = jnp.where(timestep.first, 0, t + 1)
        obs = timestep.obs
        belief = jnp.concatenate([obs["posterior"], jnp.ravel(obs["obs"]), (t / trial_len)[None]])
        features = jnp.asarray(belief_to_state(belief[None]))[0].astype(jnp.float32)
        h = rl2.output_of(rl2.carry_from_features(features, init_carry))
        logits, _ = network.apply(params, h, method=rl2.RL2Network.heads)
        return distrax.Categorical(logits=logits).sample(seed=key), {}, t

    return policy_fn


def analyse(suite: TaskSuite, agent: rl2.RL2Config, params, config: AnalysisConfig = AnalysisConfig(),
            out_dir: str | os.PathLike | None = None, quiet: bool = False) -> dict:
    """`evaluate`, then the belief analysis of the agent's hidden state; returns the summary.

    summary["decoding"]["<target>[ (random policy)]/<linear|mlp>/<trained|control>"]: held-out
    R² of probes hidden state -> `suite.probe_targets(posterior)`, on the first
    `config.probe_trials` trials; "simulation": the reverse maps belief -> hidden state and the
    return lost acting from the mapped state; "equal_belief_distances" (`probes.equal_belief_distances`
    of both networks on the agent's own histories, with trial-bootstrap intervals). With `out_dir`, the
    plots `probe_r2.png`, `hidden_pca.png` and `regret.png` (cumulative return without an
    oracle) are written there.
    """
    summary, data = evaluate(suite, agent, params, config, quiet=quiet)
    d = jax.tree.map(lambda x: x[: config.probe_trials], data["agent"])
    N, T = d["reward"].shape
    flat = lambda x: np.asarray(x).reshape(N * T, -1)  # noqa: E731
    groups = np.repeat(np.arange(N), T)
    posterior = flat(d["posterior"])
    beliefs = flat(belief_inputs(d))
    states = {"trained": flat(d["actor"]["hidden"]), "control": flat(d["control"]["hidden"])}
    key = jax.random.PRNGKey(config.eval_seed + 1)
    kwargs = {"linear": {"alpha": config.ridge_alpha}, "mlp": {"hidden": config.mlp_hidden, "steps": config.mlp_steps}}
    network = rl2.make_network(suite.env, suite.params, agent)

    t0 = time.time()
    # Probes on the agent's own histories, and on histories of the random policy that both
    # networks only watch: on its own histories the agent's previous actions carry its belief,
    # which helps the untrained control too; under the random policy they carry none.
    watchers = {"trained": agent_actor(network, params), "control": control_actor(suite, agent, config.control_seed)}
    watched = probes.run_trials(suite.env, suite.params, suite.baselines["random"],
                                jax.random.PRNGKey(config.eval_seed + 2), N, T, watchers)
    histories = {"": (posterior, states),
                 " (random policy)": (flat(watched["posterior"]), {n: flat(watched[n]["hidden"]) for n in states})}
    decoding = {}
    for histories_name, (y_posterior, xs) in histories.items():
        for target, y in suite.probe_targets(y_posterior).items():
            name = target + histories_name
            for kind in probes.PROBE_KINDS:
                for net, x in xs.items():
                    fit = probes.probe(kind, x, y, groups, key, config.test_fraction, **kwargs[kind])
                    decoding[f"{name}/{kind}/{net}"] = {"r2": fit["r2"], "r2_train": fit["r2_train"]}
                trained, control = decoding[f"{name}/{kind}/trained"], decoding[f"{name}/{kind}/control"]
                trained["unexplained_ratio_to_control"] = (1 - trained["r2"]) / max(1 - control["r2"], 1e-12)
    for name, v in decoding.items():
        _say(quiet, f"  probe {name}: held-out R² {v['r2']:.4f}")

    # Reverse map belief -> hidden state, and acting from the mapped state (state-machine simulation).
    init_carry = network.initial_carry()
    simulation = {}
    for kind in probes.PROBE_KINDS:
        fit = probes.probe(kind, beliefs, states["trained"], groups, key, config.test_fraction, **kwargs[kind])
        s_test = states["trained"][fit["test"]]
        mapped = probes.Actor(mapped_state_policy(network, fit["map"], init_carry, T),
                              params, jnp.zeros((), jnp.int32), reads_posterior=True)
        mapped_return = probes.run_trials(suite.env, suite.params, mapped, jax.random.PRNGKey(config.eval_seed),
                                          config.num_trials, T)["reward"].sum(-1)
        lost, lost_se = probes.paired_gap(data["agent"]["reward"].sum(-1), mapped_return)
        simulation[kind] = {
            "dissimilarity": probes.dissimilarity(s_test, fit["y_hat"]),
            "dissimilarity_of_mean_state": probes.dissimilarity(s_test, np.broadcast_to(
                states["trained"][~fit["test"]].mean(0), s_test.shape)),
            "r2": fit["r2"],
            "mapped_return": float(mapped_return.mean()),
            "return_lost": lost, "return_lost_se": lost_se,
        }
    distances = probes.equal_belief_distances(states, beliefs, groups, seed=config.eval_seed, num_pairs=config.num_pairs)
    for pair, v in distances["differences"].items():
        _say(quiet, f"  equal/different-belief distance ratio {pair}: {v['difference']:+.4f} "
                    f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]")
    summary.update(decoding=decoding, simulation=simulation, equal_belief_distances=distances,
                   analysis_seconds=time.time() - t0)

    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_probes(decoding, out_dir / "probe_r2.png")
        plot_projection(states, suite.belief_views(posterior), out_dir / "hidden_pca.png")
        plot_regret(data, out_dir / "regret.png")
    return summary


# --------------------------------------------------------------------------------------
# Plots and reports
# --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def probe_label(name: str) -> str:
    """'posterior_mean (random policy)/mlp' -> 'posterior_mean\\n(random policy)\\nmlp'."""
    return name.replace(" (", "\n(").replace("/", "\n")


def probe_figure(decoding: dict):
    """Held-out R² (top) and unexplained variance 1 − R² on a log scale (bottom), trained vs
    control, one group of bars per target / histories / probe, legend outside the axes."""
    plt = _pyplot()
    names = sorted({k.rsplit("/", 1)[0] for k in decoding})
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 1.25 * len(names) + 2.5), 7.0))
    panels = ((axes[0], lambda r: r, "held-out R²", "%.3f"),
              (axes[1], lambda r: max(1.0 - r, 1e-6), "held-out 1 − R² (log)", "%.2g"))
    for ax, transform, label, fmt in panels:
        for offset, net, colour in ((-0.2, "trained", "tab:blue"), (0.2, "control", "tab:gray")):
            values = [transform(decoding[f"{n}/{net}"]["r2"]) for n in names]
            bars = ax.bar(x + offset, values, 0.4, label=f"{net} network", color=colour)
            ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    r2 = [v["r2"] for v in decoding.values()]
    axes[0].set_ylim(min(0.0, min(r2)), 1.15)  # headroom for the value labels above the bars
    unexplained = [max(1.0 - r, 1e-6) for r in r2]
    axes[1].set_yscale("log")
    axes[1].set_ylim(min(unexplained) / 2, max(unexplained) * 4)
    axes[1].set_xticks(x, [probe_label(n) for n in names], fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("Probes hidden state -> exact posterior, untrained network of the same size as control")
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.955), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def plot_probes(decoding: dict, path: Path) -> None:
    fig = probe_figure(decoding)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_projection(states: dict, views: dict, path: Path, max_points: int = 5000) -> None:
    """PCA of each network's hidden states, coloured by each view of the posterior."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(states), len(views), figsize=(4.2 * len(views), 3.6 * len(states)), squeeze=False)
    for row, (net, x) in enumerate(states.items()):
        idx = np.random.default_rng(0).permutation(len(x))[:max_points]
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred[idx], full_matrices=False)
        xy = centred[idx] @ vt[:2].T
        for col, (label, colour) in enumerate(views.items()):
            ax = axes[row, col]
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(colour)[idx], s=3, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=label)
            ax.set_title(f"{net} network: PCA of hidden states", fontsize=9)
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_regret(data: dict, path: Path) -> None:
    """Cumulative regret over the trial (cumulative return when there is no oracle)."""
    plt = _pyplot()
    oracle = data["oracle"]["reward"] if "oracle" in data else None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, d in data.items():
        if name == "oracle":
            continue
        curve = np.cumsum(d["reward"] if oracle is None else oracle - d["reward"], -1).mean(0)
        ax.plot(np.arange(1, len(curve) + 1), curve, label="RL² agent" if name == "agent" else name,
                lw=2.5 if name == "agent" else 1.2)
    ax.set_xlabel("step t of the trial")
    ax.set_ylabel("cumulative return" if oracle is None else "cumulative regret (oracle − policy)")
    ax.set_title(f"{'Return' if oracle is None else 'Regret'} over the trial (held-out tasks, same tasks for all)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_lines(summary: dict) -> list[str]:
    """The markdown body of a summary from `evaluate` or `analyse`."""
    lines = ["## Returns and regret (same held-out tasks and environment randomness for every policy)", "",
             "| policy | return | regret (oracle − return) | agreement with a Bayes-optimal action "
             "| agreement where the Bayes-optimal action is unique (share of such steps) |",
             "| --- | --- | --- | --- | --- |"]
    for name, p in summary["policies"].items():
        regret = f"{p['regret']:.3f} ± {p['regret_se']:.3f}" if "regret" in p else "–"
        agreement = f"{p['agreement']:.4f}" if "agreement" in p else "–"
        unique = f"{p['agreement_where_unique']:.4f} ({p['unique_fraction']:.2f})" if "agreement" in p else "–"
        lines.append(f"| {name} | {p['return']:.3f} ± {p['return_se']:.3f} | {regret} | {agreement} | {unique} |")
    ref = summary.get("agent_vs_reference", {})
    if "regret_ratio" in ref:
        lines += ["", f"Agent regret / {ref['reference']} regret (same tasks): **{ref['regret_ratio']:.3f}**."]
    elif "return_gap" in ref:
        lines += ["", f"{ref['reference']} return − agent return (same tasks): "
                      f"**{ref['return_gap']:.3f} ± {ref['return_gap_se']:.3f}**."]
    if "exact_bayes_regret" in ref:
        lines.append(f"Agent regret / exact Bayes-optimal regret ({ref['exact_bayes_regret']:.3f}, by DP): "
                     f"**{ref['regret_ratio_to_exact']:.3f}**.")
    if summary.get("exact"):
        lines.append("Exact expected returns: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["exact"].items()) + ".")
    if "decoding" in summary:
        lines += ["", "## Probes: hidden state -> exact posterior (held-out trials)", "",
                  "On the agent's own histories, and (rows marked *random policy*) on histories of the "
                  "random policy that both networks watch.", "",
                  "| target / probe | trained R² | untrained control R² | (1 − R²) trained / control |",
                  "| --- | --- | --- | --- |"]
        names = sorted({k.rsplit("/", 1)[0] for k in summary["decoding"]})
        for n in names:
            t, c = summary["decoding"][f"{n}/trained"], summary["decoding"][f"{n}/control"]
            lines.append(f"| {n} | {t['r2']:.4f} | {c['r2']:.4f} | {t['unexplained_ratio_to_control']:.3f} |")
        lines += ["", "## State-machine simulation: belief -> hidden state, then act from the mapped state", "",
                  "| map | dissimilarity mean‖s−ŝ‖²/mean‖s‖² | (mean-state baseline) | R² | return from mapped state "
                  "| return lost |", "| --- | --- | --- | --- | --- | --- |"]
        for kind, s in summary["simulation"].items():
            lines.append(f"| {kind} | {s['dissimilarity']:.4f} | {s['dissimilarity_of_mean_state']:.4f} | {s['r2']:.4f} "
                         f"| {s['mapped_return']:.3f} | {s['return_lost']:.3f} ± {s['return_lost_se']:.3f} |")
        d = summary["equal_belief_distances"]
        lines += ["", "## Hidden-state distances: histories with equal vs different beliefs", "",
                  f"Mean distance between the hidden states of two histories (the agent's own, held-out trials) "
                  f"whose exact beliefs are equal, and of two whose beliefs differ ({d['distinct_beliefs']} distinct "
                  f"beliefs); both networks on the same pairs. Intervals: 95% bootstrap over trials.", "",
                  "| network | equal beliefs | different beliefs | ratio [95% CI] |", "| --- | --- | --- | --- |"]
        for net, v in d["networks"].items():
            lines.append(f"| {net} | {v['equal']:.4f} | {v['different']:.4f} | {v['ratio']:.4f} "
                         f"[{v['ratio_ci'][0]:.4f}, {v['ratio_ci'][1]:.4f}] |")
        for pair, v in d["differences"].items():
            lines += ["", f"Ratio {pair}: {v['difference']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] (paired: "
                          f"an interval below 0 says the first network's state depends on the belief more closely)"]
        lines += ["", "Plots: `probe_r2.png`, `hidden_pca.png`, `regret.png`."]
    return lines


def seed_rows(summaries: Mapping[int, dict]) -> list[tuple[str, list[float]]]:
    """The figures that decide the targets, one row each with every training seed's value:
    regret ratios, agreement, each probe's trained and control R², the equal/different-belief
    distance ratio of both networks. A figure missing from a summary is NaN there."""

    def get(summary, *path):
        for k in path:
            if not isinstance(summary, dict) or k not in summary:
                return float("nan")
            summary = summary[k]
        return float(summary)

    rows = [("regret / exact Bayes-optimal regret", ("agent_vs_reference", "regret_ratio_to_exact")),
            ("regret / Bayes-optimal policy's regret (same tasks)", ("agent_vs_reference", "regret_ratio")),
            ("agreement with a Bayes-optimal action", ("policies", "agent", "agreement"))]
    first = next(iter(summaries.values()))
    for name in sorted({k.rsplit("/", 1)[0] for k in first.get("decoding", {})}):
        rows += [(f"probe R², {name}, trained", ("decoding", f"{name}/trained", "r2")),
                 (f"probe R², {name}, untrained control", ("decoding", f"{name}/control", "r2"))]
    for net in first.get("equal_belief_distances", {}).get("networks", {}):
        rows.append((f"distance ratio equal/different belief, {net}", ("equal_belief_distances", "networks", net, "ratio")))
    return [(name, [get(summaries[seed], *path) for seed in summaries]) for name, path in rows]


def seed_table(summaries: Mapping[int, dict]) -> list[str]:
    """Markdown table of `seed_rows`: each seed, the mean and the range across seeds."""
    seeds = list(summaries)
    lines = ["| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | range |",
             "|" + " --- |" * (len(seeds) + 3)]
    for name, values in seed_rows(summaries):
        v = np.asarray(values)
        ok = v[np.isfinite(v)]
        spread = [f"{ok.mean():.4f}", f"{ok.min():.4f}-{ok.max():.4f}"] if len(ok) else ["–", "–"]
        lines.append(f"| {name} | " + " | ".join(f"{x:.4f}" if np.isfinite(x) else "–" for x in v)
                     + " | " + " | ".join(spread) + " |")
    return lines


def write_report(summary: dict, out_dir: str | os.PathLike, header: Sequence[str] | None = None) -> None:
    """Writes OUT_DIR/summary.json and OUT_DIR/summary.md (`header` lines, then `report_lines`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if header is None:
        header = ["# RL² evaluation and belief analysis", "",
                  f"Held-out tasks: {summary['held_out_trials']} trials from seed {summary['eval_seed']}.", ""]
    (out_dir / "summary.md").write_text("\n".join([*header, *report_lines(summary)]) + "\n")
