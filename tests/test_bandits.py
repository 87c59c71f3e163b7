"""Bandit task distributions: posteriors against closed forms, trial structure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.bandits import (
    ENVIRONMENTS,
    BetaBernoulliBandit,
    SwappedBandit,
    posterior_mean,
)


# One instance each, so that `env.step` (jitted with `self` static) compiles once per shape.
BETA_2, BETA_3 = BetaBernoulliBandit(2), BetaBernoulliBandit(3)
SWAPPED = SwappedBandit()


def _play(env, params, state, actions, key):
    """Step through a fixed action list; returns per-step (reward, posterior, obs)."""
    rewards, posteriors, observations = [], [], []
    for action in actions:
        key, sub = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = env.step(
            sub, state, jnp.int32(action), params
        )
        assert not terminated
        rewards.append(float(reward))
        posteriors.append(np.asarray(info["posterior"]))
        observations.append(np.asarray(obs))
    return np.array(rewards), np.array(posteriors), np.array(observations), state


def test_beta_counts_from_hand_written_history():
    env, params = BETA_2, BETA_2.default_params.replace(max_steps_in_episode=10)
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(probs=jnp.array([1.0, 0.0]))  # arm 0 always pays, arm 1 never
    actions = [0, 0, 1, 0, 1, 1]
    rewards, posteriors, observations, state = _play(env, params, state, actions, jax.random.key(1))
    np.testing.assert_array_equal(rewards, [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(posteriors[2], [3, 1, 1, 2])
    np.testing.assert_array_equal(posteriors[-1], [4, 1, 1, 4])
    np.testing.assert_array_equal(state.posterior, posteriors[-1])
    np.testing.assert_allclose(posterior_mean(state.posterior), [0.8, 0.2])
    np.testing.assert_allclose(observations[:, 0], np.arange(1, 7) / 10)


def test_beta_counts_random_history_and_truncation():
    T = 7
    env, params = BETA_3, BETA_3.default_params.replace(max_steps_in_episode=T)
    key = jax.random.key(2)
    obs, state = env.reset(key, params)
    np.testing.assert_array_equal(obs, [0.0])
    counts = np.ones(6)
    for step in range(1, 2 * T + 1):
        key, k_action, k_step = jax.random.split(key, 3)
        action = int(jax.random.randint(k_action, (), 0, 3))
        obs, state, reward, terminated, truncated, info = env.step(k_step, state, action, params)
        counts[2 * action + (0 if reward == 1.0 else 1)] += 1
        np.testing.assert_array_equal(info["posterior"], counts)
        assert bool(truncated) == (step % T == 0) and not terminated
        if truncated:  # new trial: fresh task, prior posterior, time 0
            counts = np.ones(6)
            np.testing.assert_array_equal(state.posterior, counts)
            assert int(state.time) == 0 and float(obs[0]) == 0.0


def test_beta_prior_is_uniform():
    env, params = BETA_2, BETA_2.default_params
    probs = jax.vmap(lambda k: env.reset(k, params)[1].probs)(
        jax.random.split(jax.random.key(3), 4000)
    )
    # Beta(1, 1): mean 1/2, variance 1/12.
    assert abs(float(probs.mean()) - 0.5) < 0.02
    assert abs(float(probs.var()) - 1 / 12) < 0.01


def test_swapped_posterior_hand_computed():
    env, params = SWAPPED, SWAPPED.default_params.replace(reward_prob=0.25)
    _, state = env.reset(jax.random.key(4), params)
    state = state.replace(reward_probs=jnp.array([1.0, 0.0]))  # deterministic rewards
    rewards, posteriors, _, _ = _play(env, params, state, [0, 1, 0], jax.random.key(5))
    np.testing.assert_array_equal(rewards, [1, 0, 1])
    # Likelihoods: H0 (arm 0 pays 0.75) .75*.75*.75, H1 .25*.25*.25 -> 27/28.
    np.testing.assert_allclose(posteriors[:, 0], [0.75, 0.9, 27 / 28], rtol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.7])
def test_swapped_posterior_matches_bayes_rule(p):
    env, params = SWAPPED, SWAPPED.default_params.replace(reward_prob=p)
    key = jax.random.key(6)
    _, state = env.reset(key, params)
    actions = np.array(jax.random.randint(key, (30,), 0, 2))
    rewards, posteriors, _, _ = _play(env, params, state, actions, jax.random.key(7))
    hi = max(p, 1 - p)
    arm_probs_h0 = np.array([hi, 1 - hi])
    lik_h0 = np.where(rewards == 1, arm_probs_h0[actions], 1 - arm_probs_h0[actions])
    lik_h1 = np.where(rewards == 1, arm_probs_h0[1 - actions], 1 - arm_probs_h0[1 - actions])
    l0, l1 = np.cumprod(lik_h0), np.cumprod(lik_h1)
    np.testing.assert_allclose(posteriors[:, 0], l0 / (l0 + l1), rtol=1e-5)


def test_swapped_is_gymnax_task_with_fair_coin():
    env, params = SWAPPED, SWAPPED.default_params.replace(reward_prob=0.1)
    probs = jax.vmap(lambda k: env.reset(k, params)[1].reward_probs)(
        jax.random.split(jax.random.key(8), 2000)
    )
    arm0_good = np.asarray(probs[:, 0] > 0.5)
    np.testing.assert_allclose(np.sort(np.asarray(probs), -1), [[0.1, 0.9]] * 2000, atol=1e-6)
    assert 0.45 < arm0_good.mean() < 0.55


def test_scanned_vmapped_rollout_and_reveal():
    """Auto-reset inside lax.scan keeps the state's types; the oracle view shows the task."""
    for name, factory in ENVIRONMENTS.items():
        env, params = factory(reveal_task=True, max_steps_in_episode=5)
        assert env.observation_space(params).shape[0] == (3 if name == "bandit_beta" else 2)

        def rollout(key):
            obs, state = env.reset(key, params)

            def body(state, key):
                obs, state, reward, _, truncated, info = env.step(key, state, 1, params)
                # What the oracle should see of the (possibly new, after an auto-reset) task.
                task = (state.probs if name == "bandit_beta"
                        else (state.reward_probs[0] >= state.reward_probs[1]).astype(jnp.float32)[None])
                return state, (obs, truncated, task)

            return jax.lax.scan(body, state, jax.random.split(key, 12))[1]

        obs, truncated, task = jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.key(9), 4))
        assert obs.shape[:2] == (4, 12)
        np.testing.assert_array_equal(truncated[0], [(t + 1) % 5 == 0 for t in range(12)])
        np.testing.assert_allclose(obs[..., 1:], task, err_msg=name)
        # Tasks are redrawn at the resets (after steps 5 and 10), so the revealed part changes.
        assert np.unique(np.asarray(obs[..., 1:]).reshape(-1, obs.shape[-1] - 1), axis=0).shape[0] > 1, name
