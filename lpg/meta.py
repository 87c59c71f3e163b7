"""LPG meta-training: many lifetimes in parallel, meta-gradients through K inner updates.

A *lifetime* is one agent learning on one level with its own hyperparameters. Each
meta-step advances every lifetime by a window of K inner updates (each from a fresh
T x B rollout, applied by the rule), then scores the updated agent with an A2C-style
policy-gradient loss on one more rollout, using a per-lifetime critic trained on every
rollout of its lifetime. The meta-objective (minimised) is

    L(η) = -E[log π_θK(a|s) Â] - β0 H(π_θK) - β1 H(y_θK) + β2 E[π̂²] + β3 E[‖ŷ‖²]

with θK = θK(η) differentiated through the K updates (truncated: θ0 is a constant).
Meta-gradients are taken per lifetime and averaged over the lifetimes that stayed finite;
a lifetime that went non-finite is left out and reset, never vetoing the others.
Lifetimes are a vmap per training source (sources with different environment classes
are separate vmaps sharing one rule); the lifetime axis is sharded over devices with
`jax.sharding`, so the mean meta-gradient is reduced across devices by the compiler.
Memory is traded for time, never for a different update, by taking each source's lifetimes
in sequential micro-batches and by recomputing the K updates' activations in the backward
pass (`MetaConfig.lifetime_microbatches`, `MetaConfig.remat`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import chex
import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs.sources import level_sampler
from lpg import rollout as engine
from lpg import agents
from lpg import budget
from lpg.a2c import lambda_returns
from lpg.agents import make_agent, AGENT_KINDS
from lpg.inner import AgentState, Hypers, LPGAgent, make_lpg_agent
from lpg.rollout import Trajectory
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
    """Per-lifetime hyperparameters are drawn uniformly from these sets (paper, Tables 2-3).

    Table agents (SGD) draw from `learning_rates`, network agents (Adam) from `network_learning_rates`.
    """

    discounts: tuple[float, ...] = (0.997, 0.995, 0.99)
    learning_rates: tuple[float, ...] = (20.0, 40.0, 80.0)
    network_learning_rates: tuple[float, ...] = (2e-3, 5e-3, 1e-2, 2e-2)
    alpha_ys: tuple[float, ...] = (0.1, 0.5, 1.0)
    entropy_costs: tuple[float, ...] = (0.01, 0.02)
    # A lifetime lasts N = round(scale x lifetime_updates) agent updates, the scale drawn from these
    # (meta-gradient training only): with several, a lifetime-conditioned rule sees log N vary.
    lifetime_scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        validate(self, [
            (all(len(getattr(self, f.name)) >= 1 for f in dataclasses.fields(self)),
             "discounts, learning_rates, network_learning_rates, alpha_ys, entropy_costs and lifetime_scales "
             "must be non-empty"),
            (all(0.0 <= g <= 1.0 for g in self.discounts), "discounts must be in [0, 1]"),
            (all(x > 0 for x in self.learning_rates + self.network_learning_rates),
             "learning_rates and network_learning_rates must be > 0"),
            (all(x >= 0 for x in self.alpha_ys + self.entropy_costs), "alpha_ys and entropy_costs must be >= 0"),
            (all(x > 0 for x in self.lifetime_scales), "lifetime_scales must be > 0"),
        ])

    def lifetime_lengths(self, lifetime_updates: int) -> tuple[int, ...]:
        """The lifetime lengths N a lifetime may draw."""
        return tuple(max(1, round(s * lifetime_updates)) for s in self.lifetime_scales)

    def sample(self, key: chex.PRNGKey, tabular: bool, lifetime_updates: int) -> Hypers:
        keys = jax.random.split(key, 4)
        pick = lambda k, xs: jax.random.choice(k, jnp.asarray(xs, jnp.float32))
        lengths = self.lifetime_lengths(lifetime_updates)
        # (fold_in: one length draws nothing, so the other draws stay those of runs made before the option)
        n = pick(jax.random.fold_in(key, 4), lengths) if len(lengths) > 1 else jnp.float32(lengths[0])
        return Hypers(
            discount=pick(keys[0], self.discounts),
            learning_rate=pick(keys[1], self.learning_rates if tabular else self.network_learning_rates),
            alpha_y=pick(keys[2], self.alpha_ys),
            entropy_cost=pick(keys[3], self.entropy_costs),
            lifetime_updates=n,
        )


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    envs: tuple[str, ...] = ("tabular_dense",)
    lifetimes_per_env: int = 8
    num_envs: int = 64  # environments per lifetime
    rollout_len: int = 20  # T
    inner_updates: int = 5  # K, updates backpropagated through per meta-step
    lifetime_updates: int = 250  # agent updates in one lifetime (times hypers.lifetime_scales, if several)
    agent: str = "auto"
    agent_optimizer: str = "auto"  # "auto": SGD for table agents (as in the paper), Adam for networks
    agent_hidden: int = 64
    rule: RuleConfig = RuleConfig()
    hypers: HyperChoices = HyperChoices()
    meta_optimizer: str = "adam"
    meta_lr: float = 1e-4
    meta_max_grad_norm: float = 0.5
    # β0, the bonus on the agent's policy entropy (per lifetime from hypers.entropy_costs), falls
    # linearly over the lifetime to (1 - entropy_anneal) of itself at its end: β0 (1 - a n/N), n the
    # agent updates done at the scoring rollout. 0: constant (the paper's). 1: exploration is worth
    # nothing at the end of a lifetime, so the rule may let the policy sharpen as the lifetime ends.
    entropy_anneal: float = 0.0
    beta1: float = 1e-3  # H(y)
    beta2: float = 1e-3  # π̂²
    beta3: float = 1e-3  # ‖ŷ‖²
    # The meta-objective's critic is trained on every rollout of its lifetime (K + 1 per meta-step):
    # tables by SGD with the implicit step (agents.implicit_table_step), networks by Adam.
    critic_table_lr: float = 100.0
    critic_lr: float = 3e-3
    critic_lambda: float = 0.95
    # Each source's mean meta-gradient is scaled to unit norm before the sources are averaged, so
    # a source with large returns (grids) cannot drown one with small ones (chains); Adam then
    # sets the step size, as it does for a single source.
    balance_sources: bool = True
    # Memory: each source's lifetimes go through the meta-gradient in this many sequential
    # micro-batches (a scan), their sums accumulated; the update is the same as one batch, and the
    # activations held for the backward pass are those of lifetimes_per_env / lifetime_microbatches
    # lifetimes. With lifetimes sharded over D devices, make lifetimes_per_env a multiple of
    # D x lifetime_microbatches, so every device keeps working on its own lifetimes in every
    # micro-batch (any divisor of
    # lifetimes_per_env gives the same update, but others make the compiler move lifetimes).
    lifetime_microbatches: int = 1
    # Memory: recompute each inner update's rule and agent update in the backward pass
    # (jax.checkpoint) instead of holding their activations for all K updates. Same result.
    remat: bool = False
    entropy_reset: float = 1e-3  # a lifetime whose mean policy entropy falls below this is reset
    num_meta_steps: int = 1000
    steps_per_chunk: int = 10  # meta-steps per jitted chunk (progress/logging granularity)
    checkpoint_every: int = 10  # chunks
    seed: int = 0

    def __post_init__(self):
        checks = [
            (len(self.envs) >= 1, "envs must name at least one training environment"),
            (self.lifetimes_per_env >= 1, "lifetimes_per_env must be >= 1"),
            (self.lifetime_microbatches >= 1 and self.lifetimes_per_env % self.lifetime_microbatches == 0,
             "lifetime_microbatches must be >= 1 and divide lifetimes_per_env"),
            (self.num_envs >= 1 and self.rollout_len >= 1, "num_envs and rollout_len must be >= 1"),
            (self.inner_updates >= 1, "inner_updates (K) must be >= 1"),
            (min(self.hypers.lifetime_lengths(self.lifetime_updates), default=0) >= self.inner_updates,
             "lifetime_updates (times the smallest of hypers.lifetime_scales) must be >= inner_updates"),
            (self.agent in AGENT_KINDS, f"agent must be one of {AGENT_KINDS}"),
            (self.meta_optimizer in ("adam", "sgd"), "meta_optimizer must be 'adam' or 'sgd'"),
            (self.agent_optimizer in ("auto", "adam", "sgd"), "agent_optimizer must be 'auto', 'adam' or 'sgd'"),
            (min(self.meta_lr, self.critic_lr, self.critic_table_lr) > 0, "meta_lr, critic_lr and critic_table_lr must be > 0"),
            (self.meta_max_grad_norm > 0, "meta_max_grad_norm must be > 0"),
            (min(self.beta1, self.beta2, self.beta3) >= 0, "beta1, beta2 and beta3 must be >= 0"),
            (0.0 <= self.entropy_anneal <= 1.0, "entropy_anneal must be in [0, 1] (0: a constant entropy bonus)"),
            (0.0 <= self.critic_lambda <= 1.0, "critic_lambda must be in [0, 1]"),
            (self.num_meta_steps >= 1 and self.steps_per_chunk >= 1, "num_meta_steps and steps_per_chunk must be >= 1"),
            (self.num_meta_steps % self.steps_per_chunk == 0, "num_meta_steps must be a multiple of steps_per_chunk"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ]
        validate(self, checks)

    @property
    def env_steps_per_meta_step(self) -> int:
        return len(self.envs) * self.lifetimes_per_env * self.num_envs * self.rollout_len * (self.inner_updates + 1)

    def rule_matmul_flops(self) -> dict[str, float]:
        """Analytic matmul FLOPs of the rule's LSTM in one meta-step (`lpg.budget.rule_matmul_flops`)."""
        return budget.rule_matmul_flops(len(self.envs) * self.lifetimes_per_env * self.num_envs, self.rollout_len,
                                        self.inner_updates, self.rule.hidden, self.rule.y_size, self.rule.embed,
                                        num_inputs=8 if self.rule.lifetime_inputs else 6, remat=self.remat)


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

    @property
    def tabular(self) -> bool:
        return agents.is_tabular(self.agent.network)


