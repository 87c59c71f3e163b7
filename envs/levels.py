"""The named LPG grids (paper, Appendix A) and a seeded generator of training / held-out levels.

Named grids (`NAMED_GRIDS`): sizes are the walkable area (no interior walls; the grid's edge
is the border). Objects are (reward, p_terminate, p_respawn). Tabular grids use fixed
placement with positions drawn once by `numpy.random.default_rng(zlib.crc32(name))` over
the free cells, so they are the same in every run; random grids re-draw positions every
episode.

Generator (`sample_level`): a level is described by the discrete descriptor
(height, width, number of objects). The held-out family is a fixed pseudo-random subset of
descriptors (an integer hash of the descriptor and `split_seed`, a `heldout_fraction` of
them) *minus* every descriptor a named grid uses (`NAMED_DESCRIPTORS`: `NAMED_GRIDS` and
`EXTRA_GRIDS`), so a rule meta-trained on named grids or on the training family never sees
a level of a held-out shape. `sample_level(key, dist, "train")` only draws descriptors
outside the hashed subset and `sample_level(key, dist, "heldout")` only from the held-out
family, so the families are disjoint by construction (a hashed descriptor of a named grid
is in neither), and `is_heldout(params, dist)` recomputes the membership from the level.

Walls of generated levels are horizontal segments on odd rows, each odd row keeping at least
one gap cell. Even rows stay fully free, every odd-row cell touches an even row, and
consecutive even rows meet through the gap, so the free cells are always 4-connected
(every object is reachable from everywhere).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from envs.gridworld import GridParams, GridWorld, LevelSpec, smallest_gridworld

_DENSE = ((1.0, 0.0, 0.05),) * 2 + ((-1.0, 0.5, 0.1), (-1.0, 0.0, 0.5))
_LONG_HORIZON = ((1.0, 0.0, 0.01),) * 2 + ((-1.0, 0.5, 1.0),) * 2


def _grid(name, height, width, objects, max_steps, placement):
    return LevelSpec(
        height=height, width=width, objects=tuple(objects), placement=placement,
        max_steps=max_steps, seed=zlib.crc32(name.encode()),
    )


# name -> LevelSpec, exactly as tabled in the paper's Appendix A.
NAMED_GRIDS: dict[str, LevelSpec] = {
    "tabular_dense": _grid("tabular_dense", 11, 11, _DENSE, 500, "fixed"),
    "tabular_sparse": _grid(
        "tabular_sparse", 13, 13, [(1.0, 1.0, 0.0), (-1.0, 1.0, 0.0)], 50, "fixed"
    ),
    "tabular_long_horizon": _grid("tabular_long_horizon", 11, 11, _LONG_HORIZON, 1000, "fixed"),
    "tabular_longer_horizon": _grid(
        "tabular_longer_horizon", 7, 9,
        [(1.0, 0.1, 0.01)] * 2 + [(-1.0, 0.8, 1.0)] * 5, 2000, "fixed",
    ),
    "tabular_long_dense": _grid(
        "tabular_long_dense", 11, 11, [(1.0, 0.0, 0.005)] * 4, 2000, "fixed"
    ),
    "random_dense": _grid("random_dense", 11, 11, _DENSE, 500, "random"),
    "random_long_horizon": _grid("random_long_horizon", 11, 11, _LONG_HORIZON, 1000, "random"),
    "random_small": _grid(
        "random_small", 5, 7, [(1.0, 0.0, 0.05)] * 2 + [(-1.0, 0.5, 0.1)] * 2, 500, "random"
    ),
    "random_small_sparse": _grid(
        "random_small_sparse", 5, 7, [(1.0, 1.0, 1.0)] + [(-1.0, 1.0, 1.0)] * 2, 50, "random"
    ),
    "random_very_dense": _grid("random_very_dense", 11, 11, [(1.0, 0.0, 1.0)], 2000, "random"),
}


# Extra small levels that are not in the paper, for quick CPU runs and tests.
EXTRA_GRIDS: dict[str, LevelSpec] = {
    "tabular_small": LevelSpec(height=5, width=5, objects=((1.0, 1.0, 0.0), (-1.0, 1.0, 0.0)),
                               placement="fixed", max_steps=20, seed=5),
}


def grid_descriptor(spec: LevelSpec) -> tuple[int, int, int]:
    """(height, width, number of objects): what the generator's train / held-out split is made on."""
    return (int(spec.height), int(spec.width), len(spec.objects))


