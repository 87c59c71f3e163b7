"""A family of settings of one environment as one task distribution: every episode draws a setting.

    env, params = setting_mixture(make_swapped_bandit()[0],
                                  [make_swapped_bandit(reward_prob=p, max_steps_in_episode=T)[1]
                                   for p in (0.1, 0.3, 0.45) for T in (20, 100)])

`SettingMixture(env, params_list)` is a gymnax environment whose `reset` draws one of the
settings (uniformly, or with `weights`) and plays the episode with that setting's params; the
state remembers which (`state.index`) and `info` passes through. What the settings may differ in
is the params' values (a reward probability, a time limit `max_steps_in_episode`, ...), not their
shapes: observations and actions must be the same for all. An RL² agent trained on the mixture
meets every setting of the family, so a setting whose evidence is too weak to learn from alone
(`experiments/rl2_sweep.py`, the swapped bandit at p = 0.45) is learned through the others.
The mixture's own `max_steps_in_episode` is the longest setting's (every episode ends by then).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment


@struct.dataclass
class MixtureState(environment.EnvState):
    inner: Any  # the state of the setting's episode
    index: jax.Array  # () int: which setting this episode plays


@struct.dataclass
class MixtureParams(environment.EnvParams):
    settings: Any = None  # the settings' params, every leaf stacked [S, ...]
    weights: jax.Array = None  # [S] probabilities of drawing each setting


class SettingMixture(environment.Environment):
    """Episodes of `env`, each under one of `params_list`, drawn at reset (see the module doc)."""

    def __init__(self, env, params_list: Sequence[Any], weights: Sequence[float] | None = None):
        super().__init__()
        if len(params_list) < 1:
            raise ValueError("SettingMixture needs at least one setting's params")
        structures = {jax.tree.structure(p) for p in params_list}
        if len(structures) != 1:
            raise ValueError("every setting's params must be the same kind of params (one pytree structure)")
        spaces = {(repr(env.action_space(p)), repr(env.observation_space(p))) for p in params_list}
        if len(spaces) != 1:
            raise ValueError(f"the settings must share one action and observation space, got {sorted(spaces)}")
        if weights is not None and (len(weights) != len(params_list) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError("weights must be one non-negative number per setting, not all 0")
        self.env = env
        self.num_settings = len(params_list)
        self._settings = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *params_list)
        w = jnp.ones(len(params_list)) if weights is None else jnp.asarray(weights, jnp.float32)
        self._weights = w / w.sum()
        self._max_steps = max(int(p.max_steps_in_episode) for p in params_list)
        self._first = params_list[0]

    @property
    def name(self) -> str:
        return f"SettingMixture({self.env.name}, {self.num_settings} settings)"

    @property
    def default_params(self) -> MixtureParams:
        return MixtureParams(max_steps_in_episode=self._max_steps, settings=self._settings, weights=self._weights)

    @staticmethod
    def setting(params: MixtureParams, index: jax.Array) -> Any:
        """The params of setting `index`."""
        return jax.tree.map(lambda x: x[index], params.settings)

    def reset_env(self, key, params: MixtureParams):
        key_pick, key_reset = jax.random.split(key)
        index = jax.random.choice(key_pick, params.weights.shape[0], p=params.weights)
        obs, inner = self.env.reset_env(key_reset, self.setting(params, index))
        return obs, MixtureState(time=inner.time, inner=inner, index=index)

    def step_env(self, key, state: MixtureState, action, params: MixtureParams):
        obs, inner, reward, terminated, info = self.env.step_env(key, state.inner, action,
                                                                 self.setting(params, state.index))
        return obs, MixtureState(time=inner.time, inner=inner, index=state.index), reward, terminated, info

    def is_truncated(self, state: MixtureState, params: MixtureParams) -> jax.Array:
        return self.env.is_truncated(state.inner, self.setting(params, state.index))

    def get_obs(self, state: MixtureState, params: MixtureParams, key=None):
        return self.env.get_obs(state.inner, self.setting(params, state.index))

    @property
    def num_actions(self) -> int:
        return self.env.action_space(self._first).n

    def action_space(self, params=None):
        return self.env.action_space(self._first)

    def observation_space(self, params=None):
        return self.env.observation_space(self._first)


def setting_mixture(env, params_list: Sequence[Any], weights: Sequence[float] | None = None):
    """Factory: `(SettingMixture, its params)`."""
    mixture = SettingMixture(env, params_list, weights)
    return mixture, mixture.default_params
