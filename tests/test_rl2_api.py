"""RL² as a library on a user-written task distribution: the README example, exact values, plots.

The README's example (the block marked `# example: rl2-custom-task`) is executed as written;
its environment, a two-armed bandit whose good arm is hidden, is then reused here, because
on it the greedy policy on the exact posterior is Bayes-optimal (either arm tells as much about
which one is good), so the evaluation can be checked against `lpg.bayes`'s exact DP.
"""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from lpg import bayes, rl2, rl2_analysis
from tests.test_readme import readme_block


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README example's namespace after running it (in a scratch working directory)."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("readme"))
    try:
        namespace = {"__name__": "readme_example"}
        exec(compile(readme_block("rl2-custom-task"), "README.md", "exec"), namespace)
        namespace["cwd"] = Path.cwd()
    finally:
        os.chdir(cwd)
    return namespace


def test_readme_example_trains_evaluates_and_analyses_a_custom_task(example):
    summary, P, T = example["summary"], example["P"], example["T"]
    policies = summary["policies"]
    # greedy on the exact posterior is Bayes-optimal here: its regret (paired with the oracle on
    # the same tasks) is the exact Bayes regret of the swapped bandit, by DP
    exact = bayes.swapped_bandit_oracle_value(P, T) - bayes.swapped_bandit_bayes_optimal(P, T).value
    greedy = policies["greedy"]
    assert abs(greedy["regret"] - exact) < 4 * greedy["regret_se"], (greedy, exact)
    agent, random = policies["agent"], policies["random"]
    assert agent["regret"] < random["regret"] - 10 * random["regret_se"], (agent, random)  # it learned
    for name in ("summary.md", "summary.json", "probe_r2.png", "hidden_pca.png", "regret.png"):
        assert (example["cwd"] / "runs" / "rl2_custom" / name).stat().st_size > 0, name


def test_known_family_baseline_on_a_user_environment(example):
    # The user's env is the swapped bandit of lpg.bayes, so its exact Bayes-optimal policy (Q-values
    # by DP) plugs in as the reference: greedy agrees with it wherever one arm is strictly better,
    # and its paired regret is the exact one.
    env, P, T = example["env"], example["P"], example["T"]
    solution = bayes.swapped_bandit_bayes_optimal(P, T)
    suite = rl2_analysis.TaskSuite(
        env, env.default_params, {"bayes_optimal": bayes.make_swapped_bayes_optimal(solution),
                                  "greedy": example["suite"].baselines["greedy"]},
        reference="bayes_optimal", oracle=example["suite"].oracle, oracle_env=example["suite"].oracle_env,
        exact={"bayes_optimal": solution.value, "oracle": bayes.swapped_bandit_oracle_value(P, T)})
    agent = rl2.RL2Config(hidden=8)
    params = rl2.make_rl2(env, env.default_params, agent).init(jax.random.PRNGKey(0)).params
    summary, _ = rl2_analysis.evaluate(suite, agent, params, rl2_analysis.AnalysisConfig(num_trials=4000),
                                       quiet=True)
    optimal, greedy = summary["policies"]["bayes_optimal"], summary["policies"]["greedy"]
    assert optimal["agreement"] == 1.0 and greedy["agreement_where_unique"] == 1.0
    assert 0.5 < greedy["unique_fraction"] < 1.0  # ties at even evidence, a unique best arm elsewhere
    exact_regret = summary["agent_vs_reference"]["exact_bayes_regret"]
    np.testing.assert_allclose(exact_regret, suite.exact["oracle"] - solution.value)
    assert abs(optimal["regret"] - exact_regret) < 4 * optimal["regret_se"], (optimal, exact_regret)
    assert summary["policies"]["agent"]["agreement"] < 0.9  # an untrained agent is not Bayes-optimal