def _entropy(logits):
    return distrax.Categorical(logits=logits).entropy()


def _all_finite(tree) -> chex.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def source_agent(source: Source, rule: RuleConfig, agent: str = "auto", agent_optimizer: str = "auto",
                 hidden: int = 64) -> LPGAgent:
    """The LPG agent that learns on `source`'s levels (optimizer "auto": SGD for tables, Adam for networks)."""
    params0 = source.sample_params(jax.random.PRNGKey(0))
    if agent_optimizer == "auto":
        network = make_agent(source.env, params0, aux_size=rule.y_size, kind=agent, hidden=hidden)
        agent_optimizer = "sgd" if agents.is_tabular(network) else "adam"
    return make_lpg_agent(source.env, params0, rule, agent, agent_optimizer, hidden)


def make_group(source: Source, config: MetaConfig) -> Group:
    agent = source_agent(source, config.rule, config.agent, config.agent_optimizer, config.agent_hidden)
    critic = make_agent(source.env, source.sample_params(jax.random.PRNGKey(0)), aux_size=1, kind=config.agent,
                        hidden=config.agent_hidden)
    critic_optimizer = optax.sgd(config.critic_table_lr) if agents.is_tabular(critic) else optax.adam(config.critic_lr)
    return Group(source, agent, critic, critic_optimizer)


