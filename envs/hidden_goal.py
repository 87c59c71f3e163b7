"""Hidden-goal grid: an open grid whose rewarding cell is one of G candidates, unknown.

One gymnax episode is one trial: the goal is drawn uniformly from the candidates in
`reset` and stays fixed for `params.max_steps_in_episode` steps (truncation). Reaching
the goal pays +1 and puts the agent back on the start cell: a new *inner* episode of
the same trial, signalled by a flag in the observation. The exact posterior over the
candidates is uniform over those not yet ruled out (a candidate entered without reward
is ruled out; entering the goal collapses the posterior onto it).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

# Actions: 0 up, 1 right, 2 down, 3 left, 4 stay; (row, col) offsets.
ACTION_DELTAS = jnp.array([[-1, 0], [0, 1], [1, 0], [0, -1], [0, 0]], jnp.int32)


@struct.dataclass
class HiddenGoalState(environment.EnvState):
    pos: jax.Array  # [2] (row, col) of the agent
    goal: jax.Array  # () index of the goal among the candidates (the task)
    alive: jax.Array  # [G] bool, candidates not yet ruled out
    posterior: jax.Array  # [G] uniform over `alive`
    new_episode: jax.Array  # () bool, this observation starts an inner episode


@struct.dataclass
class HiddenGoalParams:
    candidates: jax.Array  # [G, 2] (row, col) of the candidate goal cells
    start: jax.Array  # [2] (row, col) of the start cell; must not be a candidate
    max_steps_in_episode: int = 50  # T, steps per trial


def corner_candidates(size: int) -> np.ndarray:
    """The four corners of a `size` x `size` grid, `[4, 2]`."""
    last = size - 1
    return np.array([[0, 0], [0, last], [last, 0], [last, last]], np.int32)


class HiddenGoalGrid(environment.Environment[HiddenGoalState, HiddenGoalParams]):
    """`size` x `size` open grid (moving into the border leaves the agent in place).

    Observation (float32, `size * size + 1 (+ G)`): one-hot of the agent's cell
    (index `row * size + col`), then 1.0 if this observation is the first of an inner
    episode (the trial's first step, or the step right after the goal was reached)
    else 0.0; with `reveal_task=True` a one-hot of the goal among the G candidates
    follows (for the oracle baseline).

    The constructor's `candidates` (default: the 4 corners) and `start` (default: the
    centre cell) fill `default_params`; G = len(candidates) is fixed by the constructor,
    the cells themselves are params, so different layouts can be vmapped.
    """

    def __init__(
        self,
        size: int = 5,
        candidates: Sequence[Sequence[int]] | None = None,
        start: Sequence[int] | None = None,
        reveal_task: bool = False,
    ):
        super().__init__()
        self.size = size
        self.candidates = np.asarray(
            corner_candidates(size) if candidates is None else candidates, np.int32
        )
        self.start = np.asarray((size // 2, size // 2) if start is None else start, np.int32)
        if (self.candidates == self.start).all(-1).any():
            raise ValueError("the start cell must not be a goal candidate")
        if ((self.candidates < 0) | (self.candidates >= size)).any():
            raise ValueError("candidate cells must lie inside the grid")
        self.num_candidates = len(self.candidates)
        self.reveal_task = reveal_task

    @property
    def default_params(self) -> HiddenGoalParams:
        return HiddenGoalParams(
            candidates=jnp.asarray(self.candidates), start=jnp.asarray(self.start)
        )

    @property
    def name(self) -> str:
        return f"HiddenGoalGrid-{self.size}x{self.size}-G{self.num_candidates}"

    @property
    def num_actions(self) -> int:
        return 5

    def get_obs(self, state: HiddenGoalState, params: HiddenGoalParams, key=None):
        cell = jax.nn.one_hot(state.pos[0] * self.size + state.pos[1], self.size**2)
        parts = [cell, state.new_episode.astype(jnp.float32)[None]]
        if self.reveal_task:
            parts.append(jax.nn.one_hot(state.goal, self.num_candidates))
        return jnp.concatenate(parts).astype(jnp.float32)

    def reset_env(self, key: jax.Array, params: HiddenGoalParams):
        goal = jax.random.randint(key, (), 0, self.num_candidates)
        alive = jnp.ones((self.num_candidates,), bool)
        state = HiddenGoalState(
            time=jnp.zeros((), jnp.int32),
            pos=params.start.astype(jnp.int32),
            goal=goal,
            alive=alive,
            posterior=alive / self.num_candidates,
            new_episode=jnp.array(True),
        )
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: HiddenGoalState, action, params: HiddenGoalParams):
        entered = jnp.clip(state.pos + ACTION_DELTAS[action], 0, self.size - 1)
        at_candidate = (params.candidates == entered).all(-1)  # [G]
        found = at_candidate[state.goal]
        alive = jnp.where(found, at_candidate, state.alive & ~at_candidate)
        posterior = alive / alive.sum()
        state = state.replace(
            time=state.time + 1,
            pos=jnp.where(found, params.start.astype(jnp.int32), entered),
            alive=alive,
            posterior=posterior,
            new_episode=found,
        )
        reward = found.astype(jnp.float32)
        obs = self.get_obs(state, params)
        return obs, state, reward, jnp.array(False), {"posterior": posterior}

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.array(False)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(5)

    def observation_space(self, params) -> spaces.Box:
        size = self.size**2 + 1 + (self.num_candidates if self.reveal_task else 0)
        return spaces.Box(0.0, 1.0, (size,), jnp.float32)


def make_hidden_goal(
    size: int = 5,
    candidates: Sequence[Sequence[int]] | None = None,
    start: Sequence[int] | None = None,
    reveal_task: bool = False,
    **param_overrides,
):
    """Factory: `(HiddenGoalGrid, params)`; `param_overrides` set `HiddenGoalParams` fields."""
    env = HiddenGoalGrid(size=size, candidates=candidates, start=start, reveal_task=reveal_task)
    return env, env.default_params.replace(**param_overrides)


ENVIRONMENTS = {"hidden_goal": make_hidden_goal}
