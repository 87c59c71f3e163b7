"""Level samplers by name: what a lifetime draws its level from.

`level_sampler(name) -> (env, sample_params)` where `sample_params(key)` is jittable.
Named grids always return their one level (`<grid>_18`: with the paper's 18 actions); chains draw a length and a good branch per
lifetime; "generated" draws from the level generator's training family and
"generated_heldout" from its disjoint held-out family, both seen as a state index (table
agents); "generated_vector" draws the training family seen as a vector (one-hot cell and
presence bits: the same state, for MLP agents); "generated_sparse_vector" draws one-goal levels
with 10-step episodes (`SPARSE_DISTRIBUTION`, rare rewards; whatever `distribution` is passed)
from the same training descriptors, seen as a vector; "generated_sparse_long_vector" the same
levels with 40-step episodes (`SPARSE_LONG_DISTRIBUTION`); "generated_sparse_long_cost_vector" those
levels, half of them cost levels (`SPARSE_LONG_COST_DISTRIBUTION`: the goal pays nothing, every step
costs 0.03 or 0.1); "generated_map" and "generated_map_heldout" the two families with objects
re-placed every episode (`RANDOM_PLACEMENT_DISTRIBUTION`, the paper's random grids), seen as
binary maps (conv agents).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax

from envs.chain import CHAIN_KINDS, DelayedChain, sample_chain
from envs.levels import EXTRA_GRIDS, NAMED_GRIDS, LevelDistribution, make_named_grid, sample_level
from envs.probe import ContextualBandit

DEFAULT_DISTRIBUTION = LevelDistribution()
# "<named grid>_18": the grid with the paper's 18 actions (9 moves x {collect, don't}).
COLLECT_SUFFIX = "_18"
# Rare rewards: one goal (reward 1, ends the episode) in a 7-11 x 7-11 grid with walls, episodes of
# 10 steps from a random cell, no other reward: a uniform policy reached the goal in 3.5-11% of its
# episodes on six sampled levels. The same train/held-out descriptor split as DEFAULT_DISTRIBUTION
# (same hash and split seed).
SPARSE_DISTRIBUTION = LevelDistribution(
    height_range=(7, 11), width_range=(7, 11), max_objects=1, num_kinds=1, reward_choices=(1.0,),
    p_terminate_choices=(1.0,), p_respawn_choices=(0.0,), max_steps_choices=(10,),
)
# The same levels with 40-step episodes, two 20-step rollouts: a uniform policy reaches the goal in
# 21% of them on average (10 steps: 7%; exact, 64 levels: results/lpg/l200long/uniform_goal_rate.py),
# and the steps that lead to a goal met in an episode's second rollout lie in the rollout before it,
# so an agent learns them only through what y carries across the rollout boundary (the credit a
# corridor with a far goal asks of network agents).
SPARSE_LONG_DISTRIBUTION = dataclasses.replace(SPARSE_DISTRIBUTION, max_steps_choices=(40,))
# The same levels, but half of them cost levels (LevelDistribution): the goal pays nothing and every
# step costs 0.03 or 0.1, so reaching the goal sooner is all that is worth anything (up to -1.2 or
# -4 in 40 steps). No other source has a reward that is only ever negative; rules meta-trained
# without one left agents at the uniform policy on such a task at three meta-seeds of five
# (`envs.transfer`'s step_cost_grid). Tried in place of generated_sparse_long_vector (session 26,
# results/lpg/transfer/README.md): every seed then solves that task, but two of three lose DeepSea.
SPARSE_LONG_COST_DISTRIBUTION = dataclasses.replace(SPARSE_LONG_DISTRIBUTION, step_cost_choices=(0.0, 0.0, 0.03, 0.1))
# Object positions re-drawn every episode (the paper's random grids) over the generator's levels, seen
# as binary maps [agent, walls, one channel per kind]: the source for conv agents, whose inputs are
# like MinAtar's frames. Same descriptors and split as DEFAULT_DISTRIBUTION.
RANDOM_PLACEMENT_DISTRIBUTION = dataclasses.replace(DEFAULT_DISTRIBUTION, placement="random")
# The level generator's sources: name -> (distribution, observation mode). A None distribution is
# the one passed to `level_sampler` (DEFAULT_DISTRIBUTION unless given); None obs mode: the state index.
_GENERATED_SOURCES = {
    "generated": (None, None),
    "generated_heldout": (None, None),
    "generated_vector": (None, "vector"),
    "generated_vector_heldout": (None, "vector"),
    "generated_sparse_vector": (SPARSE_DISTRIBUTION, "vector"),
    "generated_sparse_long_vector": (SPARSE_LONG_DISTRIBUTION, "vector"),
    "generated_sparse_long_cost_vector": (SPARSE_LONG_COST_DISTRIBUTION, "vector"),
    "generated_map": (RANDOM_PLACEMENT_DISTRIBUTION, "map"),
    "generated_map_heldout": (RANDOM_PLACEMENT_DISTRIBUTION, "map"),
}
GENERATED = tuple(_GENERATED_SOURCES)


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
        fixed, obs_mode = _GENERATED_SOURCES[name]
        distribution = fixed or distribution
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
