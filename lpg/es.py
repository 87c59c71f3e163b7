"""Evolution strategies as LPG's second outer loop: rules scored by whole lifetimes.

The meta-gradient trainer (`lpg.meta`) sees K inner updates ahead; here a rule is scored by
what its agents reach at the *end* of their lifetimes, however long. Each generation:

    population η_1..η_P = η̄ ± σ ε_i            (OpenAI-ES, antithetic pairs; evosax)
    R[i, s, l]  = return of an agent trained for a whole lifetime by η_i on level l of source s,
                  averaged over the episodes of its last `score_updates` updates
    z[i, s, l]  = (R[i, s, l] − mean_i R[., s, l]) / std_i R[., s, l]   (per level, over the population)
    fitness_i   = mean_{s,l} z[i, s, l]            (centred ranks of it drive evosax's update)

All members meet the same levels, lifetime hyperparameters and environment seeds in a generation
(common random numbers), so z compares rules, not levels; normalising per level keeps a source
with large returns (grids) from drowning one with small ones (chains), as `balance_sources` does
for meta-gradients. A member whose lifetime went non-finite gets no fitness (evosax ranks it
last) and is counted. The training sources, agents, per-lifetime hyperparameters and rule are
the meta-gradient trainer's (`lpg.meta`), so both outer loops train the same rule on the same
lifetimes. Members are a vmap; the population axis is sharded over devices (`jax.sharding`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec as P

from evosax.algorithms import Open_ES
from lpg import agents
from lpg.config import validate
from lpg.inner import Hypers, LPGAgent, make_lpg_learner
from lpg.learner import make_train
from lpg.meta import HyperChoices, Source, source_agent
from lpg.sharding import AXIS
from lpg.update_rule import RuleConfig, init_rule
from lpg.agents import AGENT_KINDS


@dataclasses.dataclass(frozen=True)
class ESConfig:
    # What a lifetime is: the fields meta-gradient training (lpg.meta.MetaConfig) has under the
    # same names, so `experiments.evaluate` reads an ES run's config.json as it reads a meta run's.
    envs: tuple[str, ...] = ("tabular_dense",)
    num_envs: int = 32  # environments per lifetime
    rollout_len: int = 20  # T
    lifetime_updates: int = 100  # N, agent updates in one lifetime (scored at its end)
    agent: str = "auto"
    agent_optimizer: str = "auto"  # "auto": SGD for table agents, Adam for networks
    agent_hidden: int = 64
    rule: RuleConfig = RuleConfig()
    hypers: HyperChoices = HyperChoices()
    # The outer loop.
    levels_per_env: int = 4  # levels (each with its hyperparameters and seed) per source per generation
    validation_levels: int = 4  # per source, fixed for the run: the mean rule's progress curve
    score_updates: int = 10  # fitness: mean episode return over a lifetime's last this-many updates
    population_size: int = 32  # even: antithetic pairs ±ε
    sigma: float = 0.02  # perturbation scale
    es_lr: float = 0.01  # Adam step size on the ES gradient
    num_generations: int = 100
    steps_per_chunk: int = 1  # generations per jitted chunk (progress/logging granularity)
    checkpoint_every: int = 5  # chunks
    seed: int = 0

    def __post_init__(self):
        validate(self, [
            (len(self.envs) >= 1, "envs must name at least one training environment"),
            (self.num_envs >= 1 and self.rollout_len >= 1, "num_envs and rollout_len must be >= 1"),
            (self.lifetime_updates >= 1, "lifetime_updates must be >= 1"),
            (self.hypers.lifetime_scales == (1.0,),
             "hypers.lifetime_scales must be (1.0,) for ES: every lifetime of a generation runs lifetime_updates "
             "updates (several lengths are a meta-gradient option)"),
            (1 <= self.score_updates <= self.lifetime_updates, "score_updates must be in [1, lifetime_updates]"),
            (self.agent in AGENT_KINDS, f"agent must be one of {AGENT_KINDS}"),
            (self.agent_optimizer in ("auto", "adam", "sgd"), "agent_optimizer must be 'auto', 'adam' or 'sgd'"),
            (self.levels_per_env >= 1 and self.validation_levels >= 1, "levels_per_env and validation_levels must be >= 1"),
            (self.population_size >= 2 and self.population_size % 2 == 0,
             "population_size must be an even number >= 2 (antithetic pairs)"),
            (self.sigma > 0 and self.es_lr > 0, "sigma and es_lr must be > 0"),
            (self.num_generations >= 1 and self.steps_per_chunk >= 1, "num_generations and steps_per_chunk must be >= 1"),
            (self.num_generations % self.steps_per_chunk == 0, "num_generations must be a multiple of steps_per_chunk"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ])

    @property
    def env_steps_per_generation(self) -> int:
        """Environment steps of one generation: every member's lifetimes and the mean rule's on the
        validation levels."""
        lifetime = self.num_envs * self.rollout_len * self.lifetime_updates
        return len(self.envs) * (self.levels_per_env * self.population_size + self.validation_levels) * lifetime


@struct.dataclass
class ESState:
    strategy: Any  # evosax OpenAI-ES state: the mean rule (flattened), Adam's state, σ
    step: chex.Array  # generations done
    key: chex.PRNGKey


class ESTrainer(NamedTuple):
    agents: tuple[LPGAgent, ...]  # one per source
    strategy: Open_ES
    init: Callable[[chex.PRNGKey], ESState]
    step: Callable[[ESState], tuple[ESState, dict]]  # one generation
    run: Callable[[ESState], tuple[ESState, dict]]  # `steps_per_chunk` generations
    rule_params: Callable[[ESState], Any]  # the mean rule


def lifetime_score(agent: LPGAgent, env, config: ESConfig, rule_params, env_params, hypers: Hypers, key) -> chex.Array:
    """One whole lifetime of an agent trained by `rule_params`: the episode-weighted mean return
    of its last `config.score_updates` updates (0 if no episode ended there)."""
    train = make_train(env, env_params, make_lpg_learner(agent, rule_params, hypers), config.num_envs,
                       config.rollout_len)
    _, metrics = train.run(train.init(key), config.lifetime_updates)
    returns = metrics["episode_return"][-config.score_updates:]
    episodes = metrics["episodes"][-config.score_updates:]
    return jnp.sum(returns * episodes) / jnp.maximum(jnp.sum(episodes), 1.0)


def normalised_fitness(returns: chex.Array) -> chex.Array:
    """Returns [P, ...levels] -> fitness [P] (higher is better): each level's returns z-scored over
    the population, averaged over levels. A member with any non-finite return gets nan (evosax
    ranks it last); a level where every member scored the same adds 0."""
    chex.assert_rank(returns, 2)
    finite = jnp.isfinite(returns)
    count = jnp.maximum(finite.sum(0), 1)
    mean = jnp.where(finite, returns, 0.0).sum(0) / count
    std = jnp.sqrt(jnp.where(finite, (returns - mean) ** 2, 0.0).sum(0) / count)
    z = jnp.where(finite, (returns - mean) / jnp.maximum(std, 1e-8), 0.0)
    return jnp.where(finite.all(1), z.mean(1), jnp.nan)


def make_strategy(config: ESConfig, template: Any) -> Open_ES:
    """OpenAI-ES over pytrees shaped like `template`: antithetic sampling, centred-rank fitness, Adam."""
    return Open_ES(config.population_size, template, use_antithetic_sampling=True,
                   optimizer=optax.adam(config.es_lr), std_schedule=optax.constant_schedule(config.sigma))


def make_es_trainer(config: ESConfig, sources: Sequence[Source], mesh: jax.sharding.Mesh | None = None) -> ESTrainer:
    """The ES outer loop over `sources`; with `mesh`, the population is split over its devices."""
    lpg_agents = tuple(source_agent(s, config.rule, config.agent, config.agent_optimizer, config.agent_hidden)
                       for s in sources)
    template = init_rule(config.rule, jax.random.PRNGKey(0))
    strategy = make_strategy(config, template)
    es_params = strategy.default_params
    if mesh is not None and config.population_size % mesh.devices.size:
        raise ValueError(f"population_size={config.population_size} cannot be split evenly over "
                         f"{mesh.devices.size} devices; use a multiple of {mesh.devices.size}")
    split = (lambda tree: jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(AXIS)))) if mesh is not None \
        else (lambda tree: tree)

    def init(key) -> ESState:
        k_rule, k_es, key = jax.random.split(key, 3)
        return ESState(strategy.init(k_es, init_rule(config.rule, k_rule), es_params), jnp.zeros((), jnp.int32), key)

    def shared_levels(source: Source, agent: LPGAgent, key, n: int):
        """n levels of `source`, each with its lifetime hyperparameters and seed, for every member."""
        k_level, k_hyp, k_run = jax.random.split(key, 3)
        tabular = agents.is_tabular(agent.network)
        hypers = jax.vmap(lambda k: config.hypers.sample(k, tabular, config.lifetime_updates))(
            jax.random.split(k_hyp, n))
        return jax.vmap(source.sample_params)(jax.random.split(k_level, n)), hypers, jax.random.split(k_run, n)

    def rule_returns(source: Source, agent: LPGAgent, rule_params, levels) -> chex.Array:
        """[L] end-of-lifetime returns of agents trained by `rule_params` on `levels`."""
        score = lambda lv, h, k: lifetime_score(agent, source.env, config, rule_params, lv, h, k)  # noqa: E731
        return jax.vmap(score)(*levels)

    # The mean rule is scored every generation on validation levels fixed for the whole run (and
    # never used for fitness): a progress curve without the generations' level-to-level noise.
    fixed_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)
    validation = [shared_levels(s, a, k, config.validation_levels) for s, a, k in
                  zip(sources, lpg_agents, jax.random.split(fixed_key, len(sources)))]

    def step(state: ESState) -> tuple[ESState, dict]:
        key, k_ask, k_levels, k_tell = jax.random.split(state.key, 4)
        population, es_state = strategy.ask(k_ask, state.strategy, es_params)
        population = split(population)
        mean_rule = strategy.get_mean(es_state)
        metrics, returns = {}, []
        for source, agent, k, fixed in zip(sources, lpg_agents, jax.random.split(k_levels, len(sources)), validation):
            levels = shared_levels(source, agent, k, config.levels_per_env)
            member = jax.vmap(lambda p: rule_returns(source, agent, p, levels))(population)  # [P, L]
            returns.append(member)
            finite = jnp.isfinite(member)
            metrics[f"{source.name}/population_return"] = jnp.where(finite, member, 0.0).sum() / jnp.maximum(finite.sum(), 1)
            metrics[f"{source.name}/nonfinite"] = (~finite).sum()
            # The rule before this generation's update, on the validation levels.
            metrics[f"{source.name}/validation_return"] = jnp.mean(rule_returns(source, agent, mean_rule, fixed))
        fitness = normalised_fitness(jnp.concatenate(returns, axis=1))
        # evosax minimises: hand it −fitness (nan stays nan and ranks last).
        new_es, _ = strategy.tell(k_tell, population, -fitness, es_state, es_params)
        metrics.update({
            "fitness_spread": jnp.nanstd(fitness),
            "nonfinite_members": jnp.isnan(fitness).sum(),
            "step_norm": jnp.linalg.norm(new_es.mean - es_state.mean),
            "mean_norm": jnp.linalg.norm(new_es.mean),
        })
        return ESState(new_es, state.step + 1, key), metrics

    def run(state: ESState):
        return jax.lax.scan(lambda s, _: step(s), state, None, length=config.steps_per_chunk)

    return ESTrainer(lpg_agents, strategy, init, step, run, lambda state: strategy.get_mean(state.strategy))
