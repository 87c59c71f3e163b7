"""The setting mixture: each episode plays one setting, drawn with the given weights, under that
setting's params (its time limit, its reward probability), and it passes the user-env check."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from envs.bandits import make_beta_bandit, make_swapped_bandit
from envs.check import check_user_env
from envs.mixture import setting_mixture

SETTINGS = [(0.1, 5), (0.4, 12), (0.25, 30)]  # (reward_prob, T)


def episodes(env, params, num_streams=64, steps=1000):
    """(setting index, length, arm 0's reward probability) of every whole episode, pulling arm 0."""

    def stream(key):
        _, state = env.reset(key, params)

        def body(state, k):
            _, next_state, reward, terminated, truncated, _ = env.step(k, state, 0, params)
            return next_state, (state.index, state.time, state.inner.reward_probs[0], terminated | truncated)

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    index, time, prob, done = map(np.asarray, jax.jit(jax.vmap(stream))(jax.random.split(jax.random.key(0), num_streams)))
    out = []
    for i, t, q, d in zip(index, time, prob, done):
        ends = np.flatnonzero(d)
        for start, end in zip(ends[:-1] + 1, ends[1:]):  # whole episodes only
            assert len(set(i[start:end + 1])) == 1 and t[start] == 0
            out.append((i[start], end - start + 1, q[start]))
    return out


def test_each_episode_plays_its_drawn_setting():
    env0, _ = make_swapped_bandit()
    env, params = setting_mixture(env0, [make_swapped_bandit(reward_prob=p, max_steps_in_episode=T)[1]
                                         for p, T in SETTINGS], weights=[1, 1, 2])
    check_user_env(env, params)
    assert int(params.max_steps_in_episode) == 30
    eps = episodes(env, params)
    index = np.array([e[0] for e in eps])
    for k, (p, T) in enumerate(SETTINGS):
        mine = [e for e in eps if e[0] == k]
        assert {e[1] for e in mine} == {T}  # the setting's own time limit
        # arm 0 pays with the setting's p or 1 - p (a fair coin per episode)
        probs = np.array([e[2] for e in mine])
        np.testing.assert_allclose(np.minimum(np.abs(probs - p), np.abs(probs - (1 - p))), 0, atol=1e-6)
        assert 0.35 < np.mean(np.isclose(probs, p)) < 0.65
    # every episode draws its setting with the weights: settings 0 and 1 alike, setting 2 twice as
    # often (whole episodes only: the cut ones at the ends of the streams are a small bias)
    share = np.bincount(index, minlength=3) / len(index)
    np.testing.assert_allclose(share, [0.25, 0.25, 0.5], atol=0.04)


def test_bad_mixtures_are_refused_with_what_is_allowed():
    env0, swapped = make_swapped_bandit()
    with pytest.raises(ValueError, match="one pytree structure"):
        setting_mixture(env0, [swapped, make_beta_bandit()[1]])
    with pytest.raises(ValueError, match="weights must be one non-negative number per setting"):
        setting_mixture(env0, [swapped, swapped], weights=[1.0])
    with pytest.raises(ValueError, match="at least one"):
        setting_mixture(env0, [])
