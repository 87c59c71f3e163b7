"""The one rollout engine: every learner (A2C, LPG, RL²) collects experience here.

A policy is written for a single environment stream,

    policy_fn(params, carry, timestep, key) -> (action, policy_out, carry)

and the engine vmaps it (and `env.step`) over a batch of B environments that share
one level (`env_params`), scanning T steps. The carry is the policy's recurrent
state (RL²) or `()` for feed-forward agents; it is reset to `init_carry` whenever a
gymnax episode starts. The engine is itself vmappable over agents (policy params)
and over levels (env params), which is how lifetimes are batched.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import struct


class Timestep(NamedTuple):
    """What a policy sees at step t (one stream)."""

    obs: Any  # o_t
    prev_action: chex.Array  # a_tm1 (0 when `first`)
    prev_reward: chex.Array  # r_t received for a_tm1 (0 when `first`)
    first: chex.Array  # True on the first step of an episode / trial


class Trajectory(NamedTuple):
    """T steps of B streams, every leaf shaped [T, B, ...]."""

    obs: Any  # o_t the action was taken from
    action: chex.Array  # a_t
    reward: chex.Array  # r_t+1
    terminated: chex.Array  # the episode ended in a terminal state (no bootstrap)
    truncated: chex.Array  # the episode was cut by the time limit (bootstrap from next_obs)
    next_obs: Any  # o_t+1 *before* any auto-reset: what to bootstrap from
    first: chex.Array  # o_t is the first observation of an episode
    policy_out: Any  # whatever the policy returned at t (logits, values, ...)
    episode_return: chex.Array  # undiscounted return of the episode ending at t (valid where done)
    info: Any  # environment info at t (e.g. the exact posterior of task distributions)

    @property
    def done(self) -> chex.Array:
        return jnp.logical_or(self.terminated, self.truncated)


@struct.dataclass
class RolloutState:
    """Engine state for B streams (leading axis B on every leaf)."""

    env_state: Any
    obs: Any
    prev_action: chex.Array
    prev_reward: chex.Array
    first: chex.Array
    carry: Any
    episode_return: chex.Array  # running undiscounted return of the current episode


PolicyFn = Callable[[Any, Any, Timestep, chex.PRNGKey], tuple[chex.Array, Any, Any]]


def _tree_where(cond: chex.Array, x: Any, y: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), x, y)


def _broadcast(tree: Any, batch_size: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size,) + jnp.shape(x)), tree)


def reset(
    env, env_params, key: chex.PRNGKey, batch_size: int, init_carry: Any = ()
) -> RolloutState:
    """Resets B environments of one level; `init_carry` is one stream's initial carry."""
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key, batch_size), env_params
    )
    action_dtype = env.action_space(env_params).sample(jax.random.PRNGKey(0)).dtype
    return RolloutState(
        env_state=env_state,
        obs=obs,
        prev_action=jnp.zeros((batch_size,), action_dtype),
        prev_reward=jnp.zeros((batch_size,), jnp.float32),
        first=jnp.ones((batch_size,), bool),
        carry=_broadcast(init_carry, batch_size),
        episode_return=jnp.zeros((batch_size,), jnp.float32),
    )


def rollout(
    env,
    env_params,
    policy_fn: PolicyFn,
    policy_params: Any,
    state: RolloutState,
    key: chex.PRNGKey,
    num_steps: int,
    init_carry: Any = (),
) -> tuple[RolloutState, Trajectory]:
    """Runs `num_steps` steps of the B environments in `state` under `policy_fn`.

    Returns the new engine state and a `Trajectory` with leaves [T, B, ...]. The
    engine auto-resets finished episodes; `next_obs` keeps the pre-reset
    observation, and the carry of a stream is reset to `init_carry` when its next
    episode starts.
    """
    batch_size = state.first.shape[0]

    def stream_step(carry, timestep, env_state, keys):
        key_policy, key_env = keys
        carry = _tree_where(timestep.first, init_carry, carry)
        action, policy_out, carry = policy_fn(policy_params, carry, timestep, key_policy)
        obs, env_state, reward, terminated, truncated, info = env.step(
            key_env, env_state, action, env_params
        )
        final_obs = info.pop("final_observation")
        info.pop("terminated", None)
        info.pop("truncated", None)
        return action, policy_out, carry, obs, env_state, reward, terminated, truncated, final_obs, info

    def body(state: RolloutState, key):
        timestep = Timestep(state.obs, state.prev_action, state.prev_reward, state.first)
        (action, policy_out, carry, obs, env_state, reward, terminated, truncated,
         final_obs, info) = jax.vmap(stream_step)(
            # One split per step hands every stream its (policy, env) key pair.
            state.carry, timestep, state.env_state, jax.random.split(key, (batch_size, 2))
        )
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + reward
        transition = Trajectory(
            obs=state.obs,
            action=action,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_obs=final_obs,
            first=state.first,
            policy_out=policy_out,
            episode_return=episode_return,
            info=info,
        )
        state = RolloutState(
            env_state=env_state,
            obs=obs,
            prev_action=jnp.where(done, 0, action).astype(state.prev_action.dtype),
            prev_reward=jnp.where(done, 0.0, reward),
            first=done,
            carry=carry,
            episode_return=jnp.where(done, 0.0, episode_return),
        )
        return state, transition

    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


def completed_episode_stats(traj: Trajectory) -> dict[str, chex.Array]:
    """Mean return and count of the episodes that ended inside `traj`."""
    done = traj.done.astype(jnp.float32)
    count = done.sum()
    mean_return = (traj.episode_return * done).sum() / jnp.maximum(count, 1.0)
    return {"episode_return": mean_return, "episodes": count}
