"""Environments by name: `make(name, **overrides) -> (env, env_params)`.

Project names: the ten named LPG grids (tabular_* with fixed placement and tabular
observations, random_* with random placement and map observations) and the delayed chains
(chain_short, chain_long, chain_short_noisy, chain_long_noisy, chain_distraction, chain_medium:
lengths 21-30, and chain_heldout: lengths 31-50, for evaluation). Any other
name registered with gymnax ("CartPole-v1", "Breakout-MinAtar", ...) goes to `gymnax.make`.

Grid overrides: obs_mode, collect_actions, max_steps, seed (fixed positions), env (a larger
GridWorld to pad the level into). Chain overrides: max_length (default 50, shared by all
kinds), seed (which per-lifetime draw of length / good branch; default 0), or explicit
length / good_action. Per-lifetime chain draws inside jit use `envs.chain.sample_chain`.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnax
import jax

from envs.chain import CHAIN_KINDS, DelayedChain, make_chain, sample_chain
from envs.levels import NAMED_GRIDS, make_named_grid

_REGISTRY: dict[str, Callable] = {}


def register(name: str, factory: Callable) -> None:
    """Register `factory(**overrides) -> (env, env_params)` under `name`."""
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Project environment names (gymnax names are accepted by `make` too)."""
    return sorted(_REGISTRY)


def make(name: str, **overrides):
    """(env, env_params) for a project name or a gymnax name."""
    if name in _REGISTRY:
        return _REGISTRY[name](**overrides)
    if name in gymnax.registered_envs:
        return gymnax.make(name, **overrides)
    raise ValueError(
        f"unknown environment {name!r}; project names: {names()}; "
        f"gymnax names: {list(gymnax.registered_envs)}"
    )


def _grid_factory(name: str) -> Callable:
    def factory(**overrides):
        return make_named_grid(name, **overrides)

    return factory


def _chain_factory(kind: str) -> Callable:
    _, _, noisy, obs_mode = CHAIN_KINDS[kind]

    def factory(max_length: int = 50, seed: int = 0, length=None, good_action=None):
        env = DelayedChain(max_length=max_length, obs_mode=obs_mode)
        params = sample_chain(jax.random.PRNGKey(seed), kind, max_length)
        if length is not None or good_action is not None:
            params = make_chain(
                env,
                length=int(params.length) if length is None else length,
                good_action=int(params.good_action) if good_action is None else good_action,
                noisy=noisy,
            )
        return env, params

    return factory


for _name in NAMED_GRIDS:
    register(_name, _grid_factory(_name))
for _kind in CHAIN_KINDS:
    register(f"chain_{_kind}", _chain_factory(_kind))
