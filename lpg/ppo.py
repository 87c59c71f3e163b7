"""PPO (Schulman et al. 2017), the second hand-designed baseline, built from A2C's pieces.

Same network, policy, λ-returns (terminated/truncated split, `lpg.a2c.lambda_returns`) and
optimisers as A2C; what differs is the update. Each update takes the rollout the engine
collected, computes advantages A_t = G_t - v_old(s_t) once with the acting parameters, then
runs `epochs` passes over the B streams in `minibatches` groups of whole streams, minimising
per stream [T]

    L = -E[min(ρ_t A_t, clip(ρ_t, 1 - ε, 1 + ε) A_t)] + c_v ½ E[(G_t - v(s_t))²] - c_H E[H(π(·|s_t))],

ρ_t = π(a_t|s_t) / π_old(a_t|s_t) (rlax.clipped_surrogate_pg_loss), with A_t normalised per
minibatch if `normalise_advantages`. With one epoch, one minibatch and no normalisation the
update is A2C's exactly (ρ = 1, the clip is inactive): tests/test_ppo.py checks that.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import optax
import rlax
from flax import struct

from lpg import agents
from lpg.a2c import (actor_critic_checks, actor_critic_network, actor_critic_policy, lambda_returns, make_optimizer,
                     normalise_advantages)
from lpg.config import validate
from lpg.learner import Learner
from lpg.rollout import Trajectory


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    num_envs: int = 64
    rollout_len: int = 20
    discount: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 2.5e-4
    optimizer: str = "adam"  # "adam" (networks) or "sgd" (tables)
    entropy_cost: float = 0.01
    value_cost: float = 0.5
    max_grad_norm: float | None = 0.5
    clip_epsilon: float = 0.2
    epochs: int = 4  # passes over each rollout
    minibatches: int = 4  # groups of whole streams per pass (num_envs must divide evenly)
    normalise_advantages: bool = True
    agent: str = "auto"  # see lpg.agents.AGENT_KINDS
    hidden: int = 64

    def __post_init__(self):
        validate(self, [
            *actor_critic_checks(self),
            (self.entropy_cost >= 0 and self.value_cost >= 0, "entropy_cost and value_cost must be >= 0"),
            (self.clip_epsilon > 0, "clip_epsilon must be > 0"),
            (self.epochs >= 1 and self.minibatches >= 1, "epochs and minibatches must be >= 1"),
            (self.num_envs % self.minibatches == 0,
             f"num_envs ({self.num_envs}) must be a multiple of minibatches ({self.minibatches})"),
            (self.agent in agents.AGENT_KINDS, f"agent must be one of {agents.AGENT_KINDS}"),
        ])


def ppo_loss(apply_fn, params, traj: Trajectory, adv_t, g_t, config: PPOConfig):
    """PPO loss of one stream: traj leaves [T, ...], advantages and returns [T] (no gradient)."""
    logits, v_t = jax.vmap(lambda o: apply_fn(params, o))(traj.obs)
    v_t = v_t[:, 0]
    log_pi = distrax.Categorical(logits=logits).log_prob(traj.action)
    old_log_pi = distrax.Categorical(logits=traj.policy_out["logits"]).log_prob(traj.action)
    ratio = jnp.exp(log_pi - old_log_pi)
    pg_loss = rlax.clipped_surrogate_pg_loss(ratio, adv_t, config.clip_epsilon)
    value_loss = 0.5 * jnp.mean((g_t - v_t) ** 2)
    entropy = distrax.Categorical(logits=logits).entropy().mean()
    loss = pg_loss + config.value_cost * value_loss - config.entropy_cost * entropy
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss, "entropy": entropy,
                  "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > config.clip_epsilon),
                  "approx_kl": jnp.mean(old_log_pi - log_pi)}


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    key: jax.Array  # shuffles the streams into minibatches


def make_ppo(env, env_params, config: PPOConfig = PPOConfig(), learning_rate=None) -> Learner:
    """A PPO learner for `env` (tabular, MLP or conv agent chosen from its observations), with the
    engine's policy of A2C. `learning_rate` replaces `config.learning_rate` (may be traced)."""
    network = actor_critic_network(env, env_params, config)
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    optimizer = make_optimizer(config.optimizer, learning_rate, config.max_grad_norm)
    obs0, _ = env.reset(jax.random.PRNGKey(0), env_params)

    def init(key):
        k_params, key = jax.random.split(key)
        params = network.init(k_params, obs0)
        return PPOState(params, optimizer.init(params), key)

    def minibatch_loss(params, traj, adv, g):
        if config.normalise_advantages:
            adv = normalise_advantages(adv)
        losses, metrics = jax.vmap(ppo_loss, in_axes=(None, None, 1, 1, 1, None))(
            network.apply, params, traj, adv, g, config)
        return losses.mean(), jax.tree.map(jnp.mean, metrics)

    def update(state: PPOState, traj: Trajectory):
        # The streams are the trajectory's own (config.num_envs is what the caller collects with).
        num_streams = traj.reward.shape[1]
        if num_streams % config.minibatches:
            raise ValueError(f"PPO: {num_streams} streams cannot be split into {config.minibatches} minibatches "
                             "of whole streams; collect a multiple of PPOConfig.minibatches")
        size = num_streams // config.minibatches
        # Advantages and returns once, from the values the streams acted with.
        _, v_tp1 = jax.vmap(jax.vmap(lambda o: network.apply(state.params, o)))(traj.next_obs)
        g = jax.vmap(lambda t, v: lambda_returns(t, v, config.discount, config.gae_lambda), in_axes=(1, 1), out_axes=1)(
            traj, v_tp1[..., 0])
        adv = g - traj.policy_out["value"]

        def minibatch_step(carry, streams):
            params, opt_state = carry
            take = lambda x: jnp.take(x, streams, axis=1)  # noqa: E731
            grads, metrics = jax.grad(minibatch_loss, has_aux=True)(
                params, jax.tree.map(take, traj), take(adv), take(g))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        key, k_epochs = jax.random.split(state.key)
        orders = jax.vmap(lambda k: jax.random.permutation(k, num_streams))(
            jax.random.split(k_epochs, config.epochs))
        (params, opt_state), metrics = jax.lax.scan(
            minibatch_step, (state.params, state.opt_state), orders.reshape(config.epochs * config.minibatches, size))
        return PPOState(params, opt_state, key), jax.tree.map(jnp.mean, metrics)

    return Learner(init=init, policy_fn=actor_critic_policy(network), policy_params=lambda s: s.params,
                   update=update)