def test_task_suite_defaults_and_errors(example):
    env = example["env"]
    suite = rl2_analysis.TaskSuite(env, env.default_params)
    assert list(suite.baselines) == ["random"] and suite.trial_len == example["T"]
    assert suite.oracle is None and suite.oracle_env is env
    with pytest.raises(ValueError, match="reference"):
        rl2_analysis.TaskSuite(env, env.default_params, reference="bayes_optimal")
    with pytest.raises(ValueError, match="test_fraction"):
        rl2_analysis.AnalysisConfig(test_fraction=1.0)
    with pytest.raises(ValueError, match="num_updates"):
        rl2.TrainConfig(num_updates=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rl2.load_params(env, env.default_params, rl2.RL2Config(), rl2.TrainConfig(), example["cwd"] / "nothing")


def test_probe_figure_keeps_labels_and_legend_clear_of_each_other_and_of_the_bars():
    # the Beta bandit's eight groups, R² close to 1 (the layout that used to hide a bar under the legend)
    names = [f"{target}{histories}/{kind}" for target in ("posterior", "posterior_mean")
             for histories in ("", " (random policy)") for kind in ("linear", "mlp")]
    rng = np.random.default_rng(0)
    decoding = {f"{n}/{net}": {"r2": float(1 - 10 ** rng.uniform(-3.5, -1))} for n in names
                for net in ("trained", "control")}
    fig = rl2_analysis.probe_figure(decoding)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)

    def overlap(a, b):
        return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1

    ticks = [t.get_window_extent(renderer) for t in fig.axes[-1].get_xticklabels() if t.get_text()]
    assert len(ticks) == len(names)
    assert not any(overlap(a, b) for i, a in enumerate(ticks) for b in ticks[i + 1:])
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        values = [t.get_window_extent(renderer) for t in ax.texts]
        bars = [p.get_window_extent(renderer) for p in ax.patches]
        assert len(values) == len(bars) == 2 * len(names)
        assert not any(overlap(legend, box) for box in [frame, *values, *bars])
        assert all(frame.y0 <= box.y0 and box.y1 <= frame.y1 for box in values)  # headroom for the labels
    titles = [t.get_window_extent(renderer) for t in fig.texts if t.get_text()]
    assert titles and not any(overlap(title, legend) for title in titles)
    import matplotlib.pyplot as plt

    plt.close(fig)


@struct.dataclass
class CueState(environment.EnvState):
    good: jax.Array
    posterior: jax.Array


class CuedArm(environment.Environment):
    """Two arms; the first observation shows a cue naming the good arm, right with probability
    0.9; only the last of T pulls pays (1 for the good arm). Rewards before it say nothing, so
    the posterior is the cue's, and holding it to the end of the trial needs memory."""

    T, Q = 8, 0.9

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=self.T)

    def reset_env(self, key, params):
        key_good, key_cue = jax.random.split(key)
        good = jax.random.bernoulli(key_good).astype(jnp.int32)
        cue = jnp.where(jax.random.bernoulli(key_cue, self.Q), good, 1 - good)
        posterior = jnp.where(jnp.arange(2) == cue, self.Q, 1 - self.Q)
        return jnp.concatenate([jnp.zeros(1), jax.nn.one_hot(cue, 2)]), CueState(jnp.int32(0), good, posterior)

    def step_env(self, key, state, action, params):
        reward = ((state.time == self.T - 1) & (action == state.good)).astype(jnp.float32)
        state = state.replace(time=state.time + 1)
        obs = jnp.array([state.time / self.T, 0.0, 0.0])
        return obs, state, reward, jnp.array(False), {"posterior": state.posterior}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (3,))


@pytest.mark.slow
def test_trained_agent_holds_the_posterior_that_an_untrained_network_forgets():
    env = CuedArm()
    agent = rl2.RL2Config(hidden=16, num_envs=64, rollout_len=env.T, learning_rate=3e-3,
                          entropy_cost=0.02, entropy_cost_end=0.0, entropy_anneal_updates=300)
    state = rl2.train(env, env.default_params, agent, rl2.TrainConfig(num_updates=300, updates_per_chunk=150),
                      quiet=True)
    config = rl2_analysis.AnalysisConfig(num_trials=500, probe_trials=200, mlp_steps=200, num_pairs=500)
    summary = rl2_analysis.analyse(rl2_analysis.TaskSuite(env, env.default_params), agent, state.learner.params,
                                   config, quiet=True)
    assert summary["policies"]["agent"]["return"] > 0.8  # follows the cue (0.9 at best, random 0.5)
    # On random-policy histories (actions carry no belief) only memory gives the posterior away.
    trained = summary["decoding"]["posterior (random policy)/linear/trained"]
    control = summary["decoding"]["posterior (random policy)/linear/control"]
    assert trained["r2"] > 0.98 and trained["unexplained_ratio_to_control"] < 0.2, (trained, control)
    # Histories that share a belief lie closer together in the trained state than in the control's
    distances = summary["equal_belief_distances"]
    assert distances["differences"]["trained - control"]["ci"][1] < 0, distances
