"""RL² on task distributions with exact posteriors: train, evaluate, and analyse the belief state.

    python -m experiments.rl2 --preset quick                 # train + evaluate + analyse (Beta bandit, T=20)
    python -m experiments.rl2 --preset quick --mode evaluate # regret / agreement of the last checkpoint
    python -m experiments.rl2 --preset hidden_goal --set train.num_updates=4000

Training goes through `lpg.learner.make_train` (the one rollout engine) and `lpg.runs`
(config.json, metrics.jsonl, orbax checkpoints; a rerun with the same --run-dir resumes).
Evaluation and analysis use held-out tasks drawn from `analysis.eval_seed` (never the
training seed): returns and regret of the agent and of the exact Bayes baselines on the
same tasks, agreement with the Bayes-optimal action, probes hidden state -> posterior
next to an untrained network of the same size (on the agent's own histories and on
random-policy histories that both networks watch), the reverse map (belief -> hidden state)
and its state-machine simulation, and the equal-belief distance test (`lpg.probes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs import bandits, hidden_goal
from experiments.cli import add_common_args, apply_overrides, pick_preset
from lpg import bayes, learner, probes, rl2, runs

ENVS = ("bandit_beta", "bandit_swapped", "hidden_goal")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "bandit_beta"
    trial_len: int = 20  # T: steps (pulls) per trial = one gymnax episode
    reward_prob: float = 0.1  # bandit_swapped: arms pay Bernoulli(p) and Bernoulli(1 - p)
    grid_size: int = 5  # hidden_goal: size x size grid, goal in one of the 4 corners

    def __post_init__(self):
        if self.name not in ENVS:
            raise ValueError(f"EnvConfig: name must be one of {ENVS}, got {self.name!r}")
        if self.trial_len < 1:
            raise ValueError(f"EnvConfig: trial_len must be >= 1, got {self.trial_len}")
        if not 0.0 <= self.reward_prob <= 1.0:
            raise ValueError(f"EnvConfig: reward_prob must be in [0, 1], got {self.reward_prob}")
        if self.grid_size < 3:
            raise ValueError(f"EnvConfig: grid_size must be >= 3, got {self.grid_size}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_updates: int = 3000
    updates_per_chunk: int = 250  # one jitted chunk between progress lines / metrics rows
    checkpoint_every: int = 2  # chunks
    seed: int = 0

    def __post_init__(self):
        if self.num_updates < 1 or self.updates_per_chunk < 1 or self.checkpoint_every < 1:
            raise ValueError(f"TrainConfig: num_updates, updates_per_chunk, checkpoint_every must be >= 1 ({self})")

    @property
    def num_chunks(self) -> int:
        return -(-self.num_updates // self.updates_per_chunk)


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
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"AnalysisConfig: test_fraction must be in (0, 1), got {self.test_fraction}")
        if min(self.probe_trials, self.num_trials) < 10:
            raise ValueError(f"AnalysisConfig: probe_trials and num_trials must be >= 10 ({self})")
        if self.ridge_alpha < 0 or self.mlp_steps < 1 or self.mlp_hidden < 1 or self.num_pairs < 1:
            raise ValueError(f"AnalysisConfig: ridge_alpha >= 0 and mlp_steps, mlp_hidden, num_pairs >= 1 ({self})")


@dataclasses.dataclass(frozen=True)
class Experiment:
    env: EnvConfig = EnvConfig()
    agent: rl2.RL2Config = rl2.RL2Config()
    train: TrainConfig = TrainConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    def __post_init__(self):
        if self.env.name == "bandit_beta" and self.env.trial_len > 100:
            raise ValueError("Experiment: the Beta bandit's exact DP is tabled up to trial_len = 100")
        if self.analysis.eval_seed == self.train.seed:
            raise ValueError("Experiment: analysis.eval_seed must differ from train.seed (held-out tasks)")


def _beta(**kw) -> Experiment:
    return Experiment(env=EnvConfig("bandit_beta", trial_len=20), **kw)


PRESETS = {
    # Beta bandit T = 20, GRU-64, 3000 A2C updates of 128 trials: a few minutes on 2 CPU cores.
    "quick": _beta(
        agent=rl2.RL2Config(hidden=64, num_envs=128, rollout_len=20, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=2400),
        train=TrainConfig(num_updates=3000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=10_000, probe_trials=2000),
    ),
    # The committed Beta-bandit analysis: longer training, more held-out trials.
    "beta": _beta(
        agent=rl2.RL2Config(hidden=64, num_envs=256, rollout_len=20, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=6400),
        train=TrainConfig(num_updates=8000, updates_per_chunk=500),
        analysis=AnalysisConfig(num_trials=20_000, probe_trials=4000),
    ),
    # Two arms Bernoulli(p) / Bernoulli(1 - p) in unknown order, p = 0.1, T = 100. With the
    # Beta presets' lr 1e-3 / entropy 0.05 it is still at 73.6 (sampling) after 2000 updates.
    "swapped": Experiment(
        env=EnvConfig("bandit_swapped", trial_len=100, reward_prob=0.1),
        agent=rl2.RL2Config(hidden=64, num_envs=64, rollout_len=100, learning_rate=3e-3,
                            entropy_cost=0.02, entropy_cost_end=0.0, entropy_anneal_updates=4000),
        train=TrainConfig(num_updates=5000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=4000, probe_trials=1000),
    ),
    # 5x5 open grid, goal in one of the 4 corners, start in the centre, T = 50.
    "hidden_goal": Experiment(
        env=EnvConfig("hidden_goal", trial_len=50, grid_size=5),
        agent=rl2.RL2Config(hidden=128, num_envs=128, rollout_len=50, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=3200),
        train=TrainConfig(num_updates=4000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=4000, probe_trials=1000),
    ),
}


# --------------------------------------------------------------------------------------
# Environments and their exact baselines
# --------------------------------------------------------------------------------------


class Suite(NamedTuple):
    env: Any
    params: Any
    oracle_env: Any  # the same tasks with the task revealed in the observation
    oracle: probes.Actor
    baselines: dict[str, probes.Actor]  # acting on `env`; the first is the reference
    reference: str | None  # name of the Bayes-optimal baseline whose policy_out has "q_values"
    exact: dict[str, float]  # expected returns known in closed form / by DP
    belief_views: Callable[[np.ndarray], dict[str, np.ndarray]]  # posterior -> named [N] colourings


def make_suite(config: EnvConfig) -> Suite:
    T = config.trial_len
    if config.name == "bandit_beta":
        env, params = bandits.make_beta_bandit(max_steps_in_episode=T)
        oracle_env, _ = bandits.make_beta_bandit(max_steps_in_episode=T, reveal_task=True)
        solution = bayes.beta_bandit_bayes_optimal(T)
        baselines = {"bayes_optimal": bayes.make_beta_bayes_optimal(solution),
                     "greedy": bayes.make_beta_greedy(), "thompson": bayes.make_beta_thompson(),
                     "random": bayes.make_random(2)}
        exact = {"bayes_optimal": solution.value, "oracle": bayes.beta_bandit_oracle_value(T)}

        def views(posterior):
            mean = bandits.posterior_mean(posterior)
            return {"posterior mean, arm 0": mean[:, 0], "posterior mean, arm 1": mean[:, 1]}

        return Suite(env, params, oracle_env, probes.Actor(*bayes.make_task_oracle()),
                     {k: probes.Actor(*v) for k, v in baselines.items()}, "bayes_optimal", exact, views)
    if config.name == "bandit_swapped":
        env, params = bandits.make_swapped_bandit(max_steps_in_episode=T, reward_prob=config.reward_prob)
        oracle_env, _ = bandits.make_swapped_bandit(reveal_task=True)
        solution = bayes.swapped_bandit_bayes_optimal(config.reward_prob, T)
        baselines = {"bayes_optimal": bayes.make_swapped_bayes_optimal(solution), "random": bayes.make_random(2)}
        exact = {"bayes_optimal": solution.value,
                 "oracle": bayes.swapped_bandit_oracle_value(config.reward_prob, T)}
        return Suite(env, params, oracle_env, probes.Actor(*bayes.make_task_oracle()),
                     {k: probes.Actor(*v) for k, v in baselines.items()}, "bayes_optimal", exact,
                     lambda posterior: {"P(arm 0 is good)": posterior[:, 0]})
    env, params = hidden_goal.make_hidden_goal(size=config.grid_size, max_steps_in_episode=T)
    oracle_env, _ = hidden_goal.make_hidden_goal(size=config.grid_size, reveal_task=True)
    solution = bayes.hidden_goal_bayes_optimal(env, params, T)
    baselines = {"bayes_optimal": bayes.make_hidden_goal_bayes_optimal(solution),
                 "posterior_sampling": bayes.make_hidden_goal_posterior_sampling(env),
                 "random": bayes.make_random(env.num_actions)}

    def views(posterior):
        entropy = -(posterior * np.log(np.where(posterior > 0, posterior, 1.0))).sum(-1)
        return {"posterior entropy (nats)": entropy, "P(goal = corner 0)": posterior[:, 0]}

    # the oracle walks the shortest path to the goal again and again: floor(T / distance) rewards
    distance = np.abs(np.asarray(params.candidates) - np.asarray(params.start)).sum(-1)
    exact = {"bayes_optimal": solution.value, "oracle": float(np.mean(T // distance))}
    return Suite(env, params, oracle_env, probes.Actor(*bayes.make_hidden_goal_oracle(oracle_env)),
                 {k: probes.Actor(*v) for k, v in baselines.items()}, "bayes_optimal", exact, views)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def default_run_dir(preset: str) -> Path:
    return Path("runs") / "rl2" / preset


def train(config: Experiment, run_dir: Path, resume: bool = True, quiet: bool = False):
    """Trains (or resumes) RL² and returns the final TrainState."""
    suite = make_suite(config.env)
    agent = rl2.make_rl2(suite.env, suite.params, config.agent)
    trainer = learner.make_train(suite.env, suite.params, agent, config.agent.num_envs, config.agent.rollout_len)
    chunk, total = config.train.updates_per_chunk, config.train.num_updates
    num_chunks = config.train.num_chunks
    run_updates = jax.jit(trainer.run, static_argnums=1)

    def run_chunk(state):  # the last chunk may be shorter (a second compile)
        return run_updates(state, min(chunk, total - int(state.step)))

    state = trainer.init(jax.random.PRNGKey(config.train.seed))
    run = runs.RunDir(run_dir, config, resume=resume)
    start = 0
    restored = run.restore(state) if resume else None
    if restored is not None:
        state, start = restored
        if not quiet:
            print(f"resuming {run.path} from chunk {start}/{num_chunks}", file=sys.stderr)

    def records(chunk_index, metrics):
        row = {k: float(np.mean(v)) for k, v in metrics.items()}
        row["episode_return"] = float(learner.learning_curve(
            metrics["episode_return"][None], metrics["episodes"][None], len(metrics["episodes"]))[0, 0])
        row["step"] = chunk_index + 1
        row["updates"] = min((chunk_index + 1) * chunk, total)
        row["env_steps"] = row["updates"] * trainer.steps_per_update
        return [row]

    def describe(row):
        return (f"update {row['updates']}: trial return {row['episode_return']:.3f}, "
                f"entropy {row['entropy']:.3f}, value loss {row['value_loss']:.3f}")

    state = runs.host_loop(run, state, run_chunk, num_chunks, records, describe,
                           checkpoint_every=config.train.checkpoint_every, start_chunk=start, quiet=quiet)
    run.close()
    return state


def load_params(config: Experiment, run_dir: Path):
    """The agent params of the latest checkpoint in `run_dir`."""
    suite = make_suite(config.env)
    agent = rl2.make_rl2(suite.env, suite.params, config.agent)
    trainer = learner.make_train(suite.env, suite.params, agent, config.agent.num_envs, config.agent.rollout_len)
    run = runs.RunDir(run_dir, config, resume=True)
    restored = run.restore(trainer.init(jax.random.PRNGKey(config.train.seed)))
    run.close()
    if restored is None:
        raise SystemExit(f"no checkpoint in {run_dir}: train first (--mode train)")
    state, step = restored
    return state.learner.params, step


# --------------------------------------------------------------------------------------
# Evaluation and analysis
# --------------------------------------------------------------------------------------


def agent_actor(suite: Suite, config: Experiment, params) -> probes.Actor:
    network = rl2.make_network(suite.env, suite.params, config.agent)
    return probes.Actor(rl2.make_policy(network, with_hidden=True), params, network.initial_carry())


def control_actor(suite: Suite, config: Experiment) -> probes.Actor:
    """The untrained network of the same size (seed `analysis.control_seed`)."""
    network = rl2.make_network(suite.env, suite.params, config.agent)
    params = network.init(jax.random.PRNGKey(config.analysis.control_seed), network.initial_carry(),
                          rl2.example_timestep(suite.env, suite.params))
    return agent_actor(suite, config, params)


def evaluate(config: Experiment, params, quiet: bool = False) -> tuple[dict, dict]:
    """Returns, regret (oracle - policy, same tasks) and Bayes-optimal agreement on held-out tasks.

    Returns (summary, data): data holds the per-trial arrays, including the agent's hidden
    states and those of the untrained control network on the same histories.
    """
    suite = make_suite(config.env)
    an, T = config.analysis, config.env.trial_len
    key = jax.random.PRNGKey(an.eval_seed)
    control = control_actor(suite, config)
    reference = {suite.reference: suite.baselines[suite.reference]} if suite.reference else {}

    def trials(actor, watchers=None, env=suite.env):
        return probes.run_trials(env, suite.params, actor, key, an.num_trials, T, watchers)

    t0 = time.time()
    data = {"agent": trials(agent_actor(suite, config, params), {"control": control, **reference})}
    data["oracle"] = trials(suite.oracle, env=suite.oracle_env)
    for name, actor in suite.baselines.items():
        data[name] = trials(actor, reference)
    oracle_return = data["oracle"]["reward"].sum(-1)
    policies = {}
    for name, d in data.items():
        ret = d["reward"].sum(-1)
        regret, regret_se = probes.paired_gap(oracle_return, ret)
        policies[name] = {"return": float(ret.mean()), "return_se": float(ret.std(ddof=1) / np.sqrt(len(ret))),
                          "regret": regret, "regret_se": regret_se}
        if suite.reference and name != "oracle":
            q_values = d[suite.reference]["q_values"]
            policies[name]["agreement"] = probes.agreement(d["action"], q_values)
            policies[name]["agreement_where_unique"] = probes.agreement(d["action"], q_values, unique_only=True)
            ties = (q_values >= q_values.max(-1, keepdims=True) - 1e-5).sum(-1)
            policies[name]["unique_fraction"] = float((ties == 1).mean())  # steps with one best action
        if not quiet:
            print(f"  {name:>18}: return {policies[name]['return']:.3f} ± {policies[name]['return_se']:.3f}, "
                  f"regret {regret:.3f} ± {regret_se:.3f}"
                  + (f", agreement {policies[name]['agreement']:.4f} (where unique "
                     f"{policies[name]['agreement_where_unique']:.4f})" if "agreement" in policies[name] else ""),
                  file=sys.stderr)
    summary = {"held_out_trials": an.num_trials, "eval_seed": an.eval_seed, "policies": policies,
               "exact": suite.exact, "seconds": time.time() - t0}
    ref = suite.reference or "posterior_sampling"
    gap, gap_se = probes.paired_gap(data[ref]["reward"].sum(-1), data["agent"]["reward"].sum(-1))
    summary["agent_vs_reference"] = {
        "reference": ref,
        "regret_ratio": policies["agent"]["regret"] / policies[ref]["regret"],
        "return_gap": gap, "return_gap_se": gap_se,
    }
    if "bayes_optimal" in suite.exact:
        exact_regret = suite.exact["oracle"] - suite.exact["bayes_optimal"]
        summary["agent_vs_reference"]["exact_bayes_regret"] = exact_regret
        summary["agent_vs_reference"]["regret_ratio_to_exact"] = policies["agent"]["regret"] / exact_regret
    return summary, data


def belief_inputs(d: dict) -> np.ndarray:
    """The information state of the finite-horizon POMDP at each step: the posterior over
    tasks, the observation (the observed part of the state: elapsed time for the bandits,
    the cell for the grid) and the elapsed fraction of the trial t/T. [N, T, P + O + 1]."""
    N, T = d["reward"].shape
    time = np.broadcast_to((np.arange(T) / T)[None, :, None], (N, T, 1))
    return np.concatenate([d["posterior"], d["obs"].reshape(N, T, -1), time], -1).astype(np.float32)


def analyse(config: Experiment, params, out_dir: Path, quiet: bool = False) -> dict:
    suite = make_suite(config.env)
    an = config.analysis
    summary, data = evaluate(config, params, quiet=quiet)
    d = jax.tree.map(lambda x: x[: an.probe_trials], data["agent"])
    N, T = d["reward"].shape
    flat = lambda x: np.asarray(x).reshape(N * T, -1)
    groups = np.repeat(np.arange(N), T)
    posterior = flat(d["posterior"])
    beliefs = flat(belief_inputs(d))
    states = {"trained": flat(d["actor"]["hidden"]), "control": flat(d["control"]["hidden"])}
    key = jax.random.PRNGKey(an.eval_seed + 1)
    kwargs = {"linear": {"alpha": an.ridge_alpha}, "mlp": {"hidden": an.mlp_hidden, "steps": an.mlp_steps}}

    t0 = time.time()
    # Probes on the agent's own histories, and on histories of the random policy that both
    # networks only watch: on its own histories the agent's previous actions carry its belief,
    # which helps the untrained control too; under the random policy they carry none.
    watchers = {"trained": agent_actor(suite, config, params), "control": control_actor(suite, config)}
    watched = probes.run_trials(suite.env, suite.params, suite.baselines["random"],
                                jax.random.PRNGKey(an.eval_seed + 2), N, T, watchers)
    histories = {"": (posterior, states),
                 " (random policy)": (flat(watched["posterior"]), {n: flat(watched[n]["hidden"]) for n in states})}
    decoding = {}
    for histories_name, (y_posterior, xs) in histories.items():
        targets = {"posterior": y_posterior}
        if config.env.name == "bandit_beta":
            targets["posterior_mean"] = bandits.posterior_mean(y_posterior)
        for target, y in targets.items():
            name = target + histories_name
            for kind in probes.PROBE_KINDS:
                for net, x in xs.items():
                    fit = probes.probe(kind, x, y, groups, key, an.test_fraction, **kwargs[kind])
                    decoding[f"{name}/{kind}/{net}"] = {"r2": fit["r2"], "r2_train": fit["r2_train"]}
                trained, control = decoding[f"{name}/{kind}/trained"], decoding[f"{name}/{kind}/control"]
                trained["unexplained_ratio_to_control"] = (1 - trained["r2"]) / max(1 - control["r2"], 1e-12)
    if not quiet:
        for name, v in decoding.items():
            print(f"  probe {name}: held-out R² {v['r2']:.4f}", file=sys.stderr)

    # Reverse map belief -> hidden state, and acting from the mapped state (state-machine simulation).
    network = rl2.make_network(suite.env, suite.params, config.agent)
    init_carry = network.initial_carry()
    simulation = {}
    for kind in probes.PROBE_KINDS:
        fit = probes.probe(kind, beliefs, states["trained"], groups, key, an.test_fraction, **kwargs[kind])
        s_test = states["trained"][fit["test"]]
        mapped = probes.Actor(mapped_state_policy(network, fit["map"], init_carry, config.env.trial_len),
                              params, jnp.zeros((), jnp.int32), reads_posterior=True)
        mapped_return = probes.run_trials(suite.env, suite.params, mapped, jax.random.PRNGKey(an.eval_seed),
                                          an.num_trials, config.env.trial_len)["reward"].sum(-1)
        lost, lost_se = probes.paired_gap(data["agent"]["reward"].sum(-1), mapped_return)
        simulation[kind] = {
            "dissimilarity": probes.dissimilarity(s_test, fit["y_hat"]),
            "dissimilarity_of_mean_state": probes.dissimilarity(s_test, np.broadcast_to(
                states["trained"][~fit["test"]].mean(0), s_test.shape)),
            "r2": fit["r2"],
            "mapped_return": float(mapped_return.mean()),
            "return_lost": lost, "return_lost_se": lost_se,
        }
    distances = {net: probes.equal_belief_distances(x, beliefs, seed=an.eval_seed, num_pairs=an.num_pairs)
                 for net, x in states.items()}
    summary.update(decoding=decoding, simulation=simulation, equal_belief_distances=distances,
                   analysis_seconds=time.time() - t0)

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_probes(decoding, out_dir / "probe_r2.png")
    plot_projection(states, suite.belief_views(posterior), out_dir / "hidden_pca.png")
    plot_regret(data, out_dir / "regret.png")
    return summary


def mapped_state_policy(network: rl2.RL2Network, belief_to_state, init_carry, trial_len: int):
    """Acts from φ(belief) instead of the agent's own hidden state (reads the wrapped env's
    posterior; the agent's recurrence is not run at all). The carry counts the trial's steps."""
    import distrax

    def policy_fn(params, t, timestep, key):
        t = jnp.where(timestep.first, 0, t + 1)
        obs = timestep.obs
        belief = jnp.concatenate([obs["posterior"], jnp.ravel(obs["obs"]), (t / trial_len)[None]])
        features = jnp.asarray(belief_to_state(belief[None]))[0].astype(jnp.float32)
        h = rl2.output_of(rl2.carry_from_features(features, init_carry))
        logits, _ = network.apply(params, h, method=rl2.RL2Network.heads)
        return distrax.Categorical(logits=logits).sample(seed=key), {}, t

    return policy_fn


# --------------------------------------------------------------------------------------
# Plots and reports
# --------------------------------------------------------------------------------------


def plot_probes(decoding: dict, path: Path) -> None:
    """Held-out R² (left) and unexplained variance 1 - R² on a log scale (right), trained vs control."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k.rsplit("/", 1)[0] for k in decoding})
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(3.2 * len(names) + 2, 3.8))
    for ax, transform, label in ((axes[0], lambda r: r, "held-out R²"),
                                 (axes[1], lambda r: max(1.0 - r, 1e-6), "held-out 1 − R² (log)")):
        for offset, net, colour in ((-0.2, "trained", "tab:blue"), (0.2, "control", "tab:gray")):
            values = [transform(decoding[f"{n}/{net}"]["r2"]) for n in names]
            bars = ax.bar(x + offset, values, 0.4, label=f"{net} network", color=colour)
            ax.bar_label(bars, fmt="%.3f" if ax is axes[0] else "%.2g", fontsize=7)
        ax.set_xticks(x, [n.replace("/", "\n") for n in names], fontsize=8)
        ax.set_ylabel(label)
    axes[0].set_ylim(min(0.0, min(v["r2"] for v in decoding.values())), 1.08)
    axes[1].set_yscale("log")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Probes hidden state -> exact posterior, untrained network of the same size as control")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_projection(states: dict, views: dict, path: Path, max_points: int = 5000) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle = data["oracle"]["reward"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, d in data.items():
        if name == "oracle":
            continue
        curve = np.cumsum(oracle - d["reward"], -1).mean(0)
        ax.plot(np.arange(1, len(curve) + 1), curve, label="RL² agent" if name == "agent" else name,
                lw=2.5 if name == "agent" else 1.2)
    ax.set_xlabel("step t of the trial")
    ax.set_ylabel("cumulative regret (oracle − policy)")
    ax.set_title("Regret over the trial (held-out tasks, same tasks for all)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summary: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# RL² belief-state analysis: preset `{summary['preset']}`", "",
             f"Command: `{summary['command']}`", "",
             f"Training: {summary['trained_updates']} updates. Held-out tasks: {summary['held_out_trials']} "
             f"trials from seed {summary['eval_seed']} (training used seed {summary['config']['train']['seed']}).", "",
             "## Returns and regret (same held-out tasks and environment randomness for every policy)", "",
             "| policy | return | regret (oracle − return) | agreement with a Bayes-optimal action "
             "| agreement where the Bayes-optimal action is unique (share of such steps) |",
             "| --- | --- | --- | --- | --- |"]
    for name, p in summary["policies"].items():
        agreement = f"{p['agreement']:.4f}" if "agreement" in p else "–"
        unique = f"{p['agreement_where_unique']:.4f} ({p['unique_fraction']:.2f})" if "agreement" in p else "–"
        lines.append(f"| {name} | {p['return']:.3f} ± {p['return_se']:.3f} | {p['regret']:.3f} ± {p['regret_se']:.3f} "
                     f"| {agreement} | {unique} |")
    ref = summary["agent_vs_reference"]
    lines += ["", f"Agent regret / {ref['reference']} regret (same tasks): **{ref['regret_ratio']:.3f}**."]
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
        lines += ["", "## Hidden-state distances: histories with equal vs different beliefs", "",
                  "| network | equal beliefs | different beliefs | ratio | distinct beliefs |",
                  "| --- | --- | --- | --- | --- |"]
        for net, v in summary["equal_belief_distances"].items():
            lines.append(f"| {net} | {v['equal']:.4f} | {v['different']:.4f} | {v['ratio']:.4f} | {v['distinct_beliefs']} |")
        lines += ["", "Plots: `probe_r2.png`, `hidden_pca.png`, `regret.png`."]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PRESETS, default="quick")
    parser.add_argument("--mode", default="all", choices=("all", "train", "evaluate", "analyse"),
                        help="all = train (or resume), then analyse")
    parser.add_argument("--out", default=None, help="where the analysis goes (default results/rl2/<preset>)")
    args = parser.parse_args(argv)
    config = apply_overrides(pick_preset(PRESETS, args.preset), args.set)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.preset)
    out_dir = Path(args.out) if args.out else Path("results") / "rl2" / args.preset
    train_seconds = None
    if args.mode in ("all", "train"):
        t0 = time.time()
        train(config, run_dir, resume=not args.no_resume)
        train_seconds = time.time() - t0
    if args.mode == "train":
        return
    params, step = load_params(config, run_dir)
    updates = min(step * config.train.updates_per_chunk, config.train.num_updates)
    print(f"analysing the checkpoint after {updates} updates on held-out tasks", file=sys.stderr)
    if args.mode == "evaluate":
        summary, _ = evaluate(config, params)
    else:
        summary = analyse(config, params, out_dir)
    summary.update(preset=args.preset, trained_updates=updates, config=runs.config_to_dict(config),
                   train_seconds_this_invocation=train_seconds,
                   command="python -m experiments.rl2 " + " ".join(argv if argv is not None else sys.argv[1:]))
    target = out_dir if args.mode == "analyse" or args.mode == "all" else run_dir
    write_report(summary, target)
    print(f"wrote {target / 'summary.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
