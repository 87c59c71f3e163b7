"""Whole-lifetime evaluation of update rules (learned LPG rules, untrained rules, A2C and
optionally PPO) on a held-out suite, and the statistics that compare them.

A lifetime = a fresh agent trained for `num_updates` updates on one level. Lifetimes over
levels and seeds are a vmap of `lpg.learner.make_train`'s chunk runner, so evaluation uses
the same engine and inner update as training. A learner is built *inside* the jitted
function from traced arguments (`make_learner(args)`), so one compiled program serves a
learned rule and an untrained one, and every candidate learning rate, alike.

Evaluation environments (`eval_env`) are named like training sources: named grids, chains
(several sampled levels), "generated_heldout", or any gymnax name. The default suite,
`HELDOUT_SUITE`, is held out by construction:

* `generated_heldout`: levels of the generator's held-out family, whose descriptors
  (height, width, objects) neither the training family nor any named grid uses (envs.levels).
* `chain_heldout`: delayed chains of 31-50 steps, longer than any `chain_short` (5-30).
* `Catch-bsuite` and `DeepSea-bsuite`: gymnax environments no meta-training source uses, on
  network agents (Adam, 64-64 MLP). DeepSea (8x8, the fixed action map, a deep-exploration
  task) was picked by a short measurement on the 2-core CPU (3 seeds, A2C Adam with max grad
  norm 0.5): at 100 updates x 16 envs x 20 steps (the `quick` lifetimes) A2C reached a final
  return of 0.96-0.99 at lr 3e-3 and 0.99 (the optimum) at 1e-2, the uniform policy -0.001;
  at 250 x 32 x 20, 0.99 at every rate of {1e-3, 3e-3, 1e-2}. The other candidates failed
  that budget: MemoryChain (≤ 0.05 vs random 0.004), DiscountingChain (no better than
  random), Acrobot (-500 = random), CartPole (worse than random), MetaMaze and FourRooms
  (noisy, no clear gain over random); UmbrellaChain learned too (0.86-1.3) but its return
  carries distractor noise.

Scores (`normalise`): 0 = the uniform random policy, 1 = the optimal policy. Where the level
has an exact MDP (tabular grids, chains: `envs.planning`) both are exact: the expected
episode return of the uniform policy and of the greedy policy of Q* (at LPG's γ) within the
level's time limit. Elsewhere 1 is the best A2C (best mean final return over A2C's candidate
learning rates, on the selection lifetimes; with a single candidate, A2C's reported lifetimes)
and 0 the mean return of uniform-random lifetimes run through the rollout engine. Lifetimes on
one level share it, so seeds are averaged per level first (`level_scores`); a single-level
environment's lifetimes form groups of `num_seeds` that stand in for levels. The suite is
summarised by the IQM of the per-level scores with a stratified bootstrap over levels
(`stratified_bootstrap`, as in rliable: levels are resampled within each environment).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import gymnax
import gymnax.environments.spaces as spaces
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from envs import registry
from envs.check import check_user_env
from envs.chain import CHAIN_KINDS, DelayedChain
from envs.sources import GENERATED, generated_family, level_sampler, source_names
from lpg import agents
from lpg.a2c import A2CConfig, actor_critic_network, make_a2c
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.learner import Learner, learning_curve, make_train
from lpg.ppo import PPOConfig, make_ppo
from lpg.update_rule import RuleConfig


@dataclasses.dataclass(frozen=True)
class LifetimeConfig:
    num_updates: int = 500
    num_envs: int = 64
    rollout_len: int = 20
    num_seeds: int = 5
    curve_points: int = 20  # learning-curve resolution

    def __post_init__(self):
        if min(self.num_updates, self.num_envs, self.rollout_len, self.num_seeds, self.curve_points) < 1:
            raise ValueError(f"LifetimeConfig fields must all be >= 1 (got {self})")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_len


# ------------------------------------------------------------------------------ lifetimes
def make_lifetimes(env, make_learner: Callable[[Any], Learner], config: LifetimeConfig, return_state: bool = False,
                   network=None):
    """A jitted `(levels, learner_args, key) -> metrics` with leaves [levels, seeds, updates]
    (`-> (final TrainState [levels, seeds, ...], metrics)` with `return_state`).

    `levels` are env params stacked on a leading axis; `make_learner(learner_args)` builds the
    learner from (possibly traced) arguments, e.g. rule parameters and `Hypers`; it may have
    been built against any one level of `env` (that fixes only observation shapes). With the
    learner's `network` (lpg.agents), metrics also hold "inactive_units" [levels, seeds]: the share
    of its torso's units off on all of the final batch's observations (`agents.inactive_units`).
    """

    def one_lifetime(env_params, learner_args, key):
        learner = make_learner(learner_args)
        train = make_train(env, env_params, learner, config.num_envs, config.rollout_len)
        state, metrics = train.run(train.init(key), config.num_updates)
        if network is not None:
            metrics = {**metrics, "inactive_units": agents.inactive_units(
                network, learner.policy_params(state.learner), state.rollout.obs)}
        return (state, metrics) if return_state else metrics

    @jax.jit
    def lifetimes(levels, learner_args, key):
        num_levels = jax.tree.leaves(levels)[0].shape[0]
        keys = jax.random.split(key, (num_levels, config.num_seeds))
        per_seed = jax.vmap(one_lifetime, in_axes=(None, None, 0))
        return jax.vmap(per_seed, in_axes=(0, None, 0))(levels, learner_args, keys)

    return lifetimes


def run_lifetimes(env, env_params, learner: Learner, config: LifetimeConfig, key) -> dict[str, np.ndarray]:
    """Trains `config.num_seeds` fresh agents on one level (vmapped); metrics shaped [seeds, updates].
    A user's environment is checked first (`envs.check.check_user_env`)."""
    check_user_env(env, env_params)
    lifetimes = make_lifetimes(env, lambda _: learner, config)
    levels = jax.tree.map(lambda x: jnp.asarray(x)[None], env_params)
    metrics = jax.device_get(lifetimes(levels, (), key))
    return {k: np.asarray(v)[0] for k, v in metrics.items()}