def init_lifetime(group: Group, config: MetaConfig, key: chex.PRNGKey) -> Lifetime:
    k_level, k_hyp, k_agent, k_critic, k_env, key = jax.random.split(key, 6)
    env_params = group.source.sample_params(k_level)
    hypers = config.hypers.sample(k_hyp, group.tabular, config.lifetime_updates)
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


def critic_values(group: Group, critic_params, obs) -> chex.Array:
    """v(o) of the meta-objective's critic for observations [T, ...] -> [T]."""
    return jax.vmap(lambda o: group.critic.apply(critic_params, o)[1][0])(obs)


def critic_advantages(group: Group, config: MetaConfig, critic_params, traj: Trajectory, discount) -> chex.Array:
    """A_t = G^λ_t − v(s_t) of one stream [T] (λ-returns bootstrapped on the critic)."""
    v_t = critic_values(group, critic_params, traj.obs)
    v_tp1 = critic_values(group, critic_params, traj.next_obs)
    return lambda_returns(traj, v_tp1, discount, config.critic_lambda) - v_t


def train_critic(group: Group, config: MetaConfig, critic: AgentState, traj: Trajectory, discount):
    """One step of the critic on a [T, B] rollout: ½ mean (G^λ − v)², a table by its implicit step."""

    def loss(params):
        adv = jax.vmap(lambda tb: critic_advantages(group, config, params, tb, discount), in_axes=1)(traj)
        return 0.5 * jnp.mean(adv**2)

    value, grads = jax.value_and_grad(loss)(critic.params)
    if group.tabular:
        grads = agents.implicit_aux_step(grads, traj.obs, group.critic.num_states, config.critic_table_lr, 0.5)
    updates, opt_state = group.critic_optimizer.update(grads, critic.opt_state, critic.params)
    return AgentState(optax.apply_updates(critic.params, updates), opt_state), value


