"""y analysis maths: the MLP probe, exact values on a hand-computable chain, the TD(λ) table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import registry
from envs.planning import tabular_mdp
from lpg import y_analysis
from lpg.learner import Learner, make_train


@pytest.fixture(scope="module")
def nonlinear_data():
    rng = np.random.default_rng(0)
    y = rng.uniform(-1.0, 1.0, size=(600, 4))  # a 4-d "y" and a nonlinear function of it
    v = np.sin(2.0 * y[:, 0]) + y[:, 1] ** 2 - y[:, 0] * y[:, 2]
    return y, v, rng


def test_mlp_recovers_a_nonlinear_function_and_not_shuffled_targets(nonlinear_data):
    y, v, rng = nonlinear_data
    shuffled = rng.permutation(v)
    for seed in range(2):
        out = y_analysis.regression_r2(y, np.stack([v, shuffled]), jax.random.PRNGKey(seed))
        r2_true, r2_shuffled = out["r2"]
        assert r2_true > 0.95, out["r2"]
        assert -0.1 < r2_shuffled < 0.05, out["r2"]  # early stopping leaves ~ the mean prediction
        assert out["predictions"].shape == (2, len(out["test"]))


def test_r2_score_on_known_numbers():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert y_analysis.r2_score(y, y) == 1.0
    assert y_analysis.r2_score(y, np.full(4, 2.5)) == 0.0
    assert y_analysis.r2_score(y, y + 1.0) == pytest.approx(1.0 - 4.0 / 5.0)


def test_exact_values_and_reachability_on_a_chain():
    # Chain of length 4, good branch 1: the first action picks the branch, the 4th step pays ±1.
    env, params = registry.make("chain_short", length=4, good_action=1)
    mdp = tabular_mdp(env, params)
    reachable = y_analysis.reachable_states(mdp)
    # obs = position * 2 + branch: (0, 0) at the start, then both branches at positions 1..3.
    assert np.flatnonzero(reachable).tolist() == [0, 2, 3, 4, 5, 6, 7]
    p_good = 0.8
    pi = np.full((mdp.num_states, 2), 0.5)
    pi[0] = [1.0 - p_good, p_good]
    discounts = [0.9, 0.5]
    values = y_analysis.true_values(mdp, pi, discounts)
    for d, g in enumerate(discounts):
        assert values[d, 0] == pytest.approx(g**3 * (2 * p_good - 1))  # reward after 4 steps
        for position in (1, 2, 3):
            assert values[d, position * 2 + 1] == pytest.approx(g ** (3 - position))
            assert values[d, position * 2 + 0] == pytest.approx(-(g ** (3 - position)))


def test_td_table_alongside_a_learner_converges_to_the_exact_values():
    env, params = registry.make("chain_short", length=5, good_action=0)
    mdp = tabular_mdp(env, params)
    gamma = 0.9

    def policy_fn(policy_params, carry, timestep, key):  # uniform, never updated
        return jax.random.bernoulli(key).astype(jnp.int32), {}, carry

    learner = Learner(init=lambda key: (), policy_fn=policy_fn, policy_params=lambda s: (),
                      update=lambda s, traj: (s, {}))
    wrapped = y_analysis.with_td_value(learner, env.num_states, gamma, lambda_=0.9, step_size=0.05)
    train = make_train(env, params, wrapped, num_envs=8, rollout_len=10)
    state, _ = jax.jit(train.run, static_argnums=1)(train.init(jax.random.PRNGKey(0)), 300)
    visited = np.asarray(state.learner.visits) > 0
    truth = y_analysis.true_values(mdp, np.full((env.num_states, 2), 0.5), [gamma])[0]
    assert np.array_equal(visited, y_analysis.reachable_states(mdp))
    np.testing.assert_allclose(np.asarray(state.learner.v)[visited], truth[visited], atol=0.1)
    assert np.abs(truth[visited]).max() > 0.5  # the values are not trivially zero


def test_y_disagreement_is_zero_for_equal_predictions_and_two_for_unrelated_ones():
    rng = np.random.default_rng(0)
    y = rng.uniform(size=(500, 8))
    assert y_analysis.y_disagreement(y, y) == 0.0
    assert y_analysis.y_disagreement(y, y + 1.0) == pytest.approx(8.0 / (8 / 12), rel=0.05)  # offset 1 per unit, var 1/12
    assert y_analysis.y_disagreement(y, rng.uniform(size=(500, 8))) == pytest.approx(2.0, rel=0.1)


def test_random_y_init_differs_between_agents_and_lies_in_the_unit_interval():
    from envs.chain import DelayedChain, make_chain
    from lpg import evaluate
    from lpg.inner import Hypers
    from lpg.update_rule import RuleConfig, init_rule

    env = DelayedChain(10)
    params = make_chain(env, 5)
    config = RuleConfig(hidden=8, y_size=4)
    hypers = Hypers(*(jnp.float32(x) for x in (0.99, 40.0, 0.5, 0.0, 100)))
    learner = y_analysis.with_random_y(
        evaluate.lpg_learner(env, params, init_rule(config, jax.random.PRNGKey(0)), config, hypers))
    a, b = (np.asarray(learner.init(jax.random.PRNGKey(k)).params["params"]["aux"]) for k in (1, 2))
    assert a.shape == (env.num_states, 4) and 0.0 <= a.min() and a.max() <= 1.0
    assert y_analysis.y_disagreement(a, b) > 1.0