def summarise(metrics: dict[str, np.ndarray], config: LifetimeConfig) -> dict[str, Any]:
    """Learning curves [..., points] and the final return per lifetime (last 10% of the lifetime).

    `metrics` leaves are [..., updates] (e.g. [seeds, updates] or [levels, seeds, updates]).
    Both are episode-count-weighted means; a window in which no episode ended is nan.
    """
    returns, episodes = metrics["episode_return"], metrics["episodes"]
    window = max(config.num_updates // config.curve_points, 1)
    tail = max(config.num_updates // 10, 1)

    def windowed(r, n, w):
        u = r.shape[-1] // w * w
        counts = n[..., :u].reshape(n.shape[:-1] + (-1, w)).sum(-1)
        return np.where(counts > 0, learning_curve(r, n, w), np.nan)

    curves = windowed(returns, episodes, window)
    final = windowed(returns[..., -tail:], episodes[..., -tail:], tail)[..., 0]
    return {"curves": curves, "final": final, "updates_per_point": window}


def confidence_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of a Student-t `level` interval of the mean.

    With n values: mean ± t_{n-1, (1+level)/2} · s / √n (s: sample std, ddof=1). A single
    value has no interval (half-width nan).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        raise ValueError("confidence_interval needs at least one value")
    if len(values) == 1:
        return float(values[0]), float("nan")
    t = scipy.stats.t.ppf(0.5 + level / 2, df=len(values) - 1)
    return float(values.mean()), float(t * values.std(ddof=1) / np.sqrt(len(values)))


# ------------------------------------------------------------------------------ the suite
HELDOUT_SUITE = ("generated_heldout", "chain_heldout", "Catch-bsuite", "DeepSea-bsuite")
SOLVED = 0.9  # a chain level counts as solved at a normalised score >= SOLVED


def _chain_range(name: str) -> tuple[int, int] | None:
    kind = name[len("chain_"):] if name.startswith("chain_") else None
    return CHAIN_KINDS[kind][:2] if kind in CHAIN_KINDS else None


def training_overlap(training_sources: Sequence[str], suite: Sequence[str]) -> list[str]:
    """Why a rule meta-trained on `training_sources` has seen part of `suite` (empty: nothing shared).

    Overlap: the same name on both lists, the same generator family seen another way (generated
    and generated_vector), or a training chain kind whose lengths reach into an evaluated chain
    kind's lengths (e.g. chain_long, 5-50, and chain_heldout, 31-50). Named grids and the
    generator's train family never overlap its held-out family (disjoint by construction).
    """
    found = []
    for source in training_sources:
        for name in suite:
            trained, evaluated = _chain_range(source), _chain_range(name)
            family = generated_family(source)
            if source == name:
                found.append(f"{source!r} is a meta-training source and an evaluation environment")
            elif family is not None and family == generated_family(name):
                found.append(f"meta-training source {source!r} draws the generator's {family} family, "
                             f"as {name!r} does")
            elif trained and evaluated and trained[0] <= evaluated[1] and evaluated[0] <= trained[1]:
                found.append(f"meta-training source {source!r} draws chains of {trained[0]}-{trained[1]} "
                             f"steps, overlapping {name!r} ({evaluated[0]}-{evaluated[1]} steps)")
    return found


@dataclasses.dataclass(frozen=True)
class LearningRates:
    """Candidate learning rates of one learner: SGD on tables, Adam on networks."""

    tabular: tuple[float, ...]
    network: tuple[float, ...]

    def __post_init__(self):
        for kind in ("tabular", "network"):
            rates = getattr(self, kind)
            if not isinstance(rates, tuple) or not rates or min(rates) <= 0:
                raise ValueError(f"{kind} learning rates must be a non-empty tuple of rates > 0, got {rates!r}")

    def for_env(self, tabular: bool) -> tuple[float, ...]:
        return self.tabular if tabular else self.network


# Network rates: within 100 updates A2C's MLP agent needs Adam at >= 5e-3 to solve Catch (1e-3 stays
# at the uniform policy), and rules meta-trained at 5e-4 to 5e-3 never moved it (results/lpg/README.md),
# so both learners search 2e-3 to 2e-2.
LPG_LEARNING_RATES = LearningRates(tabular=(20.0, 40.0, 80.0), network=(2e-3, 5e-3, 1e-2, 2e-2))
A2C_LEARNING_RATES = LearningRates(tabular=(10.0, 20.0, 40.0), network=(2e-3, 5e-3, 1e-2, 2e-2))
# PPO takes epochs x minibatches (16) optimiser steps per rollout, each on a quarter of it, so its
# rates sit below A2C's. Measured (2026-12-01, 100 updates x 32 envs x 20 steps, 4 levels x 2 seeds,
# mean score or final return): tables, lr 1 / 2.5 / 5 / 10 / 20: held-out chains 0.99 / 1.00 / 1.00 /
# 1.00 / 1.00, held-out grids 0.85 / 0.83 / 0.88 / 0.80 / 0.72; Adam 5e-4 / 1e-3 / 2e-3 / 5e-3 / 1e-2:
# Catch 0.98 / 1.00 / 0.99 / 0.98 / 0.98, DeepSea 0.87 / 0.87 / 0.87 / 0.74 / 0.49.
PPO_LEARNING_RATES = LearningRates(tabular=(2.5, 5.0, 10.0), network=(5e-4, 1e-3, 2e-3, 5e-3))


def check_candidate_sets(lpg: LearningRates, baseline: LearningRates, name: str = "A2C") -> None:
    """Selection is only fair between candidate sets of the same size: refuse anything else."""
    for kind in ("tabular", "network"):
        mine, theirs = getattr(lpg, kind), getattr(baseline, kind)
        if len(mine) != len(theirs):
            raise ValueError(
                f"{kind} agents: LPG has {len(mine)} candidate learning rates {list(mine)} and {name} "
                f"{len(theirs)} {list(theirs)}; both learners must choose from sets of the same size")


def geometric_candidates(low: float, high: float, n: int) -> tuple[float, ...]:
    """n rates spaced evenly in log between low and high (n = 1: their geometric mean)."""
    if n == 1:
        return (float(np.sqrt(low * high)),)
    return tuple(float(f"{x:.3g}") for x in np.geomspace(low, high, n))


# ------------------------------------------------------------------------------ environments
class EvalEnv(NamedTuple):
    """One evaluation environment: its levels stacked on a leading axis."""

    name: str
    env: Any
    levels: Any  # env params, leaves [L, ...]
    tabular: bool  # integer observations: table agents, SGD
    single_level: bool = False  # the L "levels" are copies of one level (groups of lifetimes)

    @property
    def num_levels(self) -> int:
        return int(jax.tree.leaves(self.levels)[0].shape[0])

    def level(self, i: int):
        return jax.tree.map(lambda x: x[i], self.levels)

    @property
    def chain_lengths(self) -> np.ndarray | None:
        return np.asarray(self.levels.length) if isinstance(self.env, DelayedChain) else None


def known_env_names() -> list[str]:
    return sorted(set(source_names()) | set(registry.names()) | set(gymnax.registered_envs))


def check_env_name(name: str) -> None:
    if name not in known_env_names():
        raise ValueError(
            f"unknown environment {name!r}; level sources: {source_names()}; "
            f"gymnax names: {list(gymnax.registered_envs)}"
        )


def eval_env(name: str, num_levels: int, key) -> EvalEnv:
    """`num_levels` levels of `name`: draws for the generator families and chains (a chain's
    length and good branch are drawn per level); `num_levels` copies of the one level of a
    named grid or gymnax env (`single_level`: each copy's lifetimes form one group)."""
    check_env_name(name)
    sampled = name in GENERATED or name.startswith("chain_")
    if name in source_names():
        env, sample = level_sampler(name)
        one = None if sampled else sample(key)
    else:
        env, one = registry.make(name)
        check_user_env(env, one)  # an environment registered by a user: checked before compiling
    if one is None:
        levels = jax.vmap(sample)(jax.random.split(key, num_levels))
    else:
        levels = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (num_levels,) + jnp.shape(x)), one)
    example = jax.tree.map(lambda x: x[0], levels)
    tabular = isinstance(env.observation_space(example), spaces.Discrete)
    return EvalEnv(name, env, levels, tabular, single_level=not sampled)