def entropy_bonus(config: MetaConfig, hypers: Hypers, updates_done: chex.Array) -> chex.Array:
    """β0 of the meta-objective after `updates_done` of the lifetime's N agent updates."""
    progress = jnp.clip(updates_done / hypers.lifetime_updates, 0.0, 1.0)
    return hypers.entropy_cost * (1.0 - config.entropy_anneal * progress)


def lifetime_window(group: Group, config: MetaConfig, rule_params, lifetime: Lifetime):
    """K inner updates then the meta-loss of one lifetime. Returns (loss, (lifetime', metrics)).

    The critic is trained on every rollout (the K inner ones and the scoring one), so it
    follows the agent's policy as it changes; it scores the last rollout before seeing it.
    """
    env, agent = group.source.env, group.agent
    h = lifetime.hypers
    critic0 = jax.lax.stop_gradient(lifetime.critic)

    def rule_update(rule_params, agent_state, traj):
        agent_state, (pi_hat, y_hat) = agent.update(rule_params, agent_state, traj, h)
        reg = config.beta2 * jnp.mean(pi_hat**2) + config.beta3 * jnp.mean(jnp.sum(y_hat**2, -1))
        return agent_state, reg, jnp.mean(jnp.abs(pi_hat))

    if config.remat:
        # Only the update depends on η: the rollout and the critic hold no activations for the
        # backward pass, so they stay outside and are not re-run (no environment step twice).
        rule_update = jax.checkpoint(rule_update, prevent_cse=False)  # prevent_cse is not needed inside a scan

    def inner(carry, key):
        agent_state, critic, rollout_state = carry
        rollout_state, traj = engine.rollout(
            env, lifetime.env_params, agent.policy_fn, jax.lax.stop_gradient(agent_state.params),
            rollout_state, key, config.rollout_len,
        )
        critic, _ = train_critic(group, config, critic, traj, h.discount)
        agent_state, reg, pi_hat_abs = rule_update(rule_params, agent_state, traj)
        return (agent_state, critic, rollout_state), (reg, pi_hat_abs)

    key, k_inner, k_meta = jax.random.split(lifetime.key, 3)
    agent0 = jax.lax.stop_gradient(lifetime.agent)
    (agent_state, critic, rollout_state), (regs, pi_hat_abs) = jax.lax.scan(
        inner, (agent0, critic0, lifetime.rollout), jax.random.split(k_inner, config.inner_updates)
    )
    rollout_state, traj = engine.rollout(
        env, lifetime.env_params, agent.policy_fn, jax.lax.stop_gradient(agent_state.params),
        rollout_state, k_meta, config.rollout_len,
    )

    kl_mode = agent.rule.config.y_loss == "kl"

    def stream_loss(traj_b):
        adv_t = critic_advantages(group, config, critic.params, traj_b, h.discount)
        logits, y = jax.vmap(lambda o: agent.network.apply(agent_state.params, o))(traj_b.obs)
        log_pi = distrax.Categorical(logits=logits).log_prob(traj_b.action)
        pg = -jnp.mean(log_pi * jax.lax.stop_gradient(adv_t))
        # H(y) means something only for the softmax y of KL mode; an MSE y is not a distribution.
        ent_y = jnp.mean(_entropy(y)) if kl_mode else jnp.zeros(())
        return pg, jnp.mean(_entropy(logits)), ent_y, jnp.mean(jnp.abs(adv_t))

    pg, ent_pi, ent_y, adv_abs = jax.tree.map(jnp.mean, jax.vmap(stream_loss, in_axes=1)(traj))
    beta0 = entropy_bonus(config, h, lifetime.updates + config.inner_updates)
    loss = pg - beta0 * ent_pi - config.beta1 * ent_y + jnp.mean(regs)
    critic, c_loss = train_critic(group, config, critic, traj, h.discount)

    stats = engine.completed_episode_stats(traj)
    new_lifetime = lifetime.replace(
        agent=jax.lax.stop_gradient(agent_state), critic=critic, rollout=rollout_state,
        updates=lifetime.updates + config.inner_updates, key=key,
    )
    metrics = {
        "meta_loss": loss, "pg_loss": pg, "entropy": ent_pi, "y_entropy": ent_y,
        "pi_hat_abs": jnp.mean(pi_hat_abs), "critic_loss": c_loss, "advantage_abs": adv_abs,
        "episode_return": stats["episode_return"], "episodes": stats["episodes"],
    }
    return loss, (new_lifetime, metrics)


