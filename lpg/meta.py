"""LPG meta-training: many lifetimes in parallel, meta-gradients through K inner updates.

A *lifetime* is one agent learning on one level with its own hyperparameters. Each
meta-step advances every lifetime by a window of K inner updates (each from a fresh
T x B rollout, applied by the rule), then scores the updated agent with an A2C-style
policy-gradient loss on one more rollout, using a per-lifetime critic that is itself
trained on that rollout. The meta-objective (minimised) is

    L(η) = -E[log π_θK(a|s) Â] - β0 H(π_θK) - β1 H(y_θK) + β2 E[π̂²] + β3 E[‖ŷ‖²]

with θK = θK(η) differentiated through the K updates (truncated: θ0 is a constant).
Lifetimes are a vmap per training source (sources with different environment classes
are separate vmaps sharing one rule); the lifetime axis is sharded over devices with
`jax.sharding`, so the mean meta-gradient is reduced across devices by the compiler.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from envs.sources import level_sampler
from lpg import rollout as engine
from lpg.a2c import lambda_returns, make_optimizer
from lpg.agents import make_agent, AGENT_KINDS
from lpg.inner import AgentState, Hypers, LPGAgent, make_lpg_agent
from lpg.update_rule import RuleConfig, init_rule
from lpg.config import validate


class Source(NamedTuple):
    """A family of training levels: one environment and a sampler of its params."""

    name: str
    env: Any
    sample_params: Callable[[chex.PRNGKey], Any]


def sources_for(names: Sequence[str]) -> list[Source]:
    """Training sources by name (see `envs.sources.source_names()`)."""
    return [Source(name, *level_sampler(name)) for name in names]


@dataclasses.dataclass(frozen=True)
class HyperChoices:
    """Per-lifetime hyperparameters are drawn uniformly from these sets (paper, Tables 2-3)."""

    discounts: tuple[float, ...] = (0.997, 0.995, 0.99)
    learning_rates: tuple[float, ...] = (20.0, 40.0, 80.0)
    alpha_ys: tuple[float, ...] = (0.1, 0.5, 1.0)
    entropy_costs: tuple[float, ...] = (0.01, 0.02)

    def sample(self, key: chex.PRNGKey) -> Hypers:
        keys = jax.random.split(key, 4)
        pick = lambda k, xs: jax.random.choice(k, jnp.asarray(xs, jnp.float32))
        return Hypers(
            discount=pick(keys[0], self.discounts),
            learning_rate=pick(keys[1], self.learning_rates),
            alpha_y=pick(keys[2], self.alpha_ys),
            entropy_cost=pick(keys[3], self.entropy_costs),
        )


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    envs: tuple[str, ...] = ("tabular_dense",)
    lifetimes_per_env: int = 8
    num_envs: int = 64  # environments per lifetime
    rollout_len: int = 20  # T
    inner_updates: int = 5  # K, updates backpropagated through per meta-step
    lifetime_updates: int = 250  # agent updates in one lifetime
    agent: str = "auto"
    agent_optimizer: str = "sgd"
    agent_hidden: int = 64
    rule: RuleConfig = RuleConfig()
    hypers: HyperChoices = HyperChoices()
    meta_optimizer: str = "adam"
    meta_lr: float = 1e-4
    meta_max_grad_norm: float = 0.5
    beta1: float = 1e-3  # H(y)
    beta2: float = 1e-3  # π̂²
    beta3: float = 1e-3  # ‖ŷ‖²
    critic_lr: float = 1e-2  # Adam: a step size that suits tables and small nets alike
    critic_optimizer: str = "adam"
    critic_lambda: float = 0.95
    entropy_reset: float = 1e-3  # a lifetime whose mean policy entropy falls below this is reset
    num_meta_steps: int = 1000
    steps_per_chunk: int = 10  # meta-steps per jitted chunk (progress/logging granularity)
    checkpoint_every: int = 10  # chunks
    seed: int = 0

    def __post_init__(self):
        checks = [
            (len(self.envs) >= 1, "envs must name at least one training environment"),
            (self.lifetimes_per_env >= 1, "lifetimes_per_env must be >= 1"),
            (self.num_envs >= 1 and self.rollout_len >= 1, "num_envs and rollout_len must be >= 1"),
            (self.inner_updates >= 1, "inner_updates (K) must be >= 1"),
            (self.lifetime_updates >= self.inner_updates, "lifetime_updates must be >= inner_updates"),
            (self.agent in AGENT_KINDS, f"agent must be one of {AGENT_KINDS}"),
            (self.meta_optimizer in ("adam", "sgd"), "meta_optimizer must be 'adam' or 'sgd'"),
            (self.agent_optimizer in ("adam", "sgd"), "agent_optimizer must be 'adam' or 'sgd'"),
            (self.critic_optimizer in ("adam", "sgd"), "critic_optimizer must be 'adam' or 'sgd'"),
            (self.meta_lr > 0 and self.critic_lr > 0, "learning rates must be > 0"),
            (self.meta_max_grad_norm > 0, "meta_max_grad_norm must be > 0"),
            (min(self.beta1, self.beta2, self.beta3) >= 0, "beta1..beta3 must be >= 0"),
            (0.0 <= self.critic_lambda <= 1.0, "critic_lambda must be in [0, 1]"),
            (self.num_meta_steps >= 1 and self.steps_per_chunk >= 1, "num_meta_steps, steps_per_chunk >= 1"),
            (self.num_meta_steps % self.steps_per_chunk == 0, "num_meta_steps must be a multiple of steps_per_chunk"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ]
        validate(self, checks)

    @property
    def env_steps_per_meta_step(self) -> int:
        return len(self.envs) * self.lifetimes_per_env * self.num_envs * self.rollout_len * (self.inner_updates + 1)


@struct.dataclass
class Lifetime:
    """One lifetime's state (a leading lifetime axis when batched)."""

    agent: AgentState
    critic: AgentState
    rollout: engine.RolloutState
    env_params: Any
    hypers: Hypers
    updates: chex.Array  # agent updates done so far in this lifetime
    key: chex.PRNGKey