# ------------------------------------------------------------------------------ references
class References(NamedTuple):
    """What a level's normalised score is measured against: returns [L] scoring 0 and 1."""

    kind: str  # "exact": planning on the level's MDP; "best A2C": random lifetimes and the best A2C
    random: np.ndarray  # [L] the uniform random policy's episode return
    optimal: np.ndarray  # [L] the optimal policy's (or the best A2C's final) episode return


def exact_references(ev: EvalEnv, gamma: float) -> References | None:
    """Exact expected episode returns of the uniform and the optimal policy (greedy in Q* at
    `gamma`) within each level's time limit, for levels with an exact MDP (fixed-placement grids,
    chains); None otherwise."""
    from envs.planning import episode_return, greedy_policy, tabular_mdp, value_iteration

    random, optimal = [], []
    for i in range(1 if ev.single_level else ev.num_levels):
        level = ev.level(i)
        try:
            mdp = tabular_mdp(ev.env, level)
        except ValueError:  # no exact MDP (random placement, gymnax env, ...)
            return None
        horizon = int(level.max_steps_in_episode)
        uniform = np.full((mdp.num_states, mdp.num_actions), 1.0 / mdp.num_actions)
        _, Q = value_iteration(mdp, gamma)
        random.append(episode_return(mdp, uniform, horizon))
        optimal.append(episode_return(mdp, greedy_policy(Q), horizon))
    tile = ev.num_levels if ev.single_level else 1
    return References("exact", np.tile(random, tile), np.tile(optimal, tile))


