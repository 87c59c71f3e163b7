"""Exact MDPs and planning: hand-computed cases, and agreement with the JAX environments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.chain import DelayedChain, make_chain
from envs.gridworld import GridState, GridWorld, make_level
from envs.levels import make_named_grid
from envs.planning import (
    episode_return, greedy_policy, optimal_episode_return, policy_evaluation, tabular_mdp,
    value_iteration,
)
from tests.test_gridworld import batched_rollout, step_many

KEY = jax.random.PRNGKey(0)
GAMMA = 0.9
E, W = 3, 7


def corridor(obj):
    env = GridWorld(1, 3, 1)
    return env, make_level(env, 1, 3, [obj], positions=[(0, 2)])


def s(cell, bits):
    return cell * 2 + bits


def test_corridor_terminal_object_values():
    env, params = corridor((1.0, 1.0, 0.0))
    mdp = tabular_mdp(env, params)
    V, Q = value_iteration(mdp, GAMMA)
    np.testing.assert_allclose([V[s(1, 1)], V[s(0, 1)]], [1.0, GAMMA], atol=1e-9)
    np.testing.assert_allclose(Q[s(1, 1), W], GAMMA**2, atol=1e-9)
    assert V[s(2, 0)] == 0.0  # gone and never respawns: nothing left
    pi = greedy_policy(Q)
    assert episode_return(mdp, pi, 1) == pytest.approx(0.5)  # reset at cell 0 or 1
    assert episode_return(mdp, pi, 5) == pytest.approx(1.0)
    # Uniform policy in the corridor: 1/9 of the moves go east, 1/9 west, the rest stay.
    uniform = np.full((mdp.num_states, 9), 1 / 9)
    A = np.array([[1 - GAMMA * 8 / 9, -GAMMA / 9], [-GAMMA / 9, 1 - GAMMA * 7 / 9]])
    v0, v1 = np.linalg.solve(A, [0.0, 1 / 9])
    V_uniform = policy_evaluation(mdp, uniform, GAMMA)
    np.testing.assert_allclose([V_uniform[s(0, 1)], V_uniform[s(1, 1)]], [v0, v1], atol=1e-9)


def test_corridor_respawning_object_values():
    # [1, 0, 1]: it reappears the step after the agent leaves its cell, so the best loop is
    # collect, step off, step on: V(next to it) = 1 / (1 - gamma^2).
    env, params = corridor((1.0, 0.0, 1.0))
    mdp = tabular_mdp(env, params)
    V, _ = value_iteration(mdp, GAMMA)
    np.testing.assert_allclose(V[s(1, 1)], 1 / (1 - GAMMA**2), atol=1e-8)
    np.testing.assert_allclose(V[s(2, 0)], GAMMA / (1 - GAMMA**2), atol=1e-8)


def test_chain_values():
    env = DelayedChain(max_length=50)
    params = make_chain(env, length=12, good_action=1)
    mdp = tabular_mdp(env, params)
    V, Q = value_iteration(mdp, 0.99)
    np.testing.assert_allclose(Q[0], [-(0.99**11), 0.99**11], atol=1e-9)
    assert episode_return(mdp, greedy_policy(Q), 100) == pytest.approx(1.0)
    assert episode_return(mdp, np.full((env.num_states, 2), 0.5), 100) == pytest.approx(0.0)


def test_transitions_are_distributions():
    env, params = make_named_grid("tabular_dense", collect_actions=True)
    mdp = tabular_mdp(env, params)
    assert mdp.num_states == 1936 and mdp.num_actions == 18
    total = np.stack([P.sum(1).A1 for P in mdp.P], 1) + mdp.terminate
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert mdp.d0.sum() == pytest.approx(1.0)


def small_level(env):
    walls = np.zeros((3, 4), bool)
    walls[1, 1] = True
    return make_level(env, 3, 4, [(1.0, 0.3, 0.2), (-1.0, 0.5, 0.6)], walls=walls,
                      positions=[(0, 3), (2, 0)], max_steps=15)


CELL_03 = 3  # (0, 3) in a 3x4 grid: object 0's cell


@pytest.mark.parametrize("action, present, term, outcomes", [
    # Moving onto object 0 without the collect flag; absent object 1 respawns w.p. 0.6.
    (E, (True, False), 0.0, {0b11: 0.6, 0b01: 0.4}),
    # Collecting: terminate w.p. 0.3, else object 1 respawns w.p. 0.6.
    (E + 9, (True, False), 0.3, {0b10: 0.7 * 0.6, 0b00: 0.7 * 0.4}),
    # Object 0 is absent and cannot reappear under the agent; object 1 can.
    (E + 9, (False, False), 0.0, {0b10: 0.6, 0b00: 0.4}),
])
def test_one_step_distribution_matches_hand_values_and_jax_env(action, present, term, outcomes):
    env = GridWorld(3, 4, 2, collect_actions=True)
    params = small_level(env)
    mdp = tabular_mdp(env, params)
    state = GridState(agent_cell=jnp.int32(2), obj_cell=jnp.array([3, 8], jnp.int32),
                      obj_present=jnp.array(present), time=jnp.int32(0))
    s0 = int(env.get_obs(state, params))
    hand = np.zeros(env.num_states)
    for bits, p in outcomes.items():
        hand[CELL_03 * 4 + bits] = p
    np.testing.assert_allclose(mdp.P[action][s0].toarray().ravel(), hand, atol=1e-12)
    assert mdp.terminate[s0, action] == pytest.approx(term)

    n = 20000
    _, _, r, terminated, _, info = step_many(env, jax.random.split(KEY, n), state, action, params)
    terminated = np.asarray(terminated)
    final = np.asarray(info["final_observation"])
    empirical = np.bincount(final[~terminated], minlength=env.num_states) / n
    np.testing.assert_allclose(terminated.mean(), term, atol=0.015)
    np.testing.assert_allclose(empirical, hand, atol=0.015)
    np.testing.assert_allclose(float(np.mean(r)), mdp.R[s0, action], atol=1e-6)


def test_episode_return_matches_monte_carlo_of_jax_env():
    env = GridWorld(3, 4, 2)
    params = small_level(env)
    mdp = tabular_mdp(env, params)
    horizon, n = 15, 16384
    expected = episode_return(mdp, np.full((mdp.num_states, 9), 1 / 9), horizon)
    actions = jax.random.randint(KEY, (n, horizon), 0, 9)
    _, r, term, trunc, _ = batched_rollout(
        env, jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), params),
        jax.random.split(KEY, n), actions,
    )
    done_before = np.cumsum(np.asarray(term | trunc), axis=1) - np.asarray(term | trunc)
    returns = np.sum(np.where(done_before == 0, np.asarray(r), 0.0), axis=1)
    assert bool(trunc[:, -1][~np.asarray(term).any(1)].all())  # the episode is `horizon` long
    stderr = returns.std() / np.sqrt(n)
    assert abs(returns.mean() - expected) < 4 * stderr, (returns.mean(), expected, stderr)
    assert abs(expected) > 5 * stderr  # the check is not vacuous


def test_named_grids_plan_to_a_fixed_point_that_beats_random():
    """On two named grids, value iteration's V* satisfies the Bellman optimality equation, its greedy
    policy's exact value is V*, no other policy (uniform, or V*'s greedy policy perturbed) does better
    in any state, and its episode return beats the uniform policy's."""
    gamma = 0.99
    for name in ("tabular_dense", "tabular_longer_horizon"):
        env, params = make_named_grid(name)
        mdp = tabular_mdp(env, params)
        V, Q = value_iteration(mdp, gamma)
        backup = mdp.R + gamma * np.stack([P @ V for P in mdp.P], axis=1)
        np.testing.assert_allclose(Q, backup, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(V, Q.max(axis=1), atol=1e-8, err_msg=name)
        greedy = greedy_policy(Q)
        np.testing.assert_allclose(policy_evaluation(mdp, greedy, gamma), V, atol=1e-6, err_msg=name)
        uniform = np.full((mdp.num_states, mdp.num_actions), 1 / mdp.num_actions)
        mixed = 0.9 * greedy + 0.1 * uniform
        for pi in (uniform, mixed):
            assert np.all(policy_evaluation(mdp, pi, gamma) <= V + 1e-6), name
        horizon = int(params.max_steps_in_episode)
        best = optimal_episode_return(env, params, gamma)
        assert best == pytest.approx(episode_return(mdp, greedy, horizon))
        assert best > episode_return(mdp, uniform, horizon) + 1.0, name


def test_random_placement_is_rejected():
    env, params = make_named_grid("random_small", obs_mode="tabular")
    with pytest.raises(ValueError, match="fixed object placement"):
        tabular_mdp(env, params)
    with pytest.raises(ValueError, match="gamma must be in"):
        value_iteration(tabular_mdp(*corridor((1.0, 1.0, 0.0))), 1.0)


def test_cost_level_pays_only_its_step_cost_and_plans_exactly():
    """A cost level of the generator (goal pays 0, every step -c): the JAX env pays -c on every step,
    and the exact uniform-policy episode return matches a Monte Carlo of the env; the optimal policy's
    return is -c times the steps of a shortest route, far above the uniform policy's."""
    from envs.levels import sample_level
    from envs.sources import SPARSE_LONG_COST_DISTRIBUTION as dist

    levels = jax.vmap(lambda k: sample_level(k, dist))(jax.random.split(KEY, 64))
    i = int(np.flatnonzero(np.asarray(levels.step_reward) < -0.05)[0])  # a level costing 0.1 per step
    params = jax.tree.map(lambda x: x[i], levels)
    env = dist.env("vector")
    mdp = tabular_mdp(env, params)
    horizon, n = int(params.max_steps_in_episode), 8192
    expected = episode_return(mdp, np.full((mdp.num_states, 9), 1 / 9), horizon)
    actions = jax.random.randint(KEY, (n, horizon), 0, 9)
    _, r, term, trunc, _ = batched_rollout(
        env, jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), params),
        jax.random.split(KEY, n), actions)
    done_before = np.cumsum(np.asarray(term | trunc), axis=1) - np.asarray(term | trunc)
    alive = done_before == 0
    np.testing.assert_allclose(np.asarray(r)[alive], -0.1, rtol=1e-6)  # the goal pays nothing
    returns = np.sum(np.where(alive, np.asarray(r), 0.0), axis=1)
    stderr = returns.std() / np.sqrt(n)
    assert abs(returns.mean() - expected) < 4 * stderr, (returns.mean(), expected, stderr)
    best = optimal_episode_return(env, params, 0.995, horizon)
    assert -0.1 * horizon < expected < best < 0  # reaching the goal sooner is what pays