@struct.dataclass
class MetaState:
    rule_params: Any
    opt_state: Any
    lifetimes: tuple  # one batched Lifetime per source
    step: chex.Array
    key: chex.PRNGKey


class Group(NamedTuple):
    """Everything static about one source's lifetimes."""

    source: Source
    agent: LPGAgent
    critic: Any  # flax module: obs -> (_, v [1])
    critic_optimizer: Any


def _entropy(logits):
    return distrax.Categorical(logits=logits).entropy()


def make_group(source: Source, config: MetaConfig) -> Group:
    params0 = source.sample_params(jax.random.PRNGKey(0))
    agent = make_lpg_agent(source.env, params0, config.rule, config.agent, config.agent_optimizer, config.agent_hidden)
    critic = make_agent(source.env, params0, aux_size=1, kind=config.agent, hidden=config.agent_hidden)
    return Group(source, agent, critic, make_optimizer(config.critic_optimizer, config.critic_lr))


def init_lifetime(group: Group, config: MetaConfig, key: chex.PRNGKey) -> Lifetime:
    k_level, k_hyp, k_agent, k_critic, k_env, key = jax.random.split(key, 6)
    env_params = group.source.sample_params(k_level)
    hypers = config.hypers.sample(k_hyp)
    critic_params = group.critic.init(k_critic, group.agent.obs0)
    return Lifetime(
        agent=group.agent.init(k_agent, hypers.learning_rate),
        critic=AgentState(critic_params, group.critic_optimizer.init(critic_params)),
        rollout=engine.reset(group.source.env, env_params, k_env, config.num_envs),
        env_params=env_params,
        hypers=hypers,
        updates=jnp.zeros((), jnp.int32),
        key=key,
    )