def nanmean(x, axis=None):
    """np.nanmean without the warning on all-nan slices (their mean is nan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def per_level(values: np.ndarray, single_level: bool) -> np.ndarray:
    """[L, S] -> [L]: the mean over seeds, or over every lifetime for copies of one level."""
    values = np.asarray(values, np.float64)
    if single_level:
        return np.full(values.shape[0], nanmean(values))
    return nanmean(values, axis=1)


def lifetime_mean_returns(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """[L, S]: the episode-count-weighted mean return over a whole lifetime (nan: no episode ended)."""
    returns, episodes = np.asarray(metrics["episode_return"]), np.asarray(metrics["episodes"])
    count = episodes.sum(-1)
    return np.where(count > 0, (returns * episodes).sum(-1) / np.maximum(count, 1.0), np.nan)


def sampled_references(random_returns: np.ndarray, best_a2c_final: np.ndarray, single_level: bool) -> References:
    """References from lifetimes: uniform-random lifetimes' mean returns and the best A2C's final
    returns (both [L, S])."""
    return References("best A2C", per_level(random_returns, single_level), per_level(best_a2c_final, single_level))


# ------------------------------------------------------------------------------ scores
def normalise(returns, random, optimal) -> np.ndarray:
    """(R - R_random) / (R_optimal - R_random), broadcast; nan where R_optimal does not exceed R_random."""
    returns, random, optimal = (np.asarray(x, np.float64) for x in (returns, random, optimal))
    gap = optimal - random
    valid = gap > 1e-6 * np.maximum(1.0, np.maximum(np.abs(optimal), np.abs(random)))
    return np.where(valid, (returns - random) / np.where(valid, gap, 1.0), np.nan)


def level_scores(final: np.ndarray, refs: References) -> np.ndarray:
    """Normalised final returns [L, S] averaged over the seeds of each level -> [L] (nan: no score)."""
    return nanmean(normalise(final, refs.random[:, None], refs.optimal[:, None]), axis=1)


def iqm(x, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (a quarter of the values cut from each end)."""
    return scipy.stats.trim_mean(np.asarray(x, np.float64), 0.25, axis=axis)


def _finite_columns(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x[..., np.isfinite(x.reshape(-1, x.shape[-1])).all(0)]


def stratified_bootstrap(strata: Sequence[np.ndarray], statistic: Callable = iqm, num_resamples: int = 2000,
                         level: float = 0.95, seed: int = 0,
                         minus: Sequence[np.ndarray] | None = None) -> tuple[float, float, float] | None:
    """`statistic` of every stratum's values pooled, and its percentile `level` interval.

    Each stratum (one environment) is [..., L]: its last axis (levels) is resampled with
    replacement within the stratum, independently of the other strata; a resampled level keeps
    all its rows (e.g. [meta-seeds, L]: one level's scores under every rule). Levels with a
    non-finite value are left out. `statistic(x [B, N], axis=-1)`. None: no finite level at all.

    With `minus` (another learner's strata on the same levels, [..., L] each): the statistic of
    `strata` less that of `minus`, the two resampled with the same levels (a paired difference,
    so what the levels share cancels); a level non-finite in either is left out of both.
    """
    groups = [strata] if minus is None else [strata, minus]
    if minus is not None and len(minus) != len(strata):
        raise ValueError(f"stratified_bootstrap: {len(strata)} strata against {len(minus)} to subtract")
    kept = []  # per stratum: each group's [rows, L'] over the levels finite in every group
    for parts in zip(*groups):
        parts = [np.asarray(p, np.float64).reshape(-1, np.shape(p)[-1]) for p in parts]
        finite = np.all([np.isfinite(p).all(0) for p in parts], axis=0)
        if finite.any():
            kept.append([p[:, finite] for p in parts])
    if not kept:
        return None
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, parts[0].shape[1], size=(num_resamples, parts[0].shape[1])) for parts in kept]

    def value(g):  # (point, [B] resampled statistics) of group g
        point = statistic(np.concatenate([parts[g].reshape(-1) for parts in kept])[None], axis=-1)[0]
        resampled = [np.moveaxis(parts[g][:, i], 1, 0).reshape(num_resamples, -1) for parts, i in zip(kept, idx)]
        return point, statistic(np.concatenate(resampled, axis=1), axis=-1)

    point, stats = value(0)
    if minus is not None:
        point_b, stats_b = value(1)
        point, stats = point - point_b, stats - stats_b
    low, high = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(point), float(low), float(high)


