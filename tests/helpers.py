"""Lifetime returns the learning tests share (not a test module: nothing here is collected)."""

import jax
import jax.numpy as jnp

import envs
from envs.probe import ContextualBandit
from lpg import evaluate
from lpg.inner import Hypers


def final_returns(name, make_learner, config, updates, seeds=2):
    """Final returns [seeds] of `make_learner(env, params, config)` (A2C, PPO) on environment `name`
    after `updates` updates of config.num_envs x config.rollout_len steps; also (env, params)."""
    env, params = envs.make(name)
    lifetime = evaluate.LifetimeConfig(num_updates=updates, num_envs=config.num_envs,
                                       rollout_len=config.rollout_len, num_seeds=seeds)
    metrics = evaluate.run_lifetimes(env, params, make_learner(env, params, config), lifetime, jax.random.PRNGKey(0))
    return evaluate.summarise(metrics, lifetime)["final"], env, params


def probe_bandit_return(rule_params, rule_config, seed):
    """Mean final return of 4 LPG agents trained by a rule for 40 updates on a contextual bandit
    (4 states, 3 actions; level and agents from `seed`)."""
    env = ContextualBandit(num_states=4, num_actions=3)
    params = env.sample_params(jax.random.PRNGKey(100 + seed))
    hypers = Hypers(*(jnp.float32(x) for x in (0.9, 1.0, 0.5, 0.01, 40)))
    learner = evaluate.lpg_learner(env, params, rule_params, rule_config, hypers)
    lifetime = evaluate.LifetimeConfig(num_updates=40, num_envs=8, rollout_len=4, num_seeds=4)
    metrics = evaluate.run_lifetimes(env, params, learner, lifetime, jax.random.PRNGKey(seed))
    return float(evaluate.summarise(metrics, lifetime)["final"].mean())