def lifetime_window(group: Group, config: MetaConfig, rule_params, lifetime: Lifetime):
    """K inner updates then the meta-loss of one lifetime. Returns (loss, (lifetime', metrics))."""
    env, agent = group.source.env, group.agent
    h = lifetime.hypers

    def inner(carry, key):
        agent_state, rollout_state = carry
        rollout_state, traj = engine.rollout(
            env, lifetime.env_params, agent.policy_fn, jax.lax.stop_gradient(agent_state.params),
            rollout_state, key, config.rollout_len,
        )
        agent_state, (pi_hat, y_hat) = agent.update(rule_params, agent_state, traj, h)
        reg = config.beta2 * jnp.mean(pi_hat**2) + config.beta3 * jnp.mean(jnp.sum(y_hat**2, -1))
        return (agent_state, rollout_state), (reg, jnp.mean(jnp.abs(pi_hat)))

    key, k_inner, k_meta = jax.random.split(lifetime.key, 3)
    agent0 = jax.lax.stop_gradient(lifetime.agent)
    (agent_state, rollout_state), (regs, pi_hat_abs) = jax.lax.scan(
        inner, (agent0, lifetime.rollout), jax.random.split(k_inner, config.inner_updates)
    )
    rollout_state, traj = engine.rollout(
        env, lifetime.env_params, agent.policy_fn, jax.lax.stop_gradient(agent_state.params),
        rollout_state, k_meta, config.rollout_len,
    )

    critic_apply = lambda p, o: group.critic.apply(p, o)[1][0]

    def critic_loss(critic_params, traj_b):
        v_t = jax.vmap(lambda o: critic_apply(critic_params, o))(traj_b.obs)
        v_tp1 = jax.vmap(lambda o: critic_apply(critic_params, o))(traj_b.next_obs)
        g_t = lambda_returns(traj_b, v_tp1, h.discount, config.critic_lambda)
        return 0.5 * jnp.mean((g_t - v_t) ** 2), g_t - v_t

    def stream_loss(traj_b):
        _, adv_t = critic_loss(lifetime.critic.params, traj_b)
        logits, y = jax.vmap(lambda o: agent.network.apply(agent_state.params, o))(traj_b.obs)
        log_pi = distrax.Categorical(logits=logits).log_prob(traj_b.action)
        pg = -jnp.mean(log_pi * jax.lax.stop_gradient(adv_t))
        return pg, jnp.mean(_entropy(logits)), jnp.mean(_entropy(y))

    pg, ent_pi, ent_y = jax.tree.map(jnp.mean, jax.vmap(stream_loss, in_axes=1)(traj))
    loss = pg - h.entropy_cost * ent_pi - config.beta1 * ent_y + jnp.mean(regs)

    # The critic exists to reduce the meta-gradient's variance; it is trained, not frozen.
    def batch_critic_loss(p):
        return jnp.mean(jax.vmap(lambda tb: critic_loss(p, tb)[0], in_axes=1)(traj))

    c_loss, c_grads = jax.value_and_grad(batch_critic_loss)(jax.lax.stop_gradient(lifetime.critic.params))
    c_updates, c_opt = group.critic_optimizer.update(c_grads, lifetime.critic.opt_state, lifetime.critic.params)
    critic = AgentState(optax.apply_updates(lifetime.critic.params, c_updates), c_opt)

    stats = engine.completed_episode_stats(traj)
    new_lifetime = lifetime.replace(
        agent=jax.lax.stop_gradient(agent_state), critic=critic, rollout=rollout_state,
        updates=lifetime.updates + config.inner_updates, key=key,
    )
    metrics = {
        "meta_loss": loss, "pg_loss": pg, "entropy": ent_pi, "y_entropy": ent_y,
        "pi_hat_abs": jnp.mean(pi_hat_abs), "critic_loss": c_loss,
        "episode_return": stats["episode_return"], "episodes": stats["episodes"],
    }
    return loss, (new_lifetime, metrics)