def bootstrap_ratio(numerator: np.ndarray, denominator: np.ndarray, num_resamples: int = 2000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float | None, float | None] | None:
    """mean(numerator) / mean(denominator) over levels [L] (paired), with a percentile interval from
    resampling levels. None when the denominator's mean is not positive; the interval is None when
    some resample's is not."""
    pair = _finite_columns(np.stack([numerator, denominator]))
    if pair.shape[1] == 0 or pair[1].mean() <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, pair.shape[1], size=(num_resamples, pair.shape[1]))
    means = pair[:, idx].mean(-1)  # [2, B]
    point = float(pair[0].mean() / pair[1].mean())
    if (means[1] <= 0).any():
        return point, None, None
    low, high = np.percentile(means[0] / means[1], [50 * (1 - level), 50 * (1 + level)])
    return point, float(low), float(high)


def curve_band(curves: np.ndarray, num_resamples: int = 1000, level: float = 0.95, seed: int = 0):
    """Learning curves [L, S, P] -> (mean, low, high) [P]: the mean over levels of per-level mean
    curves, with a percentile interval from resampling levels (so the band stays within the range
    of the observed returns)."""
    per_level_curves = nanmean(np.asarray(curves, np.float64), axis=1).T  # [P, L]
    idx = np.random.default_rng(seed).integers(0, per_level_curves.shape[1], (num_resamples, per_level_curves.shape[1]))
    samples = nanmean(per_level_curves[:, idx], axis=-1)  # [P, B]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=1)
    return nanmean(per_level_curves, axis=1), low, high


def solved_by_length(scores: np.ndarray, lengths: np.ndarray, threshold: float = SOLVED) -> dict[int, list[int]]:
    """{chain length: [levels solved (score >= threshold), levels]} over the levels with a score."""
    table: dict[int, list[int]] = {}
    for score, length in zip(np.asarray(scores), np.asarray(lengths)):
        if np.isfinite(score):
            row = table.setdefault(int(length), [0, 0])
            row[0] += int(score >= threshold)
            row[1] += 1
    return dict(sorted(table.items()))


# ------------------------------------------------------------------------------ learners
@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """How agents are built and trained on one environment (LPG agents, A2C, PPO); learning rates
    are chosen per learner from candidates."""

    agent: str  # lpg.agents kind ("tabular", "mlp", "conv", "auto")
    optimizer: str  # "sgd" for tables, "adam" for networks
    lpg_discount: float
    lpg_alpha_y: float
    a2c: A2CConfig
    hidden: int = 64
    ppo: PPOConfig | None = None  # None: no PPO baseline

    def hypers(self, learning_rate: float, lifetime_updates: int) -> Hypers:
        f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return Hypers(f(self.lpg_discount), f(learning_rate), f(self.lpg_alpha_y), f(0.0), f(lifetime_updates))


def lpg_learner(env, env_params, rule_params, rule_config: RuleConfig, hypers: Hypers, agent: str = "auto",
                optimizer: str = "sgd", hidden: int = 64) -> Learner:
    lpg_agent = make_lpg_agent(env, env_params, rule_config, agent=agent, optimizer=optimizer, hidden=hidden)
    return make_lpg_learner(lpg_agent, rule_params, hypers)


def lpg_lifetimes(ev: EvalEnv, rule_config: RuleConfig, settings: AgentSettings, config: LifetimeConfig):
    """Jitted `(levels, (rule_params, hypers), key) -> (final TrainState, metrics)`, leaves [L, S, ...],
    for any rule of `rule_config`."""
    agent = make_lpg_agent(ev.env, ev.level(0), rule_config, agent=settings.agent, optimizer=settings.optimizer,
                           hidden=settings.hidden)
    return make_lifetimes(ev.env, lambda args: make_lpg_learner(agent, *args), config, return_state=True,
                          network=agent.network)


def a2c_lifetimes(ev: EvalEnv, settings: AgentSettings, config: LifetimeConfig):
    """Jitted `(levels, learning_rate, key) -> (final TrainState, metrics)` of A2C with `settings.a2c`
    (the learning rate is traced: one program for every candidate)."""
    a2c_config = dataclasses.replace(settings.a2c, num_envs=config.num_envs, rollout_len=config.rollout_len)
    example = ev.level(0)
    return make_lifetimes(ev.env, lambda lr: make_a2c(ev.env, example, a2c_config, learning_rate=lr), config,
                          return_state=True, network=actor_critic_network(ev.env, example, a2c_config))


def ppo_lifetimes(ev: EvalEnv, settings: AgentSettings, config: LifetimeConfig):
    """Jitted `(levels, learning_rate, key) -> (final TrainState, metrics)` of PPO with `settings.ppo`,
    collecting the same `num_envs` x `rollout_len` steps per update as every other learner."""
    try:
        ppo_config = dataclasses.replace(settings.ppo, num_envs=config.num_envs, rollout_len=config.rollout_len)
    except ValueError as e:
        raise ValueError(f"PPO on {ev.name}: {e} (PPO splits the {config.num_envs} environments of a lifetime "
                         f"into minibatches)") from None
    example = ev.level(0)
    return make_lifetimes(ev.env, lambda lr: make_ppo(ev.env, example, ppo_config, learning_rate=lr), config,
                          return_state=True, network=actor_critic_network(ev.env, example, ppo_config))


