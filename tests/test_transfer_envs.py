"""envs.transfer: each environment passes envs.check and pays what its docstring says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import transfer


def play(name: str, actions: list[int]) -> tuple[float, int, bool]:
    """Return, steps and whether it terminated (not truncated), for a fixed action sequence."""
    env, params = envs.make(name)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    total = 0.0
    for i, action in enumerate(actions):
        _, state, reward, terminated, truncated, _ = env.step(jax.random.PRNGKey(i + 1), state, action, params)
        total += float(reward)
        if terminated or truncated:
            return total, i + 1, bool(terminated)
    raise AssertionError(f"{name}: no episode end within {len(actions)} steps")


@pytest.mark.parametrize("name", sorted(transfer.ENVIRONMENTS))
def test_registered_and_passes_the_user_environment_check(name):
    env, params = envs.make(name)
    assert envs.check(env, params).warnings == ()


def test_keydoor_pays_only_after_the_key():
    assert play("keydoor", [0, 0, 0] + [1] * 6) == (1.0, 9, True)  # the optimal route
    assert play("keydoor_reward10", [0, 0, 0] + [1] * 6) == (10.0, 9, True)
    assert play("keydoor", [1] * 45) == (0.0, 40, False)  # straight to the door: nothing, then the time limit
    assert play("keydoor", [1, 1, 1] + [0] * 6 + [1] * 6) == (1.0, 15, True)  # the door first, then the key


def test_step_cost_grid_optimum_and_time_limit():
    total, steps, terminated = play("step_cost_grid", [1] * 4 + [3] * 4)  # down 4, right 4
    assert (steps, terminated) == (8, True) and total == pytest.approx(-0.8)
    total, steps, terminated = play("step_cost_grid", [0] * 60)  # into the wall until the limit
    assert (steps, terminated) == (50, False) and total == pytest.approx(-5.0)


def test_noisy_contexts_good_action_pays_one_on_average_uniform_a_third():
    env, params = envs.make("noisy_contexts")

    def episode(key, greedy):
        k_reset, k_act, k_step = jax.random.split(key, 3)
        _, state = env.reset(k_reset, params)
        action = jnp.where(greedy, state.context % 3, jax.random.randint(k_act, (), 0, 3))
        _, _, reward, terminated, _, _ = env.step(k_step, state, action, params)
        return reward, terminated

    keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
    for greedy, mean in ((True, 1.0), (False, 1 / 3)):
        rewards, terminated = jax.vmap(episode, in_axes=(0, None))(keys, greedy)
        assert bool(terminated.all())  # one-step episodes
        assert float(rewards.mean()) == pytest.approx(mean, abs=0.03)  # noise sd 1: standard error 0.007
        assert float(rewards.std()) == pytest.approx(np.sqrt(1.0 + mean * (1 - mean)), abs=0.03)
