"""The rollout engine: auto-reset, bootstrap observations, carries, vmaps, determinism."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs.probe import ContextualBandit
from lpg import rollout as engine


@struct.dataclass
class CounterState(environment.EnvState):
    time: chex.Array


@struct.dataclass
class CounterParams(environment.EnvParams):
    max_steps_in_episode: int = 3
    terminal_action: int = 99  # taking this action terminates the episode


class Counter(environment.Environment):
    """obs = steps taken in the episode; reward = the action; truncates after max_steps."""

    @property
    def default_params(self):
        return CounterParams()

    def step_env(self, key, state, action, params):
        state = CounterState(time=state.time + 1)
        return state.time, state, action.astype(jnp.float32), action == params.terminal_action, {}

    def reset_env(self, key, params):
        return jnp.zeros((), jnp.int32), CounterState(time=jnp.zeros((), jnp.int32))

    def action_space(self, params=None):
        return spaces.Discrete(100)

    def observation_space(self, params=None):
        return spaces.Discrete(100)


def constant_policy(action):
    def policy_fn(params, carry, timestep, key):
        return jnp.int32(action), {}, carry

    return policy_fn


def test_auto_reset_hands_back_pre_reset_observation():
    env, params = Counter(), CounterParams(max_steps_in_episode=3)
    state = engine.reset(env, params, jax.random.PRNGKey(0), batch_size=2)
    _, traj = engine.rollout(env, params, constant_policy(1), None, state, jax.random.PRNGKey(1), 7)
    np.testing.assert_array_equal(traj.obs[:, 0], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(traj.next_obs[:, 0], [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(traj.truncated[:, 0], [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(traj.terminated[:, 0], np.zeros(7))
    np.testing.assert_array_equal(traj.first[:, 0], [1, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(traj.episode_return[:, 0], [1, 2, 3, 1, 2, 3, 1])


def test_terminated_is_not_truncated():
    env, params = Counter(), CounterParams(max_steps_in_episode=10, terminal_action=5)
    state = engine.reset(env, params, jax.random.PRNGKey(0), batch_size=1)
    _, traj = engine.rollout(env, params, constant_policy(5), None, state, jax.random.PRNGKey(1), 3)
    np.testing.assert_array_equal(traj.terminated[:, 0], [1, 1, 1])
    np.testing.assert_array_equal(traj.truncated[:, 0], [0, 0, 0])
    np.testing.assert_array_equal(traj.next_obs[:, 0], [1, 1, 1])


def test_carry_persists_within_episode_and_resets_at_episode_start():
    env, params = Counter(), CounterParams(max_steps_in_episode=4)

    def counting_policy(params, carry, timestep, key):
        # The carry counts steps seen since it was last reset and records prev_reward.
        carry = carry + 1
        return jnp.int32(2), {"carry": carry, "prev_reward": timestep.prev_reward}, carry

    init_carry = jnp.int32(0)
    state = engine.reset(env, params, jax.random.PRNGKey(0), 1, init_carry)
    _, traj = engine.rollout(env, params, counting_policy, None, state, jax.random.PRNGKey(1), 9, init_carry)
    np.testing.assert_array_equal(traj.policy_out["carry"][:, 0], [1, 2, 3, 4, 1, 2, 3, 4, 1])
    np.testing.assert_array_equal(traj.policy_out["prev_reward"][:, 0], [0, 2, 2, 2, 0, 2, 2, 2, 0])


def _random_policy(num_actions):
    def policy_fn(params, carry, timestep, key):
        return jax.random.randint(key, (), 0, num_actions), {}, carry

    return policy_fn


def test_vmap_over_levels_matches_each_level_alone():
    env = ContextualBandit(num_states=3, num_actions=3)
    levels = [env.sample_params(jax.random.PRNGKey(i)) for i in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *levels)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)

    def run(params, key):
        k0, k1 = jax.random.split(key)
        state = engine.reset(env, params, k0, batch_size=5)
        return engine.rollout(env, params, _random_policy(3), None, state, k1, 6)[1]

    batched = jax.jit(jax.vmap(run))(stacked, keys)
    for i, params in enumerate(levels):
        alone = run(params, keys[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], batched), alone)
    assert not np.array_equal(batched.reward[0], batched.reward[1])


def test_same_seed_same_result_and_different_seed_differs():
    env = ContextualBandit(num_states=4, num_actions=3)
    params = env.default_params

    def run(seed):
        state = engine.reset(env, params, jax.random.PRNGKey(seed), 8)
        return engine.rollout(env, params, _random_policy(3), None, state, jax.random.PRNGKey(seed + 1), 10)[1]

    chex.assert_trees_all_equal(run(0), run(0))
    assert not np.array_equal(run(0).action, run(1).action)


def test_completed_episode_stats_counts_only_finished_episodes():
    env, params = Counter(), CounterParams(max_steps_in_episode=3)
    state = engine.reset(env, params, jax.random.PRNGKey(0), batch_size=2)
    _, traj = engine.rollout(env, params, constant_policy(2), None, state, jax.random.PRNGKey(1), 7)
    stats = engine.completed_episode_stats(traj)
    assert float(stats["episodes"]) == 4.0  # two episodes per stream finished in 7 steps
    assert float(stats["episode_return"]) == 6.0