def uniform_random_learner(env, env_params) -> Learner:
    """A policy that picks actions uniformly at random and never learns."""
    num_actions = env.action_space(env_params).n

    def policy_fn(params, carry, timestep, key):
        return jax.random.randint(key, (), 0, num_actions), {}, carry

    return Learner(init=lambda key: (), policy_fn=policy_fn, policy_params=lambda state: (),
                   update=lambda state, traj: (state, {}))


def random_lifetimes(ev: EvalEnv, config: LifetimeConfig):
    """Jitted `(levels, (), key) -> metrics` of uniform-random lifetimes (through the rollout engine)."""
    learner = uniform_random_learner(ev.env, ev.level(0))
    return make_lifetimes(ev.env, lambda _: learner, config)


def finite_lifetimes(state, metrics) -> np.ndarray:
    """[L, S] bool: every float leaf of the final learner state and every per-update return is finite."""
    returns = np.asarray(metrics["episode_return"])
    shape = returns.shape[:2]
    ok = np.isfinite(returns).reshape(shape + (-1,)).all(-1)
    for leaf in jax.tree.leaves(state.learner):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            ok &= np.asarray(jnp.isfinite(leaf).reshape(shape + (-1,)).all(-1))
    return ok


def final_report(metrics: dict[str, np.ndarray], config: LifetimeConfig) -> dict[str, Any]:
    """JSON-ready numbers of one (environment, learner): final returns per lifetime [L, S], their
    mean ± 95% CI over the lifetimes in which an episode ended in the last 10% of the lifetime,
    and the mean learning curve with its CI band (nan: no episode ended in that window)."""
    s = summarise(metrics, config)
    final = s["final"].reshape(-1)
    finite = final[np.isfinite(final)]
    mean, half = confidence_interval(finite) if len(finite) else (float("nan"), float("nan"))
    curves = s["curves"].reshape(-1, s["curves"].shape[-1])  # [L*S, points]
    curve_ci = []
    for j in range(curves.shape[1]):
        column = curves[:, j][np.isfinite(curves[:, j])]
        curve_ci.append(confidence_interval(column) if len(column) else (float("nan"), float("nan")))
    steps = (np.arange(curves.shape[1]) + 1) * s["updates_per_point"] * config.steps_per_update
    return {
        "final_mean": json_number(mean),
        "final_ci95": json_number(half),
        "lifetimes": int(final.size),
        "lifetimes_without_final_episode": int(final.size - finite.size),
        "final": json_numbers(s["final"]),  # [levels][seeds]
        "curve_env_steps": steps.tolist(),
        "curve_mean": json_numbers([m for m, _ in curve_ci]),
        "curve_ci95": json_numbers([h for _, h in curve_ci]),
        "curves": json_numbers(s["curves"]),  # [levels][seeds][points]
    }


