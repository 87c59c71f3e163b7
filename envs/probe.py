"""Tiny probe environments whose right answer is known, for fast learning tests.

`ContextualBandit`: S states, A actions, one-step episodes; in state s action
`best[s]` pays 1 with probability `p_good`, every other action with `p_bad`.
Observations are the state index (tabular). A learner that works reaches the
expected return `p_good`; a uniform policy gets `(p_good + (A-1) p_bad) / A`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    s: chex.Array
    time: chex.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    best: chex.Array = None  # [S] int, the paying action per state
    p_good: float = 0.9
    p_bad: float = 0.1
    max_steps_in_episode: int = 1


class ContextualBandit(environment.Environment):
    def __init__(self, num_states: int = 2, num_actions: int = 2):
        if num_states < 1 or num_actions < 2:
            raise ValueError(f"ContextualBandit needs num_states >= 1 and num_actions >= 2 "
                             f"(got {num_states}, {num_actions})")
        self.num_states, self._num_actions = num_states, num_actions

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(best=jnp.arange(self.num_states) % self._num_actions)

    def sample_params(self, key: chex.PRNGKey) -> ProbeParams:
        """A level with the paying actions drawn at random."""
        best = jax.random.randint(key, (self.num_states,), 0, self._num_actions)
        return self.default_params.replace(best=best)

    def step_env(self, key, state, action, params):
        p = jnp.where(action == params.best[state.s], params.p_good, params.p_bad)
        reward = jax.random.bernoulli(key, p).astype(jnp.float32)
        state = ProbeState(s=state.s, time=state.time + 1)
        return state.s, state, reward, jnp.bool_(True), {}

    def reset_env(self, key, params):
        s = jax.random.randint(key, (), 0, self.num_states)
        return s, ProbeState(s=s, time=jnp.zeros((), jnp.int32))

    @property
    def name(self) -> str:
        return "ContextualBandit"

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def action_space(self, params=None):
        return spaces.Discrete(self._num_actions)

    def observation_space(self, params=None):
        return spaces.Discrete(self.num_states)
