"""Small environments written as a user would write them, for checking learned rules where they
never trained.

Each is a plain gymnax `Environment` with vector observations (so agents are networks trained with
Adam, as on Catch), written through the README's Python API and passing `envs.check`. No
meta-training source, validation set or held-out suite uses them; they were fixed before any rule
was run on them (session 26), to compare rules on kinds of task the suite does not hold:

* `keydoor`: 7 cells, start in cell 3; a key in cell 0; cell 6 is a door that pays 1 and ends the
  episode only once the key is held. Observation: the cell (one-hot) and the key flag. The optimal
  policy goes left 3 cells, then right 6: return 1 in 9 steps (time limit 40); going right first
  pays nothing. Credit crosses a subgoal.
* `keydoor_reward10`: the same, the door paying 10: a reward scale no training source has.
* `noisy_contexts`: one-step episodes; one of 4 contexts (one-hot), 3 actions; the context's good
  action (context mod 3) pays 1, the others 0, plus Gaussian noise of standard deviation 1 on every
  reward. Optimal mean return 1, the uniform policy 1/3. Sharpening a policy under noisy rewards.
* `step_cost_grid`: a 5x5 open grid, start in a corner, every step costs 0.1 until the opposite
  corner ends the episode (time limit 50); observation: the cell (one-hot), 4 moves. Only costs, no
  reward: optimal return -0.8 (8 steps).

Registered by name (`envs.make("keydoor")`), so every command takes them, e.g.
`python -m experiments.evaluate --rule RULE --envs keydoor noisy_contexts step_cost_grid`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class KeyDoorState(environment.EnvState):
    pos: jnp.ndarray
    has_key: jnp.ndarray


@struct.dataclass
class KeyDoorParams(environment.EnvParams):
    door_reward: float = 1.0
    max_steps_in_episode: int = 40


class KeyDoor(environment.Environment):
    """A corridor whose far end pays only after a detour to fetch a key (module docstring)."""

    num_cells, start = 7, 3

    @property
    def default_params(self) -> KeyDoorParams:
        return KeyDoorParams()

    def _obs(self, state: KeyDoorState) -> jnp.ndarray:
        return jnp.concatenate([jax.nn.one_hot(state.pos, self.num_cells), state.has_key[None].astype(jnp.float32)])

    def step_env(self, key, state, action, params):
        pos = jnp.clip(state.pos + jnp.where(action == 1, 1, -1), 0, self.num_cells - 1)
        opened = (pos == self.num_cells - 1) & state.has_key
        state = KeyDoorState(pos=pos, has_key=state.has_key | (pos == 0), time=state.time + 1)
        reward = jnp.where(opened, params.door_reward, 0.0)
        return self._obs(state), state, reward, opened, {}  # gymnax ends an episode at its time limit

    def reset_env(self, key, params):
        state = KeyDoorState(pos=jnp.int32(self.start), has_key=jnp.bool_(False), time=jnp.int32(0))
        return self._obs(state), state

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (self.num_cells + 1,))


@struct.dataclass
class ContextState(environment.EnvState):
    context: jnp.ndarray


@struct.dataclass
class ContextParams(environment.EnvParams):
    noise: float = 1.0
    max_steps_in_episode: int = 1


class NoisyContexts(environment.Environment):
    """One-step episodes: the context's good action pays 1 + noise, the others 0 + noise."""

    num_contexts, num_moves = 4, 3

    @property
    def default_params(self) -> ContextParams:
        return ContextParams()

    def step_env(self, key, state, action, params):
        good = action == state.context % self.num_moves
        reward = good.astype(jnp.float32) + params.noise * jax.random.normal(key)
        state = ContextState(context=state.context, time=state.time + 1)
        return jax.nn.one_hot(state.context, self.num_contexts), state, reward, jnp.bool_(True), {}

    def reset_env(self, key, params):
        context = jax.random.randint(key, (), 0, self.num_contexts)
        return jax.nn.one_hot(context, self.num_contexts), ContextState(context=context, time=jnp.int32(0))

    def action_space(self, params=None):
        return spaces.Discrete(self.num_moves)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (self.num_contexts,))


@struct.dataclass
class CostGridState(environment.EnvState):
    row: jnp.ndarray
    col: jnp.ndarray


@struct.dataclass
class CostGridParams(environment.EnvParams):
    step_cost: float = 0.1
    max_steps_in_episode: int = 50


class StepCostGrid(environment.Environment):
    """A 5x5 open grid: every step costs `step_cost` until the corner opposite the start."""

    size = 5
    moves = jnp.array([[-1, 0], [1, 0], [0, -1], [0, 1]])

    @property
    def default_params(self) -> CostGridParams:
        return CostGridParams()

    def _obs(self, state: CostGridState) -> jnp.ndarray:
        return jax.nn.one_hot(state.row * self.size + state.col, self.size * self.size)

    def step_env(self, key, state, action, params):
        row = jnp.clip(state.row + self.moves[action, 0], 0, self.size - 1)
        col = jnp.clip(state.col + self.moves[action, 1], 0, self.size - 1)
        state = CostGridState(row=row, col=col, time=state.time + 1)
        at_goal = (row == self.size - 1) & (col == self.size - 1)
        return self._obs(state), state, -params.step_cost * jnp.ones(()), at_goal, {}

    def reset_env(self, key, params):
        state = CostGridState(row=jnp.int32(0), col=jnp.int32(0), time=jnp.int32(0))
        return self._obs(state), state

    def action_space(self, params=None):
        return spaces.Discrete(4)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (self.size * self.size,))


ENVIRONMENTS = {
    "keydoor": lambda: (KeyDoor(), KeyDoor().default_params),
    "keydoor_reward10": lambda: (KeyDoor(), KeyDoorParams(door_reward=10.0)),
    "noisy_contexts": lambda: (NoisyContexts(), NoisyContexts().default_params),
    "step_cost_grid": lambda: (StepCostGrid(), StepCostGrid().default_params),
}