def json_number(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def json_numbers(x) -> list:
    """A nested list of floats with None for nan / inf."""
    x = np.asarray(x, np.float64)
    return np.where(np.isfinite(x), x, None).tolist() if x.ndim else json_number(x)


# ------------------------------------------------------------------------------ one environment
class RuleUnderTest(NamedTuple):
    """A rule to evaluate (a meta-seed's learned rule, or an untrained one) and its LPG learning rates."""

    label: str
    params: Any
    config: RuleConfig
    learning_rates: LearningRates


INACTIVE_NOTE = 0.9  # logs and summaries note networks that end with at least this share of hidden units off


class _Run(NamedTuple):
    final: np.ndarray  # [L, S] final returns (nan: no episode ended in the last 10%)
    finite: np.ndarray  # [L, S] lifetimes whose state and returns stayed finite
    metrics: dict
    inactive: np.ndarray | None = None  # [L, S] share of the torso's units off at the end (nan: a table)


def run_candidate(lifetimes, levels, args, key, config: LifetimeConfig) -> _Run:
    """One learner setting (e.g. a rule at one learning rate) on `levels`: final returns, which
    lifetimes stayed finite, and the metrics, from a `make_lifetimes(..., return_state=True)` program."""
    state, metrics = lifetimes(levels, args, key)
    finite = finite_lifetimes(state, metrics)
    metrics = jax.device_get(metrics)
    inactive = metrics.pop("inactive_units", None)
    return _Run(summarise(metrics, config)["final"], finite, metrics, inactive)


def inactive_note(run: _Run) -> str:
    """The log's note on a run whose networks end mostly off (at least INACTIVE_NOTE), else empty."""
    off = None if run.inactive is None else nanmean(run.inactive)
    return f", {off:.0%} of hidden units off" if off is not None and off >= INACTIVE_NOTE else ""


def selection_key(run: _Run, refs: References | None) -> tuple[int, float]:
    """How a candidate learning rate ranks on its selection lifetimes (higher is better): first the
    lifetimes that stayed finite, then the mean normalised score over levels where references are
    exact, else the mean final return. A rate that loses lifetimes to non-finite values is chosen
    only over rates that lose more: the score alone averages over the finite lifetimes only, and
    would favour a rate whose surviving lifetimes did well."""
    value = nanmean(level_scores(run.final, refs)) if refs is not None else nanmean(run.final)
    return int(np.sum(run.finite)), float(value) if np.isfinite(value) else -np.inf


def evaluate_env(ev: EvalEnv, rules: Sequence[RuleUnderTest], a2c_rates: LearningRates, settings: AgentSettings,
                 config: LifetimeConfig, key, log: Callable[[str], None] = lambda text: None,
                 num_resamples: int = 2000, ppo_rates: LearningRates | None = None) -> dict[str, Any]:
    """Every learner on `ev`'s levels, JSON-ready: A2C, PPO (with `ppo_rates` and `settings.ppo`) and
    each rule choose a learning rate from their candidates by the best mean score on selection
    lifetimes (same levels, seeds disjoint from the reported ones; fewest non-finite lifetimes
    first, `selection_key`), then run fresh reported
    lifetimes; scores are normalised per level (1 = optimal where exact, else the best A2C)."""
    if (ppo_rates is None) != (settings.ppo is None):
        raise ValueError("a PPO baseline needs both ppo_rates and AgentSettings.ppo")
    for rule in rules:
        check_candidate_sets(rule.learning_rates, a2c_rates)
        if ppo_rates is not None:
            check_candidate_sets(rule.learning_rates, ppo_rates, "PPO")
    k_select, k_run, k_random = jax.random.split(key, 3)
    t0 = time.time()
    say = lambda text: log(f"    {text} ({time.time() - t0:.0f}s)")  # noqa: E731
    refs = exact_references(ev, settings.lpg_discount)

    def select(label, lifetimes, candidates, make_args):
        """(chosen rate, {rate: selection run}); one candidate leaves nothing to choose: no selection runs."""
        trials = {}
        if len(candidates) == 1:
            return candidates[0], trials
        for lr in candidates:
            trials[lr] = run_candidate(lifetimes, ev.levels, make_args(lr), k_select, config)
            say(f"{label} lr {lr:g} (selection): mean final return {nanmean(trials[lr].final):.3f}")
        best = max(candidates, key=lambda lr: selection_key(trials[lr], refs))
        return best, trials

    a2c = a2c_lifetimes(ev, settings, config)
    a2c_lr, a2c_trials = select("A2C", a2c, a2c_rates.for_env(ev.tabular), lambda lr: jnp.float32(lr))
    runs, trials, chosen = {}, {"A2C": a2c_trials}, {"A2C": a2c_lr}
    runs["A2C"] = run_candidate(a2c, ev.levels, jnp.float32(a2c_lr), k_run, config)
    say(f"A2C lr {a2c_lr:g}: mean final return {nanmean(runs['A2C'].final):.3f}{inactive_note(runs['A2C'])}")
    if refs is None:  # 1 = the best A2C on the selection lifetimes (its reported ones if it had one rate)
        random_metrics = jax.device_get(random_lifetimes(ev, config)(ev.levels, (), k_random))
        refs = sampled_references(lifetime_mean_returns(random_metrics), a2c_trials.get(a2c_lr, runs["A2C"]).final,
                                  ev.single_level)
        say(f"references: random {refs.random.mean():.3f}, best A2C (lr {a2c_lr:g}) {refs.optimal.mean():.3f}")
    if ppo_rates is not None:
        ppo = ppo_lifetimes(ev, settings, config)
        chosen["PPO"], trials["PPO"] = select("PPO", ppo, ppo_rates.for_env(ev.tabular), lambda lr: jnp.float32(lr))
        runs["PPO"] = run_candidate(ppo, ev.levels, jnp.float32(chosen["PPO"]), k_run, config)
        say(f"PPO lr {chosen['PPO']:g}: mean final return {nanmean(runs['PPO'].final):.3f}"
            f"{inactive_note(runs['PPO'])}")
    compiled = {}
    for rule in rules:
        if rule.config not in compiled:
            compiled[rule.config] = lpg_lifetimes(ev, rule.config, settings, config)
        lpg = compiled[rule.config]
        make_args = lambda lr, rule=rule: (rule.params, settings.hypers(lr, config.num_updates))  # noqa: E731
        chosen[rule.label], trials[rule.label] = select(rule.label, lpg, rule.learning_rates.for_env(ev.tabular),
                                                        make_args)
        runs[rule.label] = run_candidate(lpg, ev.levels, make_args(chosen[rule.label]), k_run, config)
        say(f"{rule.label} lr {chosen[rule.label]:g}: mean final return {nanmean(runs[rule.label].final):.3f}"
            f"{inactive_note(runs[rule.label])}")

    lengths = ev.chain_lengths
    learners = {}
    for label, run in runs.items():
        scores = level_scores(run.final, refs)
        s = summarise(run.metrics, config)
        mean, low, high = curve_band(s["curves"], num_resamples // 2)
        ci = stratified_bootstrap([scores], np.mean, num_resamples)
        learners[label] = {
            "learning_rate": chosen[label],
            "selection": {f"{lr:g}": {"mean_final": json_number(nanmean(t.final)),
                                      "mean_score": json_number(nanmean(level_scores(t.final, refs))),
                                      "non_finite_lifetimes": int((~t.finite).sum())}
                          for lr, t in trials[label].items()},
            "final": json_numbers(run.final),  # [levels][seeds]
            "final_mean": json_number(nanmean(run.final)),
            "level_scores": json_numbers(scores),
            "score_mean": None if ci is None else ci[0],
            "score_ci95": None if ci is None else [ci[1], ci[2]],
            "levels_without_score": int((~np.isfinite(scores)).sum()),
            "lifetimes": int(run.final.size),
            "lifetimes_without_final_episode": int((~np.isfinite(run.final)).sum()),
            "non_finite_lifetimes": int((~run.finite).sum()),
            # [levels][seeds] share of the torso's hidden units off on the last batch (None: a table)
            "inactive_units": None if run.inactive is None else json_numbers(run.inactive),
            "inactive_units_mean": None if run.inactive is None else json_number(nanmean(run.inactive)),
            "curve_env_steps": ((np.arange(mean.size) + 1) * s["updates_per_point"] * config.steps_per_update).tolist(),
            "curve_mean": json_numbers(mean),
            "curve_band95": [json_numbers(low), json_numbers(high)],  # [low, high] per point
        }
        if lengths is not None:
            learners[label]["solved_by_length"] = {str(k): v for k, v in solved_by_length(scores, lengths).items()}
    a2c_scores = np.asarray(learners["A2C"]["level_scores"], np.float64)
    ratios = {}
    for rule in rules:
        ratio = bootstrap_ratio(np.asarray(learners[rule.label]["level_scores"], np.float64), a2c_scores,
                                num_resamples)
        ratios[rule.label] = None if ratio is None else {"ratio": ratio[0], "ci95": [ratio[1], ratio[2]]}
    return {
        "num_levels": ev.num_levels, "num_seeds": config.num_seeds, "single_level": ev.single_level,
        "tabular": ev.tabular, "agent": settings.agent, "optimizer": settings.optimizer,
        "chain_lengths": None if lengths is None else lengths.tolist(),
        "reference": {"kind": refs.kind, "gamma": settings.lpg_discount, "random": json_numbers(refs.random),
                      "optimal": json_numbers(refs.optimal)},
        "learners": learners,
        "score_ratio_to_A2C": ratios,
        "a2c": dataclasses.asdict(settings.a2c),
        **({"ppo": dataclasses.asdict(settings.ppo)} if settings.ppo is not None else {}),
        "seconds": time.time() - t0,
    }


# ------------------------------------------------------------------------------ the whole suite
def aggregate(envs: dict[str, dict], groups: dict[str, Sequence[str]], num_resamples: int = 2000,
              baseline: str = "A2C") -> dict[str, Any]:
    """Suite-level numbers per group of learners (one learner, or several pooled, e.g. every
    meta-seed's LPG): IQM and mean of the per-level scores of every environment, with stratified
    bootstrap intervals (levels resampled within each environment; a pooled level keeps every
    learner's score), the lifetimes that ended non-finite, and, where `baseline` is one of the
    groups, each other group's IQM less the baseline's with a paired interval (the same levels
    resampled for both: `iqm_minus_<baseline>`), which tells a difference from the levels' spread."""

    def level_scores(labels):  # [learners, L] per environment
        return [np.array([r["learners"][label]["level_scores"] for label in labels], np.float64)
                for r in envs.values()]

    result = {}
    for name, labels in groups.items():
        strata = level_scores(labels)
        entry = {"learners": list(labels), "environments": len(strata),
                 "levels_scored": int(sum(_finite_columns(s).shape[-1] for s in strata)),
                 "non_finite_lifetimes": int(sum(r["learners"][label]["non_finite_lifetimes"]
                                                 for r in envs.values() for label in labels)),
                 "lifetimes": int(sum(r["learners"][label]["lifetimes"] for r in envs.values() for label in labels))}
        for statistic, fn in (("iqm", iqm), ("mean", np.mean)):
            ci = stratified_bootstrap(strata, fn, num_resamples)
            entry[statistic] = None if ci is None else ci[0]
            entry[f"{statistic}_ci95"] = None if ci is None else [ci[1], ci[2]]
        if baseline in groups and name != baseline:
            ci = stratified_bootstrap(strata, iqm, num_resamples, minus=level_scores(groups[baseline]))
            entry[f"iqm_minus_{baseline}"] = None if ci is None else ci[0]
            entry[f"iqm_minus_{baseline}_ci95"] = None if ci is None else [ci[1], ci[2]]
        result[name] = entry
    return result


def pooled_scores(env_result: dict, labels: Sequence[str], num_resamples: int = 2000) -> tuple[dict, dict | None]:
    """Several rules (meta-seeds) on one environment together: the mean score over every (rule,
    level) with an interval from resampling levels (a level keeps every rule's score), and the
    ratio of the per-level mean over rules to A2C's score. Returns (scores, ratio)."""
    scores = np.array([env_result["learners"][label]["level_scores"] for label in labels], np.float64)  # [M, L]
    ci = stratified_bootstrap([scores], np.mean, num_resamples)
    per_level_mean = nanmean(scores, axis=0)
    a2c = np.array(env_result["learners"]["A2C"]["level_scores"], np.float64)
    ratio = bootstrap_ratio(per_level_mean, a2c, num_resamples)
    entry = {"learners": list(labels), "level_scores": json_numbers(per_level_mean),
             "score_mean": None if ci is None else ci[0], "score_ci95": None if ci is None else [ci[1], ci[2]]}
    return entry, None if ratio is None else {"ratio": ratio[0], "ci95": [ratio[1], ratio[2]]}
