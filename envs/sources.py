"""Level samplers by name: what a lifetime draws its level from.

`level_sampler(name) -> (env, sample_params)` where `sample_params(key)` is jittable.
Named grids always return their one level (`<grid>_18`: with the paper's 18 actions); chains draw a length and a good branch per
lifetime; "generated" draws from the level generator's training family and
"generated_heldout" from its disjoint held-out family, both seen as a state index (table
agents); "generated_vector" draws the training family seen as a vector (one-hot cell and
presence bits: the same state, for MLP agents).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from envs.chain import CHAIN_KINDS, DelayedChain, sample_chain
from envs.levels import EXTRA_GRIDS, NAMED_GRIDS, LevelDistribution, make_named_grid, sample_level
from envs.probe import ContextualBandit

DEFAULT_DISTRIBUTION = LevelDistribution()
# "<named grid>_18": the grid with the paper's 18 actions (9 moves x {collect, don't}).
COLLECT_SUFFIX = "_18"
# The level generator's families: seen as a state index (table agents) or as a vector (MLP agents).
GENERATED = ("generated", "generated_heldout", "generated_vector", "generated_vector_heldout")


def generated_family(name: str) -> str | None:
    """"train" or "heldout" for a generator source (however it is observed), None for any other name."""
    return None if name not in GENERATED else ("heldout" if name.endswith("_heldout") else "train")


def _constant(params):
    return lambda key: params


def level_sampler(name: str, distribution: LevelDistribution = DEFAULT_DISTRIBUTION) -> tuple[Any, Callable]:
    """(env, sample_params) for a training/evaluation source called `name`."""
    if name in NAMED_GRIDS:
        env, params = make_named_grid(name)
        return env, _constant(params)
    if name.endswith(COLLECT_SUFFIX) and name[: -len(COLLECT_SUFFIX)] in NAMED_GRIDS:
        env, params = make_named_grid(name[: -len(COLLECT_SUFFIX)], collect_actions=True)
        return env, _constant(params)
    if name in EXTRA_GRIDS:
        from envs.gridworld import smallest_gridworld

        env = smallest_gridworld([EXTRA_GRIDS[name]])
        return env, _constant(EXTRA_GRIDS[name].build(env))
    if name.startswith("chain_") and name[len("chain_"):] in CHAIN_KINDS:
        kind = name[len("chain_"):]
        env = DelayedChain(max_length=50, obs_mode=CHAIN_KINDS[kind][3])
        return env, functools.partial(sample_chain, kind=kind, max_length=50)
    if name in GENERATED:
        obs_mode = "vector" if name.startswith("generated_vector") else None
        return distribution.env(obs_mode), functools.partial(
            sample_level, dist=distribution, family=generated_family(name))
    if name == "probe":
        env = ContextualBandit(num_states=4, num_actions=3)
        return env, env.sample_params
    raise ValueError(f"unknown level source {name!r}; allowed: {sorted(source_names())}")


def source_names() -> list[str]:
    chains = [f"chain_{k}" for k in CHAIN_KINDS]
    collect = [f"{name}{COLLECT_SUFFIX}" for name in NAMED_GRIDS]
    return [*NAMED_GRIDS, *collect, *EXTRA_GRIDS, *chains, *GENERATED, "probe"]


def sample_many(name: str, key: jax.Array, n: int):
    """n levels of source `name`, stacked on a leading axis (for vmapped evaluation)."""
    env, sample = level_sampler(name)
    return env, jax.vmap(sample)(jax.random.split(key, n))
