"""A2C, the hand-designed baseline every learned rule is measured against.

The loss is written for one stream `[T, ...]` and averaged over the batch with vmap.
Returns are λ-returns from rlax with the engine's terminated/truncated split:
a terminal step does not bootstrap (discount 0); a truncated step bootstraps from
the pre-reset observation and does not continue into the next episode (λ_t = 0):

    G_t = r_t+1 + γ_t ((1 - λ_t) v(s'_t) + λ_t G_t+1),  γ_t = γ (1 - term_t),  λ_t = λ (1 - trunc_t).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import distrax
import jax
import jax.numpy as jnp
import optax
import rlax
from flax import struct

from lpg import agents
from lpg.learner import Learner
from lpg.rollout import Timestep, Trajectory
from lpg.config import validate


@dataclasses.dataclass(frozen=True)
class A2CConfig:
    num_envs: int = 64
    rollout_len: int = 20
    discount: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 20.0  # SGD on tables (measured best on tabular_dense; see experiments/presets.py)
    optimizer: str = "sgd"  # "sgd" (tables, as in the paper) or "adam" (networks)
    entropy_cost: float = 0.01
    value_cost: float = 0.5
    max_grad_norm: float | None = None
    agent: str = "auto"  # see lpg.agents.AGENT_KINDS
    hidden: int = 64

    def __post_init__(self):
        validate(self, [
            *actor_critic_checks(self),
            (self.entropy_cost >= 0 and self.value_cost >= 0, "entropy_cost and value_cost must be >= 0"),
            (self.agent in agents.AGENT_KINDS, f"agent must be one of {agents.AGENT_KINDS}"),
        ])


def actor_critic_checks(config) -> list[tuple[bool, str]]:
    """Checks shared by the actor-critic configs (A2C here, RL² in lpg.rl2)."""
    return [
        (config.num_envs >= 1, "num_envs must be >= 1"),
        (config.rollout_len >= 1, "rollout_len must be >= 1"),
        (0.0 <= config.discount <= 1.0, "discount must be in [0, 1]"),
        (0.0 <= config.gae_lambda <= 1.0, "gae_lambda must be in [0, 1]"),
        (config.learning_rate > 0, "learning_rate must be > 0"),
        (config.optimizer in OPTIMIZERS, f"optimizer must be one of {tuple(OPTIMIZERS)}"),
        (config.max_grad_norm is None or config.max_grad_norm > 0, "max_grad_norm must be > 0 or None"),
    ]


OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}


def make_optimizer(name: str, learning_rate: float, max_grad_norm: float | None = None):
    opt = OPTIMIZERS[name](learning_rate)
    return opt if max_grad_norm is None else optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)


def lambda_returns(traj: Trajectory, v_tp1: chex.Array, discount: float, lambda_: float) -> chex.Array:
    """λ-returns G_t for one stream [T] (see module docstring); targets carry no gradient."""
    discount_t = discount * (1.0 - traj.terminated.astype(jnp.float32))
    lambda_t = lambda_ * (1.0 - traj.truncated.astype(jnp.float32))
    return rlax.lambda_returns(traj.reward, discount_t, v_tp1, lambda_t, stop_target_gradients=True)


def normalise_advantages(adv: chex.Array) -> chex.Array:
    """Advantages centred and scaled to unit standard deviation over every element given."""
    return (adv - adv.mean()) / (adv.std() + 1e-8)


def advantages(apply_fn, params, traj: Trajectory, config: A2CConfig):
    """One stream's (logits [T, A], v_t [T], A_t = G_t - v_t [T]) under `params`; traj leaves [T, ...]."""
    logits, v_t = jax.vmap(lambda o: apply_fn(params, o))(traj.obs)
    _, v_tp1 = jax.vmap(lambda o: apply_fn(params, o))(traj.next_obs)
    v_t, v_tp1 = v_t[:, 0], v_tp1[:, 0]
    return logits, v_t, lambda_returns(traj, v_tp1, config.discount, config.gae_lambda) - v_t


def a2c_loss(apply_fn, params, traj: Trajectory, config: A2CConfig):
    """A2C loss of one stream: traj leaves are [T, ...]."""
    logits, v_t, adv_t = advantages(apply_fn, params, traj, config)
    weights = jnp.ones_like(v_t)
    pg_loss = rlax.policy_gradient_loss(logits, traj.action, adv_t, weights)
    entropy = distrax.Categorical(logits=logits).entropy().mean()
    value_loss = 0.5 * jnp.mean(adv_t**2)
    loss = pg_loss + config.value_cost * value_loss - config.entropy_cost * entropy
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss, "entropy": entropy}


def actor_critic_policy(network):
    """The engine's policy for an actor-critic network (A2C, PPO): samples a ~ softmax(logits) and
    records the logits and v(o) it acted with in `policy_out`."""

    def policy_fn(params, carry, timestep: Timestep, key):
        logits, value = network.apply(params, timestep.obs)
        action = distrax.Categorical(logits=logits).sample(seed=key)
        return action, {"logits": logits, "value": value[0]}, carry

    return policy_fn


@struct.dataclass
class A2CState:
    params: Any
    opt_state: Any


def actor_critic_network(env, env_params, config):
    """The network of A2C and PPO (`config`: A2CConfig or PPOConfig): logits and v(s), aux size 1."""
    return agents.make_agent(env, env_params, aux_size=1, kind=config.agent, hidden=config.hidden)


def make_a2c(env, env_params, config: A2CConfig = A2CConfig(), learning_rate=None) -> Learner:
    """An A2C learner for `env` (tabular, MLP or conv agent chosen from its observations).

    `learning_rate` replaces `config.learning_rate`; it may be a traced scalar, so one compiled
    program serves several rates (evaluation selects among them)."""
    network = actor_critic_network(env, env_params, config)
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    optimizer = make_optimizer(config.optimizer, learning_rate, config.max_grad_norm)
    obs0, _ = env.reset(jax.random.PRNGKey(0), env_params)

    def init(key):
        params = network.init(key, obs0)
        return A2CState(params, optimizer.init(params))

    def batch_loss(params, traj):
        losses, metrics = jax.vmap(a2c_loss, in_axes=(None, None, 1, None))(
            network.apply, params, traj, config
        )
        return losses.mean(), jax.tree.map(jnp.mean, metrics)

    def update(state: A2CState, traj: Trajectory):
        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params, traj)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return A2CState(optax.apply_updates(state.params, updates), opt_state), metrics

    return Learner(init=init, policy_fn=actor_critic_policy(network), policy_params=lambda s: s.params,
                   update=update)
