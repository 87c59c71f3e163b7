"""Whole-lifetime evaluation of update rules (learned LPG rules and A2C) on levels.

A lifetime = a fresh agent trained for `num_updates` updates on one level. Lifetimes
over seeds are a vmap of `lpg.learner.make_train`'s chunk runner, so evaluation uses
the same engine and inner update as training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.learner import Learner, learning_curve, make_train
from lpg.update_rule import RuleConfig


@dataclasses.dataclass(frozen=True)
class LifetimeConfig:
    num_updates: int = 500
    num_envs: int = 64
    rollout_len: int = 20
    num_seeds: int = 5
    curve_points: int = 20  # learning-curve resolution


def run_lifetimes(env, env_params, learner: Learner, config: LifetimeConfig, key) -> dict[str, np.ndarray]:
    """Trains `config.num_seeds` fresh agents (vmapped); per-update metrics shaped [seeds, updates]."""
    train = make_train(env, env_params, learner, config.num_envs, config.rollout_len)

    @jax.jit
    def lifetimes(keys):
        return jax.vmap(lambda k: train.run(train.init(k), config.num_updates)[1])(keys)

    metrics = jax.device_get(lifetimes(jax.random.split(key, config.num_seeds)))
    return {k: np.asarray(v) for k, v in metrics.items()}


def summarise(metrics: dict[str, np.ndarray], config: LifetimeConfig) -> dict[str, Any]:
    """Learning curves [seeds, points] and the final return per seed (last 10% of the lifetime)."""
    window = max(config.num_updates // config.curve_points, 1)
    curves = learning_curve(metrics["episode_return"], metrics["episodes"], window)
    tail = max(config.num_updates // 10, 1)
    final = learning_curve(metrics["episode_return"][:, -tail:], metrics["episodes"][:, -tail:], tail)[:, 0]
    return {"curves": curves, "final": final, "updates_per_point": window}


def lpg_learner(env, env_params, rule_params, rule_config: RuleConfig, hypers: Hypers, agent: str = "auto",
                optimizer: str = "sgd") -> Learner:
    lpg_agent = make_lpg_agent(env, env_params, rule_config, agent=agent, optimizer=optimizer)
    return make_lpg_learner(lpg_agent, rule_params, hypers)


def confidence_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval of the mean over seeds."""
    values = np.asarray(values, dtype=np.float64)
    half = z * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(half)
