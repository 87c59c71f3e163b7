"""Delayed chain MDPs: payoffs, episode length, observations, per-lifetime sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.chain import DelayedChain, make_chain, sample_chain
from envs.gridworld import stack_params
from tests.test_gridworld import batched_rollout

KEY = jax.random.PRNGKey(0)


def test_good_branch_pays_plus_one_at_the_end_and_episode_lasts_length():
    env = DelayedChain(max_length=50)
    params = stack_params([make_chain(env, length=7, good_action=1)] * 64)
    actions = jnp.repeat(jnp.array([1, 0], jnp.int32), 32)[:, None] * jnp.ones(50, jnp.int32)
    obs, r, term, trunc, _ = batched_rollout(env, params, jax.random.split(KEY, 64), actions)
    expected_term = np.arange(50) % 7 == 6
    np.testing.assert_array_equal(term, np.broadcast_to(expected_term, (64, 50)))
    for rows, payoff in ((slice(0, 32), 1.0), (slice(32, 64), -1.0)):
        expected_r = np.where(expected_term, payoff, 0.0)
        np.testing.assert_array_equal(r[rows], np.broadcast_to(expected_r, (32, 50)))
    assert not bool(trunc.any())
    # Tabular observation: position * 2 + branch, read before the terminal step resets it.
    np.testing.assert_array_equal(obs[0, :6], [3, 5, 7, 9, 11, 13])


def test_noisy_chain_pays_fair_coin_in_the_middle():
    env = DelayedChain(max_length=50)
    params = stack_params([make_chain(env, length=50, good_action=0, noisy=True)] * 64)
    actions = jnp.zeros((64, 50), jnp.int32)
    _, r, term, _, _ = batched_rollout(env, params, jax.random.split(KEY, 64), actions)
    middle = np.asarray(r[:, :-1])
    assert set(np.unique(middle)) == {-1.0, 1.0}
    assert abs(middle.mean()) < 0.05
    np.testing.assert_array_equal(r[:, -1], 1.0)
    assert bool(term[:, -1].all()) and not bool(term[:, :-1].any())


def test_distraction_observation():
    env = DelayedChain(max_length=50, obs_mode="distraction")
    assert env.observation_space(None).shape == (22,)
    params = stack_params([make_chain(env, length=30, good_action=0)] * 64)
    actions = jnp.ones((64, 29), jnp.int32)
    obs0, _ = env.reset(KEY, make_chain(env, length=30))
    assert obs0.shape == (22,) and obs0.dtype == jnp.float32
    np.testing.assert_array_equal(obs0[:2], [0.0, 0.0])  # no branch chosen yet
    obs, *_ = batched_rollout(env, params, jax.random.split(KEY, 64), actions)
    np.testing.assert_array_equal(obs[..., :2], np.broadcast_to([0.0, 1.0], (64, 29, 2)))
    noise = np.asarray(obs[..., 2:])
    assert set(np.unique(noise)) == {0.0, 1.0} and abs(noise.mean() - 0.5) < 0.02


@pytest.mark.parametrize("kind, low, high, noisy", [
    ("short", 5, 30, False), ("long", 5, 50, False), ("long_noisy", 5, 50, True),
    ("medium", 21, 30, False), ("heldout", 31, 50, False),
])
def test_sample_chain_ranges(kind, low, high, noisy):
    params = jax.vmap(lambda k: sample_chain(k, kind))(jax.random.split(KEY, 3000))
    lengths = np.asarray(params.length)
    assert lengths.min() == low and lengths.max() == high
    assert set(np.unique(params.good_action)) == {0, 1}
    assert bool(np.all(params.noisy == noisy))


def test_bad_chain_arguments():
    env = DelayedChain(max_length=10)
    with pytest.raises(ValueError, match=r"must be in \[1, max_length=10\]"):
        make_chain(env, length=11)
    with pytest.raises(ValueError, match="good_action must be 0 or 1"):
        make_chain(env, length=5, good_action=2)
    with pytest.raises(ValueError, match="unknown chain kind"):
        sample_chain(KEY, "middling")
    with pytest.raises(ValueError, match="needs max_length >= 50"):
        sample_chain(KEY, "long", max_length=30)
    with pytest.raises(ValueError, match="unknown obs_mode"):
        DelayedChain(obs_mode="pixels")
