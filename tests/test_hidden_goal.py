"""Hidden-goal grid: elimination posterior by hand, trial / inner-episode structure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.hidden_goal import HiddenGoalGrid, make_hidden_goal

UP, RIGHT, DOWN, LEFT, STAY = range(5)


def test_elimination_and_goal_collapse_by_hand():
    env, params = make_hidden_goal(size=5, max_steps_in_episode=50)  # corners, start (2, 2)
    _, state = env.reset(jax.random.key(0), params)
    state = state.replace(goal=jnp.int32(3))  # goal at (4, 4)
    plan = [UP, UP, LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, DOWN, DOWN, DOWN, DOWN]
    expected = {
        0: [0.25] * 4,  # (1, 2): no candidate
        3: [0, 1 / 3, 1 / 3, 1 / 3],  # (0, 0) entered without reward
        4: [0, 1 / 3, 1 / 3, 1 / 3],  # bumped into the wall, still (0, 0)
        8: [0, 0, 0.5, 0.5],  # (0, 4) ruled out
        12: [0, 0, 0, 1],  # (4, 4): the goal
    }
    key = jax.random.key(1)
    for step, action in enumerate(plan):
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        assert not terminated and not truncated
        if step in expected:
            np.testing.assert_allclose(info["posterior"], expected[step], rtol=1e-6)
        assert float(reward) == (1.0 if step == 12 else 0.0)
    # Reaching the goal: back to the start cell, inner-episode flag up, same task.
    np.testing.assert_array_equal(state.pos, [2, 2])
    assert obs[2 * 5 + 2] == 1.0 and obs[25] == 1.0 and obs.sum() == 2.0
    assert int(state.goal) == 3
    obs, state, *_ = env.step(key, state, UP, params)
    assert obs[25] == 0.0 and obs[1 * 5 + 2] == 1.0
    np.testing.assert_allclose(state.posterior, [0, 0, 0, 1])


def test_custom_candidates_and_reveal():
    env, params = make_hidden_goal(
        size=4, candidates=[[0, 3], [3, 0], [3, 3]], start=[0, 0], reveal_task=True
    )
    obs, state = env.reset(jax.random.key(2), params)
    assert obs.shape == (16 + 1 + 3,) == env.observation_space(params).shape
    assert obs[0] == 1.0 and obs[16] == 1.0
    np.testing.assert_array_equal(obs[17:], jax.nn.one_hot(state.goal, 3))
    with pytest.raises(ValueError):
        HiddenGoalGrid(size=5, candidates=[[2, 2]])  # the start cell


def test_trial_structure_goal_persists_within_and_is_redrawn_across_trials():
    T, num_trials, num_streams = 100, 4, 64
    env, params = make_hidden_goal(max_steps_in_episode=T)

    def rollout(key):
        _, state = env.reset(key, params)

        def body(state, key):
            k_action, k_step = jax.random.split(key)
            action = jax.random.randint(k_action, (), 0, 5)
            _, next_state, reward, _, truncated, info = env.step(k_step, state, action, params)
            return next_state, (state.goal, reward, truncated, next_state.goal, info["posterior"])

        return jax.lax.scan(body, state, jax.random.split(key, T * num_trials))[1]

    goal, reward, truncated, next_goal, posterior = jax.jit(jax.vmap(rollout))(
        jax.random.split(jax.random.key(3), num_streams)
    )
    goal, reward, truncated, next_goal = map(np.asarray, (goal, reward, truncated, next_goal))
    # Truncation exactly every T steps, and only there can the goal change.
    np.testing.assert_array_equal(truncated[0], (np.arange(T * num_trials) + 1) % T == 0)
    np.testing.assert_array_equal(goal[~truncated], next_goal[~truncated])
    # Inner episodes happened (goal reached) without changing the task.
    inner_episode_end = (reward == 1) & ~truncated
    assert inner_episode_end.sum() > 50
    np.testing.assert_array_equal(goal[inner_episode_end], next_goal[inner_episode_end])
    # Across trials the goal is redrawn uniformly: it changes with probability 3/4.
    changed = (goal != next_goal)[truncated]
    assert 0.6 < changed.mean() < 0.9
    per_trial = goal[:, ::T].ravel()
    assert np.bincount(per_trial, minlength=4).min() > 0.15 * per_trial.size
    # Each trial starts from the uniform prior again: one step from the centre reaches
    # no corner, so the posterior after a trial's first step is still uniform.
    first_posterior = np.asarray(posterior)[:, ::T]
    np.testing.assert_allclose(first_posterior, 0.25)