def renew_lifetimes(group: Group, config: MetaConfig, lifetimes: Lifetime, metrics: dict, key):
    """Replaces finished or collapsed lifetimes with fresh ones; returns (lifetimes, counts)."""
    n = lifetimes.updates.shape[0]
    finished = lifetimes.updates >= config.lifetime_updates
    collapsed = metrics["entropy"] < config.entropy_reset
    renew = jnp.logical_or(finished, collapsed)
    fresh = jax.vmap(lambda k: init_lifetime(group, config, k))(jax.random.split(key, n))
    lifetimes = jax.tree.map(
        lambda f, o: jnp.where(renew.reshape((-1,) + (1,) * (o.ndim - 1)), f, o), fresh, lifetimes
    )
    ended = finished.astype(jnp.float32) * (metrics["episodes"] > 0)
    final_return = (metrics["episode_return"] * ended).sum() / jnp.maximum(ended.sum(), 1.0)
    return lifetimes, {
        "finished": finished.sum(), "collapsed": collapsed.sum(),
        "final_return": final_return, "final_returns_count": ended.sum(),
    }


class MetaTrainer(NamedTuple):
    groups: tuple[Group, ...]
    init: Callable[[chex.PRNGKey], MetaState]
    step: Callable[[MetaState], tuple[MetaState, dict]]  # one meta-step
    run: Callable[[MetaState], tuple[MetaState, dict]]  # `steps_per_chunk` meta-steps


def make_meta_optimizer(config: MetaConfig):
    opt = optax.chain(
        optax.clip_by_global_norm(config.meta_max_grad_norm),
        {"adam": optax.adam, "sgd": optax.sgd}[config.meta_optimizer](config.meta_lr),
    )
    # A non-finite meta-gradient skips the update (counted in `notfinite_count`/`total_notfinite`).
    return optax.apply_if_finite(opt, max_consecutive_errors=1_000_000)


def make_meta_trainer(config: MetaConfig, sources: Sequence[Source]) -> MetaTrainer:
    groups = tuple(make_group(s, config) for s in sources)
    meta_opt = make_meta_optimizer(config)

    def init(key) -> MetaState:
        k_rule, key = jax.random.split(key)
        rule_params = init_rule(config.rule, k_rule)
        lifetimes = []
        for group in groups:
            key, k_group, k_offset = jax.random.split(key, 3)
            batch = jax.vmap(lambda k: init_lifetime(group, config, k))(
                jax.random.split(k_group, config.lifetimes_per_env)
            )
            # Stagger lifetimes so they do not all end (and restart) at the same meta-step.
            offsets = jax.random.randint(k_offset, (config.lifetimes_per_env,), 0, config.lifetime_updates)
            batch = batch.replace(updates=offsets // config.inner_updates * config.inner_updates)
            lifetimes.append(batch)
        return MetaState(rule_params, meta_opt.init(rule_params), tuple(lifetimes), jnp.zeros((), jnp.int32), key)

    def meta_loss(rule_params, lifetimes):
        total, outs = 0.0, []
        for group, batch in zip(groups, lifetimes):
            losses, (batch, metrics) = jax.vmap(
                lambda lt: lifetime_window(group, config, rule_params, lt)
            )(batch)
            total = total + jnp.mean(losses) / len(groups)
            outs.append((batch, metrics))
        return total, outs

    def step(state: MetaState) -> tuple[MetaState, dict]:
        (loss, outs), grads = jax.value_and_grad(meta_loss, has_aux=True)(state.rule_params, state.lifetimes)
        updates, opt_state = meta_opt.update(grads, state.opt_state, state.rule_params)
        rule_params = optax.apply_updates(state.rule_params, updates)
        key = state.key
        lifetimes, metrics = [], {"meta_loss": loss, "grad_norm": optax.global_norm(grads),
                                  "skipped_updates": opt_state.total_notfinite}
        for group, (batch, m) in zip(groups, outs):
            key, k_renew = jax.random.split(key)
            batch, renew_stats = renew_lifetimes(group, config, batch, m, k_renew)
            lifetimes.append(batch)
            for name, value in {**jax.tree.map(jnp.mean, m), **renew_stats}.items():
                metrics[f"{group.source.name}/{name}"] = value
        return MetaState(rule_params, opt_state, tuple(lifetimes), state.step + 1, key), metrics

    def run(state: MetaState):
        return jax.lax.scan(lambda s, _: step(s), state, None, length=config.steps_per_chunk)

    return MetaTrainer(groups, init, step, run)
