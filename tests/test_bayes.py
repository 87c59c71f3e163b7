"""Exact Bayes baselines: DP values against REFERENCE.md, policies in the JAX envs."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.bandits import make_beta_bandit, make_swapped_bandit
from envs.hidden_goal import make_hidden_goal
from lpg import bayes


class Timestep(NamedTuple):  # the engine's lpg.rollout.Timestep
    obs: jax.Array
    prev_action: jax.Array
    prev_reward: jax.Array
    first: jax.Array


def run_trials(runs, key, num_trials):
    """One trial per stream under the engine's conventions, for each (env, env_params, policy).

    All runs share one jit (compiling is what costs time here) and the same keys, so the
    runs on the same env see the same tasks. Returns per run `(reward, action,
    policy_out, posterior)`, each `[num_trials, T, ...]`.
    """

    def one_trial(env, env_params, policy, key):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, env_params)
        timestep = Timestep(obs, jnp.int32(0), jnp.float32(0.0), jnp.bool_(True))

        def body(loop, key):
            state, timestep, carry = loop
            k_policy, k_env = jax.random.split(key)
            carry = jax.tree.map(
                lambda init, c: jnp.where(timestep.first, init, c), policy.init_carry, carry
            )
            action, policy_out, carry = policy.policy_fn(policy.params, carry, timestep, k_policy)
            obs, state, reward, terminated, truncated, info = env.step(
                k_env, state, action, env_params
            )
            done = terminated | truncated
            timestep = Timestep(
                obs,
                jnp.where(done, 0, action).astype(jnp.int32),
                jnp.where(done, 0.0, reward).astype(jnp.float32),
                done,
            )
            return (state, timestep, carry), (reward, action, policy_out, info["posterior"], done)

        T = int(env_params.max_steps_in_episode)
        loop = (state, timestep, policy.init_carry)
        return jax.lax.scan(body, loop, jax.random.split(k_run, T))[1]

    def run_all(keys):
        return [jax.vmap(lambda k, r=r: one_trial(*r, k))(keys) for r in runs]

    results = jax.jit(run_all)(jax.random.split(key, num_trials))
    for *_, done in results:  # exactly one trial per stream
        assert bool(done[:, -1].all()) and not bool(done[:, :-1].any())
    return [result[:4] for result in results]


def mean_and_se(reward):
    returns = np.asarray(reward).sum(-1)
    return returns.mean(), returns.std() / np.sqrt(len(returns))


# ------------------------------------------------------------------ dynamic programming


def test_beta_dp_reproduces_reference():
    assert round(bayes.beta_bandit_bayes_optimal(20).value, 3) == 12.431
    assert round(bayes.beta_bandit_bayes_optimal(100).value, 3) == 64.918
    assert round(bayes.beta_bandit_oracle_value(20), 3) == 13.333
    assert round(bayes.beta_bandit_oracle_value(100), 3) == 66.667


@pytest.mark.parametrize("num_arms", [2, 3])
def test_beta_dp_by_hand(num_arms):
    # T = 2: pull any arm (1/2); after a success stay (2/3), after a failure switch (1/2).
    solution = bayes.beta_bandit_bayes_optimal(2, num_arms=num_arms)
    assert solution.value == pytest.approx(0.5 + 0.5 * 2 / 3 + 0.5 * 0.5)
    after_failure = [1.0, 2.0] + [1.0, 1.0] * (num_arms - 1)
    np.testing.assert_allclose(solution.q_values(after_failure)[:2], [1 / 3, 1 / 2])
    assert solution.action(after_failure) == 1


def test_beta_dp_table_agrees_with_memoised_recursion():
    table = bayes.beta_bandit_bayes_optimal(12)
    memo = bayes._beta_bandit_memo(12, 2, (1.0, 1.0))
    assert table.value == pytest.approx(memo.value, rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.multinomial(rng.integers(0, 12), [0.25] * 4) + 1
        np.testing.assert_allclose(table.q_values(counts), memo.q_values(counts), rtol=1e-6)


def test_three_arm_value_table_gives_the_memo_dp_q_values_on_device():
    # Ground truth: the host recursion's Q-values, at random reachable count states.
    T = 8
    solution = bayes.beta_bandit_bayes_optimal(T, num_arms=3)
    policy = bayes.make_beta_bayes_optimal(solution)
    step = Timestep(jnp.zeros(1), jnp.int32(0), jnp.float32(0.0), jnp.bool_(True))  # first: no count update
    act = jax.jit(lambda counts: policy.policy_fn(policy.params, counts, step, jax.random.key(0)))
    rng = np.random.default_rng(0)
    for _ in range(40):
        counts = rng.multinomial(rng.integers(0, T), [1 / 6] * 6) + 1  # pulls < T: a decision is left
        action, out, _ = act(jnp.asarray(counts, jnp.float32))
        expected = solution.q_values(counts)
        np.testing.assert_allclose(np.asarray(out["q_values"]), expected, rtol=1e-5, atol=1e-6)
        assert expected[int(action)] == pytest.approx(max(expected))


def test_value_table_refuses_what_does_not_fit():
    # The table's size depends on T and K only: a small solution relabelled T = 40 (3 arms: 106M states)
    # is refused before any value is read, without solving the 40-step problem (14 s).
    small = bayes.beta_bandit_bayes_optimal(3, num_arms=3)
    bayes.beta_value_table(small)  # fits
    with pytest.raises(ValueError, match="at most"):
        bayes.beta_value_table(dataclasses.replace(small, horizon=40))


def test_swapped_dp_reproduces_reference():
    # Printed to 2 decimals; the p = 0.1 value is 89.375 exactly (up to float error).
    assert bayes.swapped_bandit_bayes_optimal(0.1, 100).value == pytest.approx(89.375, abs=1e-9)
    assert abs(bayes.swapped_bandit_bayes_optimal(0.25, 100).value - 74.00) < 0.005
    assert bayes.swapped_bandit_oracle_value(0.1, 100) == pytest.approx(90.0)
    assert bayes.swapped_bandit_oracle_value(0.25, 100) == pytest.approx(75.0)


def test_hidden_goal_dp_by_hand():
    # 3x3 grid, start in the centre, corners 2 steps away, T = 4: the first corner (t = 2) is
    # the goal w.p. 1/4 and then pays again at t = 4; the adjacent corner (t = 4) w.p. 1/4.
    # Standing still first: only the first corner, once (t = 3).
    env, env_params = make_hidden_goal(size=3, max_steps_in_episode=4)
    solution = bayes.hidden_goal_bayes_optimal(env, env_params, 4)
    assert solution.value == pytest.approx(0.25 * 2 + 0.25 * 1)
    np.testing.assert_allclose(solution.q_table[0, 4, 15], [0.75, 0.75, 0.75, 0.75, 0.25])
    # After ruling out corner 0 (bit 0) by standing on it at t = 2 with two steps left, the
    # other three are 2 steps away: found w.p. 1/3 on the last step.
    np.testing.assert_allclose(solution.q_table[2, 0, 0b1110], [0, 1 / 3, 1 / 3, 0, 0], atol=1e-7)


# ------------------------------------------------------------------ policies in the envs


@pytest.mark.parametrize("num_arms, T", [(2, 20), (3, 10)])
def test_beta_policies_monte_carlo(num_arms, T):
    n = 5000
    env, params = make_beta_bandit(num_arms, max_steps_in_episode=T)
    oracle_env, oracle_params = make_beta_bandit(num_arms, max_steps_in_episode=T, reveal_task=True)
    solution = bayes.beta_bandit_bayes_optimal(T, num_arms=num_arms)
    names = ["bayes_optimal", "thompson", "greedy", "random", "oracle"]
    results = run_trials(
        [
            (env, params, bayes.make_beta_bayes_optimal(solution)),
            (env, params, bayes.make_beta_thompson(num_arms)),
            (env, params, bayes.make_beta_greedy(num_arms)),
            (env, params, bayes.make_random(num_arms)),
            (oracle_env, oracle_params, bayes.make_task_oracle()),
        ],
        jax.random.key(0),
        n,
    )
    returns = {name: mean_and_se(result[0]) for name, result in zip(names, results)}

    optimal, se = returns["bayes_optimal"]
    assert abs(optimal - solution.value) < 4 * se, returns
    oracle, oracle_se = returns["oracle"]
    assert abs(oracle - bayes.beta_bandit_oracle_value(T, num_arms)) < 4 * oracle_se, returns
    assert abs(returns["random"][0] - T / 2) < 4 * returns["random"][1], returns
    for name in ("thompson", "greedy"):
        assert returns["random"][0] + 0.05 * T < returns[name][0] < solution.value + 3 * se, returns

    # The policy's belief is the env's posterior one step earlier, and its actions are
    # the host DP's actions.
    _, action, out, posterior = results[0]
    belief = np.asarray(out["belief"])
    np.testing.assert_array_equal(belief[:, 1:], np.asarray(posterior)[:, :-1])
    for i, t in zip(range(40), np.random.default_rng(1).integers(0, T, 40)):
        assert action[i, t] == solution.action(belief[i, t])


def test_swapped_policies_monte_carlo():
    p, T, n = 0.25, 100, 4000
    env, params = make_swapped_bandit(reward_prob=p, max_steps_in_episode=T)
    oracle_env, oracle_params = make_swapped_bandit(
        reward_prob=p, max_steps_in_episode=T, reveal_task=True
    )
    solution = bayes.swapped_bandit_bayes_optimal(p, T)
    (reward, _, out, posterior), (oracle_reward, *_) = run_trials(
        [
            (env, params, bayes.make_swapped_bayes_optimal(solution)),
            (oracle_env, oracle_params, bayes.make_task_oracle()),
        ],
        jax.random.key(1),
        n,
    )
    value, se = mean_and_se(reward)
    assert abs(value - solution.value) < 4 * se, (value, se)
    oracle, oracle_se = mean_and_se(oracle_reward)
    assert abs(oracle - 75.0) < 4 * oracle_se, (oracle, oracle_se)
    np.testing.assert_allclose(
        np.asarray(out["belief"])[:, 1:], np.asarray(posterior)[:, :-1], rtol=1e-6
    )


def test_hidden_goal_policies():
    T, n = 50, 500
    oracle_env, oracle_params = make_hidden_goal(max_steps_in_episode=T, reveal_task=True)
    env, params = make_hidden_goal(max_steps_in_episode=T)
    solution = bayes.hidden_goal_bayes_optimal(env, params, T)
    results = run_trials(
        [
            (oracle_env, oracle_params, bayes.make_hidden_goal_oracle(oracle_env)),
            (env, params, bayes.make_hidden_goal_posterior_sampling(env)),
            (env, params, bayes.make_random(5)),
            (env, params, bayes.make_hidden_goal_bayes_optimal(solution)),
        ],
        jax.random.key(3),
        n,
    )
    (oracle, *_), (reward, _, out, posterior), (random, *_), optimal_run = results
    # Corners are 4 moves from the centre and the agent restarts there after each goal.
    np.testing.assert_array_equal(np.asarray(oracle).sum(-1), T // 4)
    np.testing.assert_allclose(np.asarray(out["belief"])[:, 1:], np.asarray(posterior)[:, :-1])
    # Posterior sampling finds the goal within 4 + 4 + 4 + 8 = 20 steps at worst, then
    # walks straight to it: at least (50 - 20) // 4 + 1 = 8 goals per trial.
    assert np.asarray(reward).sum(-1).min() >= 8
    sampling, random = mean_and_se(reward)[0], mean_and_se(random)[0]
    assert random + 5 < sampling < T // 4, (random, sampling)
    # The table policy tracks the env's belief and earns the DP's value (10.5 by DP).
    optimal, _, optimal_out, optimal_posterior = optimal_run
    np.testing.assert_allclose(
        np.asarray(optimal_out["belief"])[:, 1:], np.asarray(optimal_posterior)[:, :-1]
    )
    assert solution.value == pytest.approx(10.5)
    value, se = mean_and_se(optimal)
    assert abs(value - solution.value) < 4 * se, (value, se)
