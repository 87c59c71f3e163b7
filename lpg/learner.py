"""The learner interface and the generic training loop that drives any learner.

A learner is a bundle of pure functions (`Learner`): `init(key) -> state`,
`policy_fn` for the rollout engine, `policy_params(state)` and
`update(state, traj) -> (state, metrics)`. `make_train` turns a learner and an
environment into `init(key)` and a jitted `run(state, num_updates)` chunk that
scans rollout + update; hosts call chunks in a loop and log between them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lpg import rollout as engine


class Learner(NamedTuple):
    init: Callable[[chex.PRNGKey], Any]
    policy_fn: engine.PolicyFn
    policy_params: Callable[[Any], Any]
    update: Callable[[Any, engine.Trajectory], tuple[Any, dict]]
    init_carry: Any = ()


@struct.dataclass
class TrainState:
    learner: Any
    rollout: engine.RolloutState
    key: chex.PRNGKey
    step: chex.Array  # agent updates done so far


class Train(NamedTuple):
    init: Callable[[chex.PRNGKey], TrainState]
    run: Callable[[TrainState, int], tuple[TrainState, dict]]  # metrics leaves [num_updates]
    steps_per_update: int


def make_train(env, env_params, learner: Learner, num_envs: int, rollout_len: int) -> Train:
    """Builds `init` and a chunk runner for `learner` on `num_envs` copies of one level.

    `run(state, n)` performs n updates (each: one T x B rollout, one learner update)
    under `lax.scan` and returns per-update metrics. It is pure, so it can be
    vmapped over seeds or levels; `jax.jit(run, static_argnums=1)` it at the top.
    """

    def init(key: chex.PRNGKey) -> TrainState:
        key_learner, key_env, key = jax.random.split(key, 3)
        return TrainState(
            learner=learner.init(key_learner),
            rollout=engine.reset(env, env_params, key_env, num_envs, learner.init_carry),
            key=key,
            step=jnp.zeros((), jnp.int32),
        )

    def update_step(state: TrainState, _):
        key, key_rollout = jax.random.split(state.key)
        rollout_state, traj = engine.rollout(
            env, env_params, learner.policy_fn, learner.policy_params(state.learner),
            state.rollout, key_rollout, rollout_len, learner.init_carry,
        )
        learner_state, metrics = learner.update(state.learner, traj)
        metrics = {**metrics, **engine.completed_episode_stats(traj)}
        return TrainState(learner_state, rollout_state, key, state.step + 1), metrics

    def run(state: TrainState, num_updates: int):
        return jax.lax.scan(update_step, state, None, length=num_updates)

    return Train(init, run, num_envs * rollout_len)


def learning_curve(returns, episodes, window: int) -> np.ndarray:
    """Episode-count-weighted mean return over consecutive windows of updates.

    returns, episodes: [..., U] per-update means and counts -> [..., U // window].
    """
    returns, episodes = np.asarray(returns), np.asarray(episodes)
    u = returns.shape[-1] // window * window
    r = returns[..., :u].reshape(returns.shape[:-1] + (-1, window))
    n = episodes[..., :u].reshape(r.shape)
    return (r * n).sum(-1) / np.maximum(n.sum(-1), 1.0)