def group_meta_gradient(group: Group, config: MetaConfig, rule_params, batch: Lifetime):
    """Per-lifetime meta-gradients of one source, averaged over the lifetimes that stayed finite.

    A lifetime is non-finite when its loss, its meta-gradient or its agent/critic state after
    the window holds a NaN or an inf; it is left out of the mean (never vetoing the others)
    and reset by `renew_lifetimes`. Returns (loss, grad, batch', metrics [n], finite [n]).

    The n lifetimes go through in `config.lifetime_microbatches` = m sequential micro-batches
    (a scan) that accumulate the finite lifetimes' summed losses and gradients and their count;
    the mean is taken once at the end, so it is the same for every m. Micro-batch j holds
    lifetimes j, j + m, j + 2m, ...: [n] -> [n/m, m] -> scan over the second axis, so the
    leading (device-sharded) axis stays leading and each device works on its own lifetimes.
    """
    window = jax.value_and_grad(lambda p, lt: lifetime_window(group, config, p, lt), has_aux=True)

    def microbatch(sums, lifetimes):
        (losses, (lifetimes, metrics)), grads = jax.vmap(window, in_axes=(None, 0))(rule_params, lifetimes)
        finite = jax.vmap(lambda l, g, lt: jnp.isfinite(l) & _all_finite(g)
                          & _all_finite((lt.agent.params, lt.critic.params)))(losses, grads, lifetimes)
        finite_sum = lambda x: jnp.where(finite.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0).sum(0)
        sums = jax.tree.map(jnp.add, sums, (finite_sum(losses), jax.tree.map(finite_sum, grads), finite.sum()))
        return sums, (lifetimes, metrics, finite)

    m = config.lifetime_microbatches
    split = lambda x: jnp.swapaxes(x.reshape((-1, m) + x.shape[1:]), 0, 1)  # [n] -> [m, n/m]
    merge = lambda x: jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])  # [m, n/m] -> [n]
    zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, rule_params), jnp.zeros((), jnp.int32))
    (loss_sum, grad_sum, count), per_lifetime = jax.lax.scan(microbatch, zeros, jax.tree.map(split, batch))
    batch, metrics, finite = jax.tree.map(merge, per_lifetime)
    count = jnp.maximum(count, 1)
    return loss_sum / count, jax.tree.map(lambda g: g / count, grad_sum), batch, metrics, finite


