"""Object-collection grid worlds of LPG (Oh et al. 2020, Appendix A) as one gymnax environment.

One `GridWorld` (static shapes: max grid size, max objects, number of object kinds,
observation mode, action set) runs every grid of the paper; the level itself
(walls, size, objects, placement, episode length) lives in `GridParams`, so a batch
of *different* levels is a `jax.vmap` over params.

Conventions
- Cells are flat indices `cell = row * max_width + col` of the padded `[max_height, max_width]`
  array; cells outside the level's real `height x width` are walls, and so is everything
  outside the array (moves off the array are blocked).
- Actions: `move = action % 9` with `MOVES[move]` a (drow, dcol) step (0 = stay, then
  N, NE, E, SE, S, SW, W, NW); with `collect_actions=True` there are 18 actions and
  `action // 9` is the collect flag: an object is collected only when the flag is set.
- A step: move (blocked by walls/edges) -> collect the present object on the new cell
  (reward, the object disappears, the episode terminates with its p_terminate) ->
  every object that was absent *before* this step reappears with its p_respawn (so a
  collected object is gone for at least one step and its presence bit means something).
  Objects never appear under the agent: a fixed-placement object whose cell holds the
  agent waits; a random-placement object lands on a uniformly random free cell
  (not wall, not agent, not another present object).
- Reset: all active objects present, at their fixed cells or at fresh distinct free cells
  (random placement); the agent at a uniformly random free cell not holding an object.
- Observations: "tabular" -> int32 `cell * 2**max_objects + sum_i present_i 2**i`
  (`env.num_states` of them); "map" -> float32 `[2 + num_kinds, max_height, max_width]`
  binary channels [agent, walls, one per object kind]; "vector" -> float32
  `[num_cells + max_objects]`: one-hot of the agent's cell then the presence bits, the
  tabular state as a vector for network agents (Markov for fixed placement, like "tabular").
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

# (drow, dcol) of each move; index 0 is "stay".
MOVES = np.array(
    [[0, 0], [-1, 0], [-1, 1], [0, 1], [1, 1], [1, 0], [1, -1], [0, -1], [-1, -1]],
    dtype=np.int32,
)
NUM_MOVES = len(MOVES)
OBS_MODES = ("tabular", "map", "vector")
PLACEMENTS = ("fixed", "random")
_UNUSED = np.int32(2**30)  # a rank above every real rank: "no cell"


@struct.dataclass(kw_only=True)
class GridParams(environment.EnvParams):
    """One level, padded to the env's static maxima. Every field is an array (vmappable).

    walls [Hmax, Wmax] bool; height, width int32 scalars; per object (length max_objects):
    obj_active bool (padding mask), obj_kind int32, obj_reward / obj_p_terminate /
    obj_p_respawn float32, obj_pos [N, 2] int32 (row, col; used by fixed placement);
    random_placement bool scalar; max_steps_in_episode int32 scalar; step_reward float32 scalar,
    paid on every step on top of what the objects pay (0 but on the generator's cost levels).
    """

    walls: jax.Array
    height: jax.Array
    width: jax.Array
    obj_active: jax.Array
    obj_kind: jax.Array
    obj_reward: jax.Array
    obj_p_terminate: jax.Array
    obj_p_respawn: jax.Array
    obj_pos: jax.Array
    random_placement: jax.Array
    max_steps_in_episode: jax.Array = 500
    step_reward: jax.Array = np.float32(0.0)


@struct.dataclass
class GridState(environment.EnvState):
    """agent_cell int32 flat cell; obj_cell [N] int32 flat cells; obj_present [N] bool."""

    agent_cell: jax.Array
    obj_cell: jax.Array
    obj_present: jax.Array
    time: jax.Array


class GridWorld(environment.Environment[GridState, GridParams]):
    """Grid world with objects; see the module docstring for the exact dynamics."""

    channels_first = True  # "map" observations are [C, H, W]

    def __init__(
        self,
        max_height: int,
        max_width: int,
        max_objects: int,
        num_kinds: int = 1,
        obs_mode: str = "tabular",
        collect_actions: bool = False,
    ):
        super().__init__()
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}; allowed: {OBS_MODES}")
        if int(max_height) < 1 or int(max_width) < 1:
            raise ValueError(
                f"max_height and max_width must be >= 1, got {max_height}x{max_width}"
            )
        if int(max_objects) < 0:
            raise ValueError(f"max_objects must be >= 0, got {max_objects}")
        if int(num_kinds) < 1:
            raise ValueError(f"num_kinds must be >= 1, got {num_kinds}")
        self.max_height = int(max_height)
        self.max_width = int(max_width)
        self.max_objects = int(max_objects)
        self.num_kinds = int(num_kinds)
        self.obs_mode = obs_mode
        self.collect_actions = bool(collect_actions)
        self.num_cells = self.max_height * self.max_width
        self.num_states = self.num_cells * 2**self.max_objects
        if obs_mode == "tabular" and self.num_states >= 2**31:
            raise ValueError(
                f"tabular observation needs {self.num_states} states, more than int32 "
                "holds; lower max_objects or the grid size, or use obs_mode='map'"
            )
        self._bits = (2 ** np.arange(self.max_objects)).astype(np.int32)
        self._cells = np.arange(self.num_cells, dtype=np.int32)
        if self.num_cells > 2**20:  # cell draws use 24 random bits
            raise ValueError(f"grid of {self.num_cells} cells is too large (at most 2**20)")

    def __repr__(self) -> str:
        return (
            f"GridWorld(max_height={self.max_height}, max_width={self.max_width}, "
            f"max_objects={self.max_objects}, num_kinds={self.num_kinds}, "
            f"obs_mode={self.obs_mode!r}, collect_actions={self.collect_actions})"
        )

    # Static identity makes the env usable as a static jit argument and dict key.
    def _key(self):
        return (
            self.max_height, self.max_width, self.max_objects, self.num_kinds,
            self.obs_mode, self.collect_actions,
        )

    def __eq__(self, other):
        return isinstance(other, GridWorld) and self._key() == other._key()

    def __hash__(self):
        return hash(("GridWorld",) + self._key())

    @property
    def name(self) -> str:
        return "GridWorld"

    @property
    def num_actions(self) -> int:
        return NUM_MOVES * (2 if self.collect_actions else 1)

    @property
    def default_params(self) -> GridParams:
        """The full-size empty grid with one [1, 1, 0] object (if any fit)."""
        objects = [(1.0, 1.0, 0.0)] if self.max_objects >= 1 else []
        placement = "random" if self.obs_mode == "map" else "fixed"
        return make_level(
            self, self.max_height, self.max_width, objects,
            placement=placement, max_steps=100, seed=0,
        )

    def action_space(self, params: GridParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: GridParams | None = None):
        if self.obs_mode == "tabular":
            return spaces.Discrete(self.num_states)
        if self.obs_mode == "vector":
            return spaces.Box(0.0, 1.0, (self.num_cells + self.max_objects,), jnp.float32)
        return spaces.Box(
            0.0, 1.0, (2 + self.num_kinds, self.max_height, self.max_width), jnp.float32
        )

    # ------------------------------------------------------------------ dynamics
    # Speed notes. gymnax's `step` runs `reset_env` on every step (for the auto-reset) and both
    # are vmapped over thousands of streams, so both must be cheap:
    # - Cells are drawn by rank in a sorted list of open cells (`_open_cells`), skipping the
    #   ranks already taken (`_skip_taken`): O(objects^2) scalar work instead of scoring all
    #   cells. The list depends on the level only (loop-invariant inside a rollout).
    # - One `jax.random.bits` call feeds a whole step, auto-reset included (`step` below),
    #   where gymnax splits the key and the old code drew three times.
    # Same distributions as scoring every cell; the random stream per key differs.
    def _uniform_index(self, bits, n):
        """floor(u * n) for u = uniform [0, 1) from 24 of `bits`; in [0, n - 1]."""
        u = (bits >> 8).astype(jnp.float32) * (1.0 / 2**24)
        return jnp.minimum((u * n).astype(jnp.int32), n - 1)

    def _fixed_cells(self, params: GridParams):
        return (params.obj_pos[:, 0] * self.max_width + params.obj_pos[:, 1]).astype(jnp.int32)

    def _open_cells(self, params: GridParams):
        """Cells a reset may fill: not walls and not holding a fixed-placement object.

        Returns (cells [num_cells] in increasing order, padded; count; rank [num_cells] with
        rank[c] = number of open cells before c). With random placement these are all free
        cells, which is also where respawning objects go.
        """
        fixed = params.obj_active & ~params.random_placement
        on_fixed = jnp.any(
            (self._fixed_cells(params)[:, None] == self._cells[None, :]) & fixed[:, None], axis=0
        )
        is_open = ~params.walls.reshape(-1) & ~on_fixed
        rank = jnp.cumsum(is_open.astype(jnp.int32)) - is_open
        count = rank[-1] + is_open[-1]
        cells = jnp.zeros(self.num_cells, jnp.int32).at[jnp.where(is_open, rank, self.num_cells)].set(
            self._cells, mode="drop"
        )
        return cells, count, rank

    @staticmethod
    def _skip_taken(r, taken):
        """The r-th (from 0) rank not in `taken` (distinct ranks; unused slots hold _UNUSED).

        A taken rank t has c(t) = t - #{taken ranks below t} free ranks before it, and it lies
        before the answer iff c(t) <= r, so the answer is r + #{t: c(t) <= r}: one small
        [k, k] comparison instead of a loop (fewer ops to compile under nested vmaps).
        """
        below = jnp.sum((taken[None, :] < taken[:, None]).astype(jnp.int32), axis=1)
        return r + jnp.sum((taken - below <= r).astype(jnp.int32))

    def _draw_ranks(self, bits, count, taken, draw):
        """Distinct uniform ranks in [0, count), one per entry of `draw` [k] (entry i avoids
        `taken` and the ranks drawn by earlier entries j with draw[j]); [k], _UNUSED where not drawn."""
        num_taken = jnp.sum((taken != _UNUSED).astype(jnp.int32))
        drawn = []
        for i in range(draw.shape[0]):
            rank = self._skip_taken(self._uniform_index(bits[i], count - num_taken), taken)
            rank = jnp.where(draw[i], rank, _UNUSED)
            drawn.append(rank)
            taken = jnp.concatenate([taken, rank[None]])
            num_taken = num_taken + draw[i].astype(jnp.int32)
        return jnp.stack(drawn) if drawn else jnp.zeros((0,), jnp.int32)

    @property
    def _num_step_bits(self) -> int:
        return 1 + 2 * self.max_objects  # termination, respawn rolls, respawn cells

    @property
    def _num_reset_bits(self) -> int:
        return self.max_objects + 1  # object cells, agent cell

    def _step(self, bits, state: GridState, action, params: GridParams):
        N = self.max_objects
        u = (bits[: 1 + N] >> 8).astype(jnp.float32) * (1.0 / 2**24)  # uniforms in [0, 1)
        action = jnp.asarray(action, jnp.int32)
        move = action % NUM_MOVES
        collect = (action >= NUM_MOVES) if self.collect_actions else jnp.bool_(True)
        walls = params.walls.reshape(-1)

        row = state.agent_cell // self.max_width
        col = state.agent_cell % self.max_width
        delta = jnp.asarray(MOVES)[move]
        new_row, new_col = row + delta[0], col + delta[1]
        inside = (
            (new_row >= 0) & (new_row < self.max_height)
            & (new_col >= 0) & (new_col < self.max_width)
        )
        target = (
            jnp.clip(new_row, 0, self.max_height - 1) * self.max_width
            + jnp.clip(new_col, 0, self.max_width - 1)
        )
        agent_cell = jnp.where(inside & ~walls[target], target, state.agent_cell)

        hit = state.obj_present & (state.obj_cell == agent_cell) & collect
        reward = (jnp.sum(jnp.where(hit, params.obj_reward, 0.0)) + params.step_reward).astype(jnp.float32)
        p_terminate = jnp.sum(jnp.where(hit, params.obj_p_terminate, 0.0))
        terminated = u[0] < p_terminate
        present = state.obj_present & ~hit

        # Respawn only objects absent before this step.
        absent = params.obj_active & ~state.obj_present
        roll = u[1 : 1 + N] < params.obj_p_respawn
        respawn = absent & roll
        # Fixed placement: the object waits while the agent stands on its cell.
        respawn = respawn & (params.random_placement | (state.obj_cell != agent_cell))
        # Random placement: each respawning object takes a distinct free cell, not under the
        # agent or a present object (with random placement, open cells = free cells).
        relocate = respawn & params.random_placement
        cells, count, rank = self._open_cells(params)
        blocking = present & (state.obj_cell != agent_cell)  # an object under the agent counts once
        taken = jnp.concatenate(
            [rank[agent_cell][None], jnp.where(blocking, rank[state.obj_cell], _UNUSED)]
        )
        drawn = self._draw_ranks(bits[1 + N :], count, taken, relocate)
        obj_cell = jnp.where(relocate, cells[jnp.minimum(drawn, self.num_cells - 1)], state.obj_cell)
        present = present | respawn

        state = GridState(
            agent_cell=agent_cell,
            obj_cell=obj_cell,
            obj_present=present,
            time=state.time + 1,
        )
        return self.get_obs(state, params), state, reward, terminated, {}

    def _reset(self, bits, params: GridParams):
        # Objects first (random placement), then the agent among the open cells left.
        cells, count, _ = self._open_cells(params)
        place = params.obj_active & params.random_placement
        taken = jnp.zeros((0,), jnp.int32)
        ranks = self._draw_ranks(bits, count, taken, jnp.concatenate([place, jnp.ones(1, bool)]))
        picked = cells[jnp.minimum(ranks, self.num_cells - 1)]
        state = GridState(
            agent_cell=picked[-1],
            obj_cell=jnp.where(params.random_placement, picked[:-1], self._fixed_cells(params)),
            obj_present=params.obj_active.astype(bool),
            time=jnp.int32(0),
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state: GridState, action, params: GridParams):
        return self._step(jax.random.bits(key, (self._num_step_bits,), jnp.uint32), state, action, params)

    def reset_env(self, key, params: GridParams):
        return self._reset(jax.random.bits(key, (self._num_reset_bits,), jnp.uint32), params)

    @functools.partial(jax.jit, static_argnames=("self",))
    def step(self, key, state: GridState, action, params: GridParams | None = None):
        """gymnax's auto-resetting step (same outputs and info), drawing the random bits of
        the step and of the reset in one call instead of splitting the key and drawing twice."""
        if params is None:
            params = self.default_params
        bits = jax.random.bits(key, (self._num_step_bits + self._num_reset_bits,), jnp.uint32)
        obs_st, state_st, reward, terminated, info = self._step(
            bits[: self._num_step_bits], state, action, params
        )
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self._reset(bits[self._num_step_bits :], params)
        state = jax.tree.map(lambda x, y: jax.lax.select(done, x, y), state_re, state_st)
        obs = jax.tree.map(lambda x, y: jax.lax.select(done, x, y), obs_re, obs_st)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    def get_obs(self, state: GridState, params: GridParams = None, key=None):
        if self.obs_mode == "tabular":
            bits = jnp.sum(jnp.where(state.obj_present, self._bits, 0))
            return (state.agent_cell * 2**self.max_objects + bits).astype(jnp.int32)
        cells = jnp.arange(self.num_cells)
        agent = (cells == state.agent_cell).astype(jnp.float32)
        if self.obs_mode == "vector":
            return jnp.concatenate([agent, state.obj_present.astype(jnp.float32)])
        onehot = (state.obj_cell[:, None] == cells[None, :]) & state.obj_present[:, None]
        kinds = jax.nn.one_hot(params.obj_kind, self.num_kinds, dtype=jnp.float32)
        objects = jnp.minimum(kinds.T @ onehot.astype(jnp.float32), 1.0)  # [K, cells]
        channels = jnp.concatenate(
            [agent[None], params.walls.reshape(1, -1).astype(jnp.float32), objects], axis=0
        )
        return channels.reshape(2 + self.num_kinds, self.max_height, self.max_width)

    def is_terminated(self, state, params):  # termination is a random event of the step
        return jnp.bool_(False)


# ---------------------------------------------------------------------- host-side builders
@dataclasses.dataclass(frozen=True)
class LevelSpec:
    """Host-side description of a level; `build(env)` turns it into `GridParams`.

    objects: ((reward, p_terminate, p_respawn), ...); kinds: one int per object or None
    (then objects with equal tuples share a kind, numbered by first appearance);
    walls: tuple of tuples of bool [height][width] or None; positions: ((row, col), ...)
    or None (then fixed positions are drawn from `seed`).
    """

    height: int
    width: int
    objects: tuple = ()
    walls: Any = None
    placement: str = "fixed"
    max_steps: int = 500
    seed: int = 0
    kinds: tuple | None = None
    positions: tuple | None = None

    def kind_ids(self) -> list[int]:
        return _kind_ids(self.objects, self.kinds)

    def build(self, env: GridWorld) -> GridParams:
        return make_level(
            env, self.height, self.width, self.objects, walls=self.walls,
            placement=self.placement, max_steps=self.max_steps, seed=self.seed,
            kinds=self.kinds, positions=self.positions,
        )


def _kind_ids(objects, kinds) -> list[int]:
    if kinds is not None:
        return [int(k) for k in kinds]
    seen: dict[tuple, int] = {}
    return [seen.setdefault(tuple(float(x) for x in o), len(seen)) for o in objects]


def smallest_gridworld(
    specs: Sequence[LevelSpec], obs_mode: str = "tabular", collect_actions: bool = False
) -> GridWorld:
    """The smallest GridWorld whose static maxima fit every level in `specs`."""
    if not specs:
        raise ValueError("smallest_gridworld needs at least one LevelSpec")
    return GridWorld(
        max_height=max(s.height for s in specs),
        max_width=max(s.width for s in specs),
        max_objects=max(len(s.objects) for s in specs),
        num_kinds=max([1] + [max(s.kind_ids(), default=0) + 1 for s in specs]),
        obs_mode=obs_mode,
        collect_actions=collect_actions,
    )


def _connected(free: np.ndarray) -> bool:
    """Whether the free cells form one 8-connected region (the agent moves diagonally)."""
    cells = list(zip(*np.nonzero(free)))
    if not cells:
        return False
    seen = {cells[0]}
    stack = [cells[0]]
    h, w = free.shape
    while stack:
        r, c = stack.pop()
        for dr, dc in MOVES[1:]:
            nb = (r + dr, c + dc)
            if 0 <= nb[0] < h and 0 <= nb[1] < w and free[nb] and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return len(seen) == len(cells)


def make_level(
    env: GridWorld,
    height: int,
    width: int,
    objects: Sequence[Sequence[float]] = (),
    walls=None,
    placement: str = "fixed",
    max_steps: int = 500,
    seed: int = 0,
    kinds: Sequence[int] | None = None,
    positions: Sequence[Sequence[int]] | None = None,
) -> GridParams:
    """Validated `GridParams` for `env` (host side; raises ValueError on a bad level).

    objects: [(reward, p_terminate, p_respawn), ...]; walls: bool [height, width] of interior
    walls (True = wall) or None; placement "fixed" (positions drawn once from `seed`, or
    given by `positions`) or "random" (re-drawn each episode); max_steps: episode length.
    """
    height, width = int(height), int(width)
    if not (1 <= height <= env.max_height and 1 <= width <= env.max_width):
        raise ValueError(
            f"level size {height}x{width} does not fit the env: height must be in "
            f"[1, {env.max_height}] and width in [1, {env.max_width}]"
        )
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; allowed: {PLACEMENTS}")
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    objects = [tuple(float(x) for x in o) for o in objects]
    n = len(objects)
    if n > env.max_objects:
        raise ValueError(
            f"{n} objects given but the env holds at most max_objects={env.max_objects}"
        )
    for i, o in enumerate(objects):
        if len(o) != 3:
            raise ValueError(f"object {i} must be (reward, p_terminate, p_respawn), got {o}")
        for name, p in zip(("p_terminate", "p_respawn"), o[1:]):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"object {i}: {name}={p} is not a probability in [0, 1]")
    kind_ids = _kind_ids(objects, kinds)
    if len(kind_ids) != n:
        raise ValueError(f"kinds has {len(kind_ids)} entries for {n} objects")
    if any(k < 0 for k in kind_ids) or (
        env.obs_mode == "map" and any(k >= env.num_kinds for k in kind_ids)
    ):  # kinds only shape the map observation
        raise ValueError(f"object kinds {kind_ids} must be in [0, num_kinds={env.num_kinds})")

    wall_grid = np.zeros((height, width), bool)
    if walls is not None:
        wall_grid = np.asarray(walls, dtype=bool)
        if wall_grid.shape != (height, width):
            raise ValueError(f"walls must have shape ({height}, {width}), got {wall_grid.shape}")
    free = ~wall_grid
    num_free = int(free.sum())
    if num_free < n + 1:
        raise ValueError(
            f"{num_free} free cells cannot hold the agent and {n} objects; "
            f"need at least {n + 1}"
        )
    if not _connected(free):
        raise ValueError("walls must leave the free cells connected (8-connectivity)")

    if positions is not None:
        pos = np.asarray(positions, dtype=np.int32).reshape(-1, 2)
        if len(pos) != n:
            raise ValueError(f"positions has {len(pos)} entries for {n} objects")
        if len({tuple(p) for p in pos}) != n:
            raise ValueError(f"object positions must be distinct, got {pos.tolist()}")
        for p in pos:
            if not (0 <= p[0] < height and 0 <= p[1] < width) or wall_grid[p[0], p[1]]:
                raise ValueError(f"object position {tuple(p)} is outside the level or on a wall")
    else:
        free_cells = np.argwhere(free)
        pick = np.random.default_rng(seed).choice(len(free_cells), size=n, replace=False)
        pos = free_cells[np.sort(pick)].astype(np.int32).reshape(-1, 2)

    N = env.max_objects
    padded_walls = np.ones((env.max_height, env.max_width), bool)
    padded_walls[:height, :width] = wall_grid

    def pad(values, dtype, fill=0):
        out = np.full((N,) + np.shape(values)[1:], fill, dtype)
        out[: len(values)] = values
        return jnp.asarray(out)

    obj = np.asarray(objects, np.float32).reshape(-1, 3)
    return GridParams(
        walls=jnp.asarray(padded_walls),
        height=jnp.int32(height),
        width=jnp.int32(width),
        obj_active=pad(np.ones(n, bool), bool, False),
        obj_kind=pad(np.asarray(kind_ids, np.int32), np.int32),
        obj_reward=pad(obj[:, 0], np.float32),
        obj_p_terminate=pad(obj[:, 1], np.float32),
        obj_p_respawn=pad(obj[:, 2], np.float32),
        obj_pos=jnp.asarray(
            np.concatenate([pos, np.zeros((N - n, 2), np.int32)]).reshape(N, 2)
        ),
        random_placement=jnp.bool_(placement == "random"),
        max_steps_in_episode=jnp.int32(max_steps),
        step_reward=jnp.float32(0.0),
    )


def stack_params(params: Sequence[GridParams]) -> GridParams:
    """Stack levels of one env along a new leading axis (for vmap)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *params)