# Descriptors of every named grid; never in the generator's held-out family.
NAMED_DESCRIPTORS: tuple[tuple[int, int, int], ...] = tuple(
    sorted({grid_descriptor(spec) for spec in (*NAMED_GRIDS.values(), *EXTRA_GRIDS.values())})
)


def make_named_grid(
    name: str,
    obs_mode: str | None = None,
    collect_actions: bool = False,
    env: GridWorld | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
) -> tuple[GridWorld, GridParams]:
    """(env, params) of a named grid. obs_mode defaults to "tabular" for tabular_* grids and
    "map" for random_* grids; pass `env` to pad the level into a larger shared env."""
    if name not in NAMED_GRIDS:
        raise ValueError(f"unknown grid {name!r}; named grids: {sorted(NAMED_GRIDS)}")
    spec = NAMED_GRIDS[name]
    if max_steps is not None:
        spec = dataclasses.replace(spec, max_steps=int(max_steps))
    if seed is not None:
        spec = dataclasses.replace(spec, seed=int(seed))
    if env is None:
        if obs_mode is None:
            obs_mode = "tabular" if spec.placement == "fixed" else "map"
        env = smallest_gridworld([spec], obs_mode=obs_mode, collect_actions=collect_actions)
    return env, spec.build(env)


# ------------------------------------------------------------------------------ generator
FAMILIES = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class LevelDistribution:
    """A distribution over grid levels (static: hashable, used as a jit-static argument).

    Per level: height/width uniform in the inclusive ranges, number of objects in
    [1, max_objects] (these three form the descriptor the held-out split is made on);
    `num_kinds` object kinds, each with reward / p_terminate / p_respawn drawn from the
    choices (kind 0 always has a positive reward if one is offered, and object 0 is of
    kind 0, so every level has something worth collecting); each further object takes a
    uniform kind; wall cells with probability uniform in [0, wall_density] on the allowed
    wall cells; max steps from `max_steps_choices`; placement "fixed", "random" or "mixed"
    (a fair coin per level). A step cost from `step_cost_choices` (default: none): a level
    drawn with a cost c > 0 is a *cost level*, whose objects pay nothing (they still end the
    episode with their p_terminate) while every step pays -c, so only ending the episode sooner
    is worth anything (as in MountainCar or Acrobot). `reserved_descriptors` are left out of the
    held-out family (default: the named grids' descriptors); the train family does not depend on
    them.
    """

    height_range: tuple[int, int] = (5, 11)
    width_range: tuple[int, int] = (5, 11)
    max_objects: int = 4
    num_kinds: int = 3
    reward_choices: tuple[float, ...] = (-1.0, 1.0)
    p_terminate_choices: tuple[float, ...] = (0.0, 0.1, 0.5, 0.8, 1.0)
    p_respawn_choices: tuple[float, ...] = (0.0, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
    wall_density: float = 0.3
    max_steps_choices: tuple[int, ...] = (50, 500, 1000)
    placement: str = "fixed"
    step_cost_choices: tuple[float, ...] = (0.0,)
    heldout_fraction: float = 0.2
    split_seed: int = 0
    reserved_descriptors: tuple[tuple[int, int, int], ...] = NAMED_DESCRIPTORS

    def __post_init__(self):
        (h0, h1), (w0, w1) = self.height_range, self.width_range
        if not (1 <= h0 <= h1 and 1 <= w0 <= w1):
            raise ValueError(
                f"height_range {self.height_range} and width_range {self.width_range} must be "
                "(low, high) with 1 <= low <= high"
            )
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.num_kinds < 1:
            raise ValueError(f"num_kinds must be >= 1, got {self.num_kinds}")
        for field in ("reward_choices", "p_terminate_choices", "p_respawn_choices",
                      "max_steps_choices", "step_cost_choices"):
            if len(getattr(self, field)) == 0:
                raise ValueError(f"{field} must not be empty")
        for field in ("p_terminate_choices", "p_respawn_choices"):
            bad = [p for p in getattr(self, field) if not 0.0 <= p <= 1.0]
            if bad:
                raise ValueError(f"{field} has values outside [0, 1]: {bad}")
        if any(c < 0 for c in self.step_cost_choices):
            raise ValueError(f"step_cost_choices must be >= 0 (a cost), got {self.step_cost_choices}")
        if not 0.0 <= self.wall_density <= 1.0:
            raise ValueError(f"wall_density must be in [0, 1], got {self.wall_density}")
        if any(m < 1 for m in self.max_steps_choices):
            raise ValueError(f"max_steps_choices must be >= 1, got {self.max_steps_choices}")
        if self.placement not in ("fixed", "random", "mixed"):
            raise ValueError(
                f"unknown placement {self.placement!r}; allowed: 'fixed', 'random', 'mixed'"
            )
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if not all(isinstance(d, tuple) and len(d) == 3 for d in self.reserved_descriptors):
            raise ValueError(
                "reserved_descriptors must be a tuple of (height, width, num_objects) tuples, "
                f"got {self.reserved_descriptors!r}"
            )
        if _min_free_cells(h0, w0) < self.max_objects + 1:
            raise ValueError(
                f"a {h0}x{w0} level with walls may have only {_min_free_cells(h0, w0)} free "
                f"cells, too few for the agent and {self.max_objects} objects"
            )
        for family in FAMILIES:
            if len(_descriptor_table(self, family)) == 0:
                raise ValueError(
                    f"the {family!r} family is empty for this distribution; widen the size "
                    "or object ranges, or change heldout_fraction / split_seed"
                )

    @property
    def max_height(self) -> int:
        return self.height_range[1]

    @property
    def max_width(self) -> int:
        return self.width_range[1]

    def env(self, obs_mode: str | None = None, collect_actions: bool = False) -> GridWorld:
        """The GridWorld sized for this distribution (tabular for fixed placement, else map)."""
        if obs_mode is None:
            obs_mode = "tabular" if self.placement == "fixed" else "map"
        return GridWorld(
            self.max_height, self.max_width, self.max_objects, self.num_kinds,
            obs_mode=obs_mode, collect_actions=collect_actions,
        )


def _min_free_cells(height: int, width: int) -> int:
    """Free cells left when every allowed wall cell is a wall (odd rows keep one gap)."""
    return (height + 1) // 2 * width + height // 2


def _descriptor_hash(height, width, num_objects, split_seed, xp):
    """uint32 hash of the descriptor; `xp` is numpy (host tables) or jax.numpy (traced)."""
    u = lambda x: xp.asarray(x).astype(xp.uint32)  # noqa: E731
    c = xp.uint32
    x = (u(height) * c(73856093)) ^ (u(width) * c(19349663))
    x = x ^ (u(num_objects) * c(83492791)) ^ (u(split_seed) * c(2654435761))
    for _ in range(2):
        x = (x ^ (x >> c(16))) * c(0x45D9F3B)
    return x ^ (x >> c(16))


def _hashed_heldout(height, width, num_objects, dist: LevelDistribution, xp=jnp):
    """The hashed subset: descriptors outside it form the train family."""
    threshold = xp.uint32(int(round(dist.heldout_fraction * 10000)))
    split_seed = xp.full_like(xp.asarray(height), dist.split_seed)  # arrays: numpy wraps uint32 silently
    x = _descriptor_hash(height, width, num_objects, split_seed, xp)
    return x % xp.uint32(10000) < threshold


def _heldout_descriptor(height, width, num_objects, dist: LevelDistribution, xp=jnp):
    """The held-out family: the hashed subset minus `dist.reserved_descriptors`."""
    held = _hashed_heldout(height, width, num_objects, dist, xp)
    if not dist.reserved_descriptors:
        return held
    descriptor = xp.stack([xp.asarray(v).astype(xp.int32) for v in (height, width, num_objects)], axis=-1)
    reserved = xp.asarray(dist.reserved_descriptors, dtype=xp.int32)  # [R, 3]
    named = (descriptor[..., None, :] == reserved).all(-1).any(-1)
    return held & ~named


@functools.lru_cache(maxsize=None)
def _descriptor_table(dist: LevelDistribution, family: str) -> np.ndarray:
    """All (height, width, num_objects) of `family` under `dist`, [M, 3] int32."""
    h, w, n = np.meshgrid(
        np.arange(dist.height_range[0], dist.height_range[1] + 1),
        np.arange(dist.width_range[0], dist.width_range[1] + 1),
        np.arange(1, dist.max_objects + 1),
        indexing="ij",
    )
    table = np.stack([h.ravel(), w.ravel(), n.ravel()], axis=1).astype(np.int32)
    d = (table[:, 0], table[:, 1], table[:, 2])
    if family == "heldout":
        return table[_heldout_descriptor(*d, dist, xp=np)]
    return table[~_hashed_heldout(*d, dist, xp=np)]


def is_heldout(params: GridParams, dist: LevelDistribution | None = None) -> jax.Array:
    """Whether a level's descriptor is in `dist`'s held-out family (jittable; bool scalar)."""
    dist = LevelDistribution() if dist is None else dist
    num_objects = jnp.sum(params.obj_active.astype(jnp.int32))
    return _heldout_descriptor(params.height, params.width, num_objects, dist)


@functools.partial(jax.jit, static_argnames=("dist", "family"))
def sample_level(key: jax.Array, dist: LevelDistribution, family: str = "train") -> GridParams:
    """One level of `family` ("train" or "heldout") for `dist.env()` (jittable, vmappable)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {FAMILIES}")
    H, W, N, K = dist.max_height, dist.max_width, dist.max_objects, dist.num_kinds
    table = _descriptor_table(dist, family)
    # One uniform draw feeds every choice below (fewer RNG calls compile and run faster).
    sizes = {"descriptor": 1, "gap": H, "density": 1, "wall": H * W, "reward": K,
             "positive": 1, "p_terminate": K, "p_respawn": K, "kind": N, "position": H * W,
             "placement": 1, "max_steps": 1}
    u_all = jax.random.uniform(key, (sum(sizes.values()),), minval=1e-12, maxval=1.0)
    u, start = {}, 0
    for name, size in sizes.items():
        u[name] = u_all[start : start + size]
        start += size

    def pick(choices, v):
        """choices[floor(v * len)] for uniforms v."""
        choices = jnp.asarray(choices)
        return choices[jnp.minimum((v * len(choices)).astype(jnp.int32), len(choices) - 1)]

    height, width, num_objects = pick(table, u["descriptor"][0])

    rows, cols = jnp.arange(H)[:, None], jnp.arange(W)[None, :]
    inside = (rows < height) & (cols < width)
    gap = jnp.minimum((u["gap"] * width).astype(jnp.int32), width - 1)[:, None]
    density = u["density"][0] * dist.wall_density
    wall = (rows % 2 == 1) & (cols != gap) & (u["wall"].reshape(H, W) < density)
    walls = ~inside | wall

    rewards = np.asarray(dist.reward_choices, np.float32)
    positive = rewards[rewards > 0]
    kind_reward = pick(rewards, u["reward"])
    if len(positive):
        kind_reward = kind_reward.at[0].set(pick(positive, u["positive"][0]))
    kind_p_terminate = pick(np.asarray(dist.p_terminate_choices, np.float32), u["p_terminate"])
    kind_p_respawn = pick(np.asarray(dist.p_respawn_choices, np.float32), u["p_respawn"])
    obj_kind = pick(np.arange(K, dtype=np.int32), u["kind"]).at[0].set(0)
    obj_active = jnp.arange(N) < num_objects

    gumbel = -jnp.log(-jnp.log(u["position"]))
    _, cells = jax.lax.top_k(jnp.where(walls.reshape(-1), -jnp.inf, gumbel), N)
    obj_pos = jnp.stack([cells // W, cells % W], axis=1).astype(jnp.int32)

    if dist.placement == "mixed":
        random_placement = u["placement"][0] < 0.5
    else:
        random_placement = jnp.bool_(dist.placement == "random")
    max_steps = pick(np.asarray(dist.max_steps_choices, np.int32), u["max_steps"][0])
    # Drawn apart from `u_all`, so that distributions without costs draw the levels they always did.
    step_cost = jnp.float32(0.0)
    if any(dist.step_cost_choices):
        step_cost = pick(np.asarray(dist.step_cost_choices, np.float32),
                         jax.random.uniform(jax.random.fold_in(key, 1), minval=1e-12, maxval=1.0))
        kind_reward = jnp.where(step_cost > 0, 0.0, kind_reward)

    return GridParams(
        walls=walls,
        height=height.astype(jnp.int32),
        width=width.astype(jnp.int32),
        obj_active=obj_active,
        obj_kind=obj_kind,
        obj_reward=jnp.where(obj_active, kind_reward[obj_kind], 0.0),
        obj_p_terminate=jnp.where(obj_active, kind_p_terminate[obj_kind], 0.0),
        obj_p_respawn=jnp.where(obj_active, kind_p_respawn[obj_kind], 0.0),
        obj_pos=obj_pos,
        random_placement=random_placement,
        max_steps_in_episode=max_steps.astype(jnp.int32),
        step_reward=-step_cost,
    )