def renew_lifetimes(group: Group, config: MetaConfig, lifetimes: Lifetime, metrics: dict, finite, key):
    """Replaces finished, collapsed or non-finite lifetimes with fresh ones; returns (lifetimes, stats)."""
    n = lifetimes.updates.shape[0]
    finished = lifetimes.updates >= lifetimes.hypers.lifetime_updates  # its own N (hypers.lifetime_scales)
    collapsed = finite & ~(metrics["entropy"] >= config.entropy_reset)
    renew = finished | collapsed | ~finite
    fresh = jax.vmap(lambda k: init_lifetime(group, config, k))(jax.random.split(key, n))
    lifetimes = jax.tree.map(
        lambda f, o: jnp.where(renew.reshape((-1,) + (1,) * (o.ndim - 1)), f, o), fresh, lifetimes
    )
    ended = (finished & finite).astype(jnp.float32) * (metrics["episodes"] > 0)
    final_return = jnp.where(ended > 0, metrics["episode_return"], 0.0).sum() / jnp.maximum(ended.sum(), 1.0)
    return lifetimes, {
        "finished": finished.sum(), "collapsed": collapsed.sum(), "nonfinite": (~finite).sum(),
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
            # Stagger lifetimes so they do not all end (and restart) at the same meta-step. (These first
            # lifetimes are shorter than N; a lifetime-conditioned rule still reads n from the agent's own
            # update count, so it sees them start at n = 0.)
            offsets = jax.random.randint(k_offset, (config.lifetimes_per_env,), 0, config.lifetime_updates)
            batch = batch.replace(updates=offsets // config.inner_updates * config.inner_updates)
            lifetimes.append(batch)
        return MetaState(rule_params, meta_opt.init(rule_params), tuple(lifetimes), jnp.zeros((), jnp.int32), key)

    def step(state: MetaState) -> tuple[MetaState, dict]:
        loss, grads, key = 0.0, None, state.key
        lifetimes, metrics = [], {}
        for group, batch in zip(groups, state.lifetimes):
            g_loss, g_grads, batch, m, finite = group_meta_gradient(group, config, state.rule_params, batch)
            loss = loss + g_loss / len(groups)
            g_norm = optax.global_norm(g_grads)
            if config.balance_sources:
                g_grads = jax.tree.map(lambda g: g / jnp.maximum(g_norm, 1e-12), g_grads)
            grads = jax.tree.map(lambda a, b: a + b / len(groups), grads, g_grads) if grads is not None else \
                jax.tree.map(lambda b: b / len(groups), g_grads)
            metrics[f"{group.source.name}/grad_norm"] = g_norm
            key, k_renew = jax.random.split(key)
            batch, renew_stats = renew_lifetimes(group, config, batch, m, finite, k_renew)
            lifetimes.append(batch)
            n_finite = jnp.maximum(finite.sum(), 1)
            finite_mean = lambda x: jnp.where(finite, x, 0.0).sum() / n_finite  # noqa: E731
            for name, value in {**jax.tree.map(finite_mean, m), **renew_stats}.items():
                metrics[f"{group.source.name}/{name}"] = value
        updates, opt_state = meta_opt.update(grads, state.opt_state, state.rule_params)
        rule_params = optax.apply_updates(state.rule_params, updates)
        metrics.update({"meta_loss": loss, "grad_norm": optax.global_norm(grads),
                        "skipped_updates": opt_state.total_notfinite})
        return MetaState(rule_params, opt_state, tuple(lifetimes), state.step + 1, key), metrics

    def run(state: MetaState):
        return jax.lax.scan(lambda s, _: step(s), state, None, length=config.steps_per_chunk)

    return MetaTrainer(groups, init, step, run)
