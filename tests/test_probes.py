"""Belief-state probes: recover known maps, fail on shuffled data, hand-checked metrics."""

import jax
import numpy as np
import pytest

from envs import bandits
from lpg import bayes, probes


def _data(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 4))
    groups = np.arange(n) // 10  # "trials" of 10 steps
    return rng, x, groups


def test_r2_and_dissimilarity_hand_cases():
    y = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert probes.r2_score(y, y) == 1.0
    assert probes.r2_score(y, np.full_like(y, 1.5)) == 0.0
    np.testing.assert_allclose(probes.r2_score(y, y + 1.0), 1.0 - 4.0 / 5.0)
    # errors ||s - s_hat||² = 1 and 1; ||s||² = 1 and 4: 1 / 2.5
    s = np.array([[1.0, 0.0], [0.0, 2.0]])
    s_hat = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert probes.dissimilarity(s, s_hat) == pytest.approx(0.4)
    assert probes.dissimilarity(s, s) == 0.0


def test_linear_probe_recovers_linear_map_and_fails_on_shuffled_targets():
    rng, x, groups = _data()
    w = rng.normal(size=(4, 3))
    y = x @ w + 0.05 * rng.normal(size=(len(x), 3))
    key = jax.random.PRNGKey(0)
    assert probes.probe("linear", x, y, groups, key)["r2"] > 0.99
    shuffled = probes.probe("linear", x, rng.permutation(y), groups, key)["r2"]
    assert abs(shuffled) < 0.03


def test_mlp_probe_recovers_nonlinear_map_that_linear_misses():
    rng, x, groups = _data(1)
    y = np.stack([np.sin(2 * x[:, 0]) * x[:, 1], np.abs(x[:, 2])], -1)
    key = jax.random.PRNGKey(1)
    mlp = probes.probe("mlp", x, y, groups, key, steps=1500)["r2"]
    linear = probes.probe("linear", x, y, groups, key)["r2"]
    assert mlp > 0.9 and linear < 0.1, (mlp, linear)
    shuffled = probes.probe("mlp", x, rng.permutation(y), groups, key, steps=1500)["r2"]
    assert shuffled < 0.05  # no leakage between trials: fitting noise does not generalise


def test_split_keeps_trials_on_one_side():
    groups = np.repeat(np.arange(50), 7)
    train, test = probes.split_by_group(groups, jax.random.PRNGKey(0), 0.3)
    assert not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == 15 and (train ^ test).all()


def test_equal_belief_distances_separate_functions_of_belief_from_noise():
    # 500 trials of 10 steps; a history's belief is its trial's running count of 1s (shared across trials)
    rng = np.random.default_rng(0)
    beliefs = np.cumsum(rng.integers(0, 2, (500, 10)), axis=1).reshape(-1, 1).astype(float)
    groups = np.repeat(np.arange(500), 10)
    embedding = rng.normal(size=(1, 8))
    hidden = {"function of belief": np.tanh(beliefs @ embedding / 3), "noise": rng.normal(size=(5000, 8)),
              "other noise": rng.normal(size=(5000, 8))}
    d = probes.equal_belief_distances(hidden, beliefs, groups, seed=0)
    exact, noise = d["networks"]["function of belief"], d["networks"]["noise"]
    assert exact["equal"] == 0.0 and exact["different"] > 0.1 and exact["ratio_ci"] == [0.0, 0.0]
    assert noise["ratio"] == pytest.approx(1.0, abs=0.05)
    assert noise["ratio_ci"][0] < 1.0 < noise["ratio_ci"][1] and noise["ratio_ci"][1] - noise["ratio_ci"][0] < 0.1
    # paired differences: the belief-driven state beats noise with an interval far from 0; two
    # equally uninformative states are not told apart
    better = d["differences"]["function of belief - noise"]
    assert better["ci"][1] < -0.9
    alike = d["differences"]["noise - other noise"]
    assert alike["ci"][0] < 0.0 < alike["ci"][1]
    # the pairs depend on the beliefs only: the same network alone gives the same numbers
    alone = probes.equal_belief_distances({"noise": hidden["noise"]}, beliefs, seed=0)
    assert alone["networks"]["noise"]["ratio"] == noise["ratio"] and "differences" not in alone


def test_run_trials_pairs_each_step_with_the_posterior_of_the_same_history():
    # Greedy tracks the Beta counts from (a_t-1, r_t) itself: its belief before acting at t
    # must equal the env posterior handed to the policy at t.
    env, params = bandits.make_beta_bandit(max_steps_in_episode=6)
    d = probes.run_trials(env, params, probes.Actor(*bayes.make_beta_greedy()), jax.random.PRNGKey(0), 64, 6)
    np.testing.assert_allclose(d["actor"]["belief"], d["posterior"])
    np.testing.assert_allclose(d["posterior"][:, 0], 1.0)  # the prior before the first pull
    assert d["reward"].shape == (64, 6)
    with pytest.raises(ValueError, match="trial length"):
        probes.run_trials(env, params, probes.Actor(*bayes.make_beta_greedy()), jax.random.PRNGKey(0), 4, 5)


def test_agreement_counts_ties_as_agreeing():
    q = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    assert probes.agreement(np.array([0, 1, 0]), q) == pytest.approx(2 / 3)
    assert probes.agreement(np.array([0, 1, 0]), q, unique_only=True) == pytest.approx(1 / 2)
