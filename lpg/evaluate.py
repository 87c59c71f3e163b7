"""Whole-lifetime evaluation of update rules (learned LPG rules, untrained rules and A2C) on levels.

A lifetime = a fresh agent trained for `num_updates` updates on one level. Lifetimes over
levels and seeds are a vmap of `lpg.learner.make_train`'s chunk runner, so evaluation uses
the same engine and inner update as training. A learner is built *inside* the jitted
function from traced arguments (`make_learner(args)`), so one compiled program serves a
learned rule and an untrained one (or several hyperparameter settings) alike.

Evaluation environments (`eval_env`) are named like training sources: named grids, chains
("chain_short", ... : several sampled levels), "generated_heldout" (levels of the generator's
held-out family, never sampled in training), or any gymnax name ("Catch-bsuite", ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import gymnax
import gymnax.environments.spaces as spaces
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from envs import registry
from envs.sources import level_sampler, source_names
from lpg.a2c import A2CConfig, make_a2c
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

    def __post_init__(self):
        if min(self.num_updates, self.num_envs, self.rollout_len, self.num_seeds, self.curve_points) < 1:
            raise ValueError(f"LifetimeConfig fields must all be >= 1 (got {self})")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_len


# ------------------------------------------------------------------------------ lifetimes
def make_lifetimes(env, make_learner: Callable[[Any], Learner], config: LifetimeConfig, return_state: bool = False):
    """A jitted `(levels, learner_args, key) -> metrics` with leaves [levels, seeds, updates]
    (`-> (final TrainState [levels, seeds, ...], metrics)` with `return_state`).

    `levels` are env params stacked on a leading axis; `make_learner(learner_args)` builds the
    learner from (possibly traced) arguments, e.g. rule parameters and `Hypers`; it may have
    been built against any one level of `env` (that fixes only observation shapes).
    """

    def one_lifetime(env_params, learner_args, key):
        train = make_train(env, env_params, make_learner(learner_args), config.num_envs, config.rollout_len)
        state, metrics = train.run(train.init(key), config.num_updates)
        return (state, metrics) if return_state else metrics

    @jax.jit
    def lifetimes(levels, learner_args, key):
        num_levels = jax.tree.leaves(levels)[0].shape[0]
        keys = jax.random.split(key, (num_levels, config.num_seeds))
        per_seed = jax.vmap(one_lifetime, in_axes=(None, None, 0))
        return jax.vmap(per_seed, in_axes=(0, None, 0))(levels, learner_args, keys)

    return lifetimes


def run_lifetimes(env, env_params, learner: Learner, config: LifetimeConfig, key) -> dict[str, np.ndarray]:
    """Trains `config.num_seeds` fresh agents on one level (vmapped); metrics shaped [seeds, updates]."""
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


# ------------------------------------------------------------------------------ environments
class EvalEnv(NamedTuple):
    """One evaluation environment: its levels stacked on a leading axis."""

    name: str
    env: Any
    levels: Any  # env params, leaves [L, ...]
    tabular: bool  # integer observations: table agents, SGD

    @property
    def num_levels(self) -> int:
        return int(jax.tree.leaves(self.levels)[0].shape[0])

    def level(self, i: int):
        return jax.tree.map(lambda x: x[i], self.levels)


SAMPLED_SOURCES = ("generated", "generated_heldout")


def known_env_names() -> list[str]:
    return sorted(set(source_names()) | set(registry.names()) | set(gymnax.registered_envs))


def check_env_name(name: str) -> None:
    if name not in known_env_names():
        raise ValueError(
            f"unknown environment {name!r}; level sources: {source_names()}; "
            f"gymnax names: {list(gymnax.registered_envs)}"
        )


def eval_env(name: str, num_levels: int, key) -> EvalEnv:
    """Levels of `name`: `num_levels` draws for the generator families and chains (a chain's
    length and good branch are drawn per level), the one level of a named grid or gymnax env."""
    check_env_name(name)
    if name in source_names():
        env, sample = level_sampler(name)
        sampled = name in SAMPLED_SOURCES or name.startswith("chain_")
        n = num_levels if sampled else 1
        levels = jax.vmap(sample)(jax.random.split(key, n))
    else:
        env, params = registry.make(name)
        levels = jax.tree.map(lambda x: jnp.asarray(x)[None], params)
    example = jax.tree.map(lambda x: x[0], levels)
    tabular = isinstance(env.observation_space(example), spaces.Discrete)
    return EvalEnv(name, env, levels, tabular)


def optimal_returns(ev: EvalEnv, gamma: float) -> np.ndarray | None:
    """Expected episode return of the optimal policy (at `gamma`) per level, for levels with an
    exact tabular MDP (fixed-placement grids and chains); None otherwise."""
    from envs.planning import optimal_episode_return

    if not ev.tabular:
        return None
    try:
        return np.array([optimal_episode_return(ev.env, ev.level(i), gamma) for i in range(ev.num_levels)])
    except ValueError:  # no exact MDP for this env (random placement, probe, ...)
        return None


# ------------------------------------------------------------------------------ learners
@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """How agents are built and trained on one environment (LPG agents and A2C)."""

    agent: str  # lpg.agents kind ("tabular", "mlp", "conv", "auto")
    optimizer: str  # "sgd" for tables, "adam" for networks
    lpg_learning_rate: float
    lpg_discount: float
    lpg_alpha_y: float
    a2c: A2CConfig
    hidden: int = 64

    @property
    def lpg_hypers(self) -> Hypers:
        f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return Hypers(f(self.lpg_discount), f(self.lpg_learning_rate), f(self.lpg_alpha_y), f(0.0))


def lpg_learner(env, env_params, rule_params, rule_config: RuleConfig, hypers: Hypers, agent: str = "auto",
                optimizer: str = "sgd", hidden: int = 64) -> Learner:
    lpg_agent = make_lpg_agent(env, env_params, rule_config, agent=agent, optimizer=optimizer, hidden=hidden)
    return make_lpg_learner(lpg_agent, rule_params, hypers)


def lpg_lifetimes(ev: EvalEnv, rule_config: RuleConfig, settings: AgentSettings, config: LifetimeConfig):
    """Jitted `(levels, (rule_params, hypers), key) -> metrics [L, S, U]` for any rule of `rule_config`."""
    example = ev.level(0)
    agent = make_lpg_agent(ev.env, example, rule_config, agent=settings.agent, optimizer=settings.optimizer,
                           hidden=settings.hidden)
    return make_lifetimes(ev.env, lambda args: make_lpg_learner(agent, *args), config)


def a2c_lifetimes(ev: EvalEnv, settings: AgentSettings, config: LifetimeConfig):
    """Jitted `(levels, (), key) -> metrics [L, S, U]` of A2C with `settings.a2c`."""
    a2c_config = dataclasses.replace(settings.a2c, num_envs=config.num_envs, rollout_len=config.rollout_len)
    learner = make_a2c(ev.env, ev.level(0), a2c_config)
    return make_lifetimes(ev.env, lambda _: learner, config)


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
    nan_to_none = lambda xs: [None if not np.isfinite(x) else float(x) for x in np.ravel(xs)]  # noqa: E731
    return {
        "final_mean": None if not np.isfinite(mean) else mean,
        "final_ci95": None if not np.isfinite(half) else half,
        "lifetimes": int(final.size),
        "lifetimes_without_final_episode": int(final.size - finite.size),
        "final": np.reshape(nan_to_none(s["final"]), s["final"].shape).tolist(),  # [levels][seeds]
        "curve_env_steps": steps.tolist(),
        "curve_mean": nan_to_none([m for m, _ in curve_ci]),
        "curve_ci95": nan_to_none([h for _, h in curve_ci]),
        "curves": np.reshape(nan_to_none(s["curves"]), s["curves"].shape).tolist(),  # [levels][seeds][points]
    }
