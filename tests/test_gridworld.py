"""GridWorld dynamics, observations, validation, named grids and the level generator."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.gridworld import (
    GridState, GridWorld, LevelSpec, _connected, make_level, smallest_gridworld, stack_params,
)
from envs.levels import NAMED_GRIDS, LevelDistribution, is_heldout, make_named_grid, sample_level

STAY, N, E, S, W = 0, 1, 3, 5, 7
KEY = jax.random.PRNGKey(0)
# Tests share envs and batch shapes so that compiled rollouts are reused (compiling dominates).
MAP_ENV = GridWorld(5, 5, 6, num_kinds=2, obs_mode="map")


def place(env, params, agent, objects=None, present=None):
    """A state with the agent at (row, col) and objects at their fixed positions."""
    cell = lambda rc: rc[0] * env.max_width + rc[1]  # noqa: E731
    obj_cell = np.asarray(params.obj_pos[:, 0] * env.max_width + params.obj_pos[:, 1])
    if objects is not None:
        obj_cell = np.array([cell(o) for o in objects] + [0] * (env.max_objects - len(objects)))
    if present is None:
        present = np.asarray(params.obj_active)
    return GridState(
        agent_cell=jnp.int32(cell(agent)), obj_cell=jnp.asarray(obj_cell, jnp.int32),
        obj_present=jnp.asarray(present), time=jnp.int32(0),
    )


def corridor(objects, env=None, **kw):
    env = env or GridWorld(1, 3, 1)
    return env, make_level(env, 1, 3, objects, positions=[(0, 2)][: len(objects)], **kw)


@functools.partial(jax.jit, static_argnums=0)
def rollout(env, params, key, actions):
    """Scan env.step over a fixed action sequence: (obs, reward, terminated, truncated, state)."""
    k_reset, k_steps = jax.random.split(key)
    _, state = env.reset(k_reset, params)

    def body(state, x):
        action, k = x
        obs, state, r, term, trunc, _ = env.step(k, state, action, params)
        return state, (obs, r, term, trunc, state)

    keys = jax.random.split(k_steps, actions.shape[0])
    return jax.lax.scan(body, state, (actions, keys))[1]


batched_rollout = jax.jit(jax.vmap(rollout, in_axes=(None, 0, 0, 0)), static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def reset_many(env, keys, params):
    return jax.vmap(env.reset, in_axes=(0, None))(keys, params)


@functools.partial(jax.jit, static_argnums=0)
def step_many(env, keys, state, action, params):
    """One step from the same state under many keys."""
    return jax.vmap(env.step, in_axes=(0, None, None, None))(keys, state, action, params)


def test_collect_gives_reward_and_removes_object():
    env, params = corridor([(2.5, 0.0, 0.0)])
    state = place(env, params, (0, 1))
    obs, state, r, term, trunc, _ = env.step(KEY, state, E, params)
    assert float(r) == 2.5 and not bool(term)
    assert int(obs) == 2 * 2 + 0  # cell 2, presence bit cleared
    assert not bool(state.obj_present[0])


def test_p_terminate_one_always_ends_zero_never():
    keys = jax.random.split(KEY, 200)
    for p, expected in ((1.0, True), (0.0, False)):
        env, params = corridor([(1.0, p, 0.0)])
        state = place(env, params, (0, 1))
        term = step_many(env, keys, state, E, params)[3]
        assert bool(jnp.all(term == expected)), p


def test_p_respawn_zero_keeps_object_gone_and_one_brings_it_back():
    for p, expected in ((0.0, False), (1.0, True)):
        env, params = corridor([(1.0, 0.0, p)])
        state = place(env, params, (0, 1))
        _, state, *_ = env.step(KEY, state, E, params)  # collect
        _, state, *_ = env.step(KEY, state, W, params)  # step off (a respawn needs an empty cell)
        for k in jax.random.split(KEY, 30):
            _, state, *_ = env.step(k, state, STAY, params)
        assert bool(state.obj_present[0]) == expected, p


def test_fixed_object_does_not_respawn_under_agent():
    env, params = corridor([(1.0, 0.0, 1.0)])
    state = place(env, params, (0, 1))
    _, state, *_ = env.step(KEY, state, E, params)
    for k in jax.random.split(KEY, 5):
        obs, state, r, *_ = env.step(k, state, STAY, params)
        assert not bool(state.obj_present[0]) and float(r) == 0.0


def test_walls_and_edges_block():
    env = GridWorld(3, 3, 0)
    walls = np.zeros((3, 3), bool)
    walls[1, 1] = True
    params = make_level(env, 3, 3, [], walls=walls)
    state = place(env, params, (0, 1))
    expected = {S: (0, 1), N: (0, 1), E: (0, 2), 4: (1, 2), 6: (1, 0)}  # S: wall, N: edge
    for action, (row, col) in expected.items():
        _, s2, *_ = env.step(KEY, state, action, params)
        assert int(s2.agent_cell) == row * 3 + col, action
    # Cells outside a smaller level are walls too.
    big = GridWorld(4, 4, 0)
    small = make_level(big, 2, 2, [])
    _, s2, *_ = big.step(KEY, place(big, small, (1, 1)), S, small)
    assert int(s2.agent_cell) == 1 * 4 + 1


def test_collect_flag_in_18_action_set():
    env = GridWorld(1, 3, 1, collect_actions=True)
    assert env.num_actions == 18
    env, params = corridor([(1.0, 0.0, 0.0)], env=env)
    state = place(env, params, (0, 1))
    _, state, r, *_ = env.step(KEY, state, E, params)  # move without collecting
    assert float(r) == 0.0 and bool(state.obj_present[0]) and int(state.agent_cell) == 2
    _, state, r, *_ = env.step(KEY, state, STAY + 9, params)  # stay + collect
    assert float(r) == 1.0 and not bool(state.obj_present[0])


def test_truncation_at_max_steps():
    env, params = corridor([(1.0, 0.0, 0.0)], max_steps=3)
    _, r, term, trunc, _ = rollout(env, params, KEY, jnp.full((6,), W, jnp.int32))
    np.testing.assert_array_equal(trunc, [False, False, True, False, False, True])
    assert not bool(term.any())


def test_random_placement_respawns_on_free_cells():
    env = MAP_ENV
    walls = np.zeros((4, 5), bool)
    walls[1, 1:4] = True
    objects = [(1.0, 0.0, 1.0)] * 3 + [(-1.0, 0.0, 0.3)] * 3
    params = make_level(env, 4, 5, objects, walls=walls, placement="random")
    params = stack_params([params] * 64)
    actions = jax.random.randint(KEY, (64, 100), 0, 9)
    _, r, _, _, state = batched_rollout(env, params, jax.random.split(KEY, 64), actions)
    assert float(jnp.sum(r > 0)) > 200  # the +1 objects kept coming back
    cells, present = np.asarray(state.obj_cell), np.asarray(state.obj_present)
    agent = np.asarray(state.agent_cell)
    free = ~np.asarray(params.walls[0]).reshape(-1)
    for b, t in np.ndindex(64, 100):
        on = cells[b, t][present[b, t]]
        assert len(set(on)) == len(on) and free[on].all() and agent[b, t] not in on
    # Positions really are re-drawn: object 0 visits many cells.
    assert len(set(cells[:, :, 0].ravel())) > 8


def test_reset_random_placement_distinct_and_fixed_placement_fixed():
    env = MAP_ENV
    params = make_level(env, 3, 3, [(1.0, 0, 0)] * 4, placement="random")
    obs, _ = reset_many(env, jax.random.split(KEY, 256), params)
    occupancy = obs[:, 0] + obs[:, 2]
    assert bool(jnp.all(occupancy.sum((1, 2)) == 5)) and float(occupancy.max()) == 1.0
    assert bool(jnp.all(obs[:, 2, :3, :3].mean(0) > 0.2))  # every cell gets objects sometimes

    fixed = make_level(env, 3, 3, [(1.0, 0, 0)] * 2, positions=[(0, 0), (2, 2)])
    obs, _ = reset_many(env, jax.random.split(KEY, 256), fixed)
    expected = np.zeros((5, 5))
    expected[0, 0] = expected[2, 2] = 1
    np.testing.assert_array_equal(obs[:, 2], np.broadcast_to(expected, (256, 5, 5)))
    assert float(obs[:, 0, 0, 0].max()) == 0.0  # the agent never starts on an object


def test_tabular_observation_index():
    env = GridWorld(3, 4, 3)
    params = make_level(env, 3, 4, [(1, 0, 0)] * 3, positions=[(0, 0), (0, 1), (2, 3)])
    state = place(env, params, (1, 2), present=np.array([True, False, True]))
    assert int(env.get_obs(state, params)) == (1 * 4 + 2) * 8 + 0b101
    assert env.num_states == 12 * 8
    assert env.observation_space(params).n == env.num_states


def test_map_observation_channels():
    env = GridWorld(3, 4, 3, num_kinds=2, obs_mode="map")
    walls = np.zeros((2, 3), bool)
    walls[0, 2] = True
    params = make_level(
        env, 2, 3, [(1, 0, 0), (-1, 0, 0), (1, 0, 0)], walls=walls,
        positions=[(0, 0), (1, 2), (1, 1)],
    )
    state = place(env, params, (1, 0), present=np.array([True, True, False]))
    obs = np.asarray(env.get_obs(state, params))
    assert obs.shape == (4, 3, 4) and obs.dtype == np.float32
    expected = np.zeros((4, 3, 4), np.float32)
    expected[0, 1, 0] = 1
    expected[1] = 1
    expected[1, :2, :3] = walls
    expected[2, 0, 0] = 1  # kind 0; the other kind-0 object (1, 1) is absent
    expected[3, 1, 2] = 1
    np.testing.assert_array_equal(obs, expected)


def test_vector_observation_is_the_tabular_state_and_level_sources_use_it():
    tab, vec = GridWorld(3, 4, 3), GridWorld(3, 4, 3, obs_mode="vector")
    params = make_level(tab, 3, 4, [(1, 0, 0)] * 3, positions=[(0, 0), (0, 1), (2, 3)])
    state = place(tab, params, (1, 2), present=np.array([True, False, True]))
    obs = np.asarray(vec.get_obs(state, params))
    assert obs.shape == vec.observation_space(params).shape == (12 + 3,) and obs.dtype == np.float32
    expected = np.zeros(15, np.float32)
    expected[1 * 4 + 2] = 1  # agent's cell, one-hot
    expected[12:] = [1, 0, 1]  # presence bits
    np.testing.assert_array_equal(obs, expected)
    # The same state index as the tabular observation: cell * 2**objects + bits.
    assert int(np.argmax(obs[:12])) * 8 + int(obs[12:] @ [1, 2, 4]) == int(tab.get_obs(state, params))

    from envs.sources import level_sampler

    env, sample = level_sampler("generated_vector")
    table_env, table_sample = level_sampler("generated")
    key = jax.random.PRNGKey(3)
    assert env.obs_mode == "vector" and table_env.obs_mode == "tabular"
    # The vector sources draw the same families as the table sources.
    for a, b in zip(jax.tree.leaves(sample(key)), jax.tree.leaves(table_sample(key))):
        np.testing.assert_array_equal(a, b)
    held_vec, held_tab = level_sampler("generated_vector_heldout")[1](key), level_sampler("generated_heldout")[1](key)
    for a, b in zip(jax.tree.leaves(held_vec), jax.tree.leaves(held_tab)):
        np.testing.assert_array_equal(a, b)
    dist = LevelDistribution()
    assert bool(is_heldout(held_vec, dist)) and not bool(is_heldout(sample(key), dist))


@pytest.mark.parametrize("name, max_steps", [("generated_sparse_vector", 10), ("generated_sparse_long_vector", 40)])
def test_sparse_source_draws_one_goal_levels_of_the_training_family_only(name, max_steps):
    from envs.levels import _descriptor_table
    from envs.sources import SPARSE_DISTRIBUTION, level_sampler

    env, sample = level_sampler(name)
    assert env.obs_mode == "vector"
    levels = jax.vmap(sample)(jax.random.split(jax.random.PRNGKey(0), 64))
    assert np.all(np.asarray(levels.obj_active).sum(1) == 1)
    active = np.asarray(levels.obj_active)
    np.testing.assert_array_equal(np.asarray(levels.obj_reward)[active], 1.0)
    np.testing.assert_array_equal(np.asarray(levels.obj_p_terminate)[active], 1.0)
    np.testing.assert_array_equal(np.asarray(levels.max_steps_in_episode), max_steps)
    assert not np.any(np.asarray(jax.vmap(lambda p: is_heldout(p, SPARSE_DISTRIBUTION))(levels)))
    # Its descriptors are the default distribution's training ones too: never a generated_heldout shape.
    held = {tuple(d) for d in _descriptor_table(LevelDistribution(), "heldout")}
    drawn = {(int(h), int(w), 1) for h, w in zip(levels.height, levels.width)}
    assert drawn and drawn.isdisjoint(held)


def test_map_sources_draw_the_generator_families_with_objects_replaced_each_episode():
    """generated_map / generated_map_heldout: the generator's two families, objects re-drawn at every
    reset (the paper's random grids), seen as binary maps with one agent cell."""
    from envs.sources import level_sampler

    key = jax.random.PRNGKey(3)
    dist = LevelDistribution()
    for name, held in (("generated_map", False), ("generated_map_heldout", True)):
        env, sample = level_sampler(name)
        levels = jax.vmap(sample)(jax.random.split(key, 32))
        assert env.obs_mode == "map" and np.all(np.asarray(levels.random_placement))
        np.testing.assert_array_equal(np.asarray(jax.vmap(lambda p: is_heldout(p, dist))(levels)), held)
        level = jax.tree.map(lambda x: x[0], levels)
        obs, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, 16), level)
        assert obs.shape[1:] == env.observation_space(level).shape
        np.testing.assert_array_equal(np.asarray(obs[:, 0]).sum((1, 2)), 1.0)  # one agent cell
        # Positions differ between resets of one level (fixed placement would repeat them).
        assert len({tuple(c) for c in np.asarray(states.obj_cell)}) > 1


def test_cost_source_draws_the_same_levels_half_of_them_cost_levels():
    """generated_sparse_long_cost_vector: the levels of generated_sparse_long_vector under the same keys,
    but for rewards: about half of them cost levels (goal pays 0, step reward -0.03 or -0.1), the rest as
    before (goal pays 1, no step reward)."""
    from envs.sources import level_sampler

    keys = jax.random.split(jax.random.PRNGKey(0), 256)
    plain = jax.vmap(level_sampler("generated_sparse_long_vector")[1])(keys)
    cost = jax.vmap(level_sampler("generated_sparse_long_cost_vector")[1])(keys)
    for field in ("walls", "height", "width", "obj_pos", "obj_p_terminate", "max_steps_in_episode"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(cost, field))
    np.testing.assert_array_equal(plain.step_reward, 0.0)
    step = np.asarray(cost.step_reward)
    assert set(np.unique(step).tolist()) == {np.float32(-0.1), np.float32(-0.03), 0.0}
    assert 0.35 < np.mean(step < 0) < 0.65
    goal = np.asarray(cost.obj_reward)[:, 0]
    np.testing.assert_array_equal(goal[step < 0], 0.0)
    np.testing.assert_array_equal(goal[step == 0], 1.0)
    with pytest.raises(ValueError, match="step_cost_choices"):
        LevelDistribution(step_cost_choices=(-0.1,))


def test_vmap_over_heterogeneous_levels_matches_single_runs_and_is_seeded():
    specs = [
        LevelSpec(5, 5, ((1.0, 0.2, 0.1), (-1.0, 0.5, 0.5)), placement="random", max_steps=7),
        LevelSpec(3, 5, ((1.0, 0.0, 0.3),), placement="fixed", max_steps=50, seed=3),
        LevelSpec(5, 4, ((1.0, 1.0, 0.0), (1, 1, 0), (-1, 0, 1)), placement="random",
                  walls=np.array([[0, 0, 0, 0]] * 2 + [[1, 1, 0, 1]] + [[0, 0, 0, 0]] * 2, bool),
                  max_steps=20),
    ]
    assert smallest_gridworld(specs, obs_mode="map") == GridWorld(5, 5, 3, 2, obs_mode="map")
    env = MAP_ENV
    levels = [s.build(env) for s in specs]
    keys = jax.random.split(KEY, 64)
    actions = jax.random.randint(KEY, (64, 100), 0, 9)
    batched = batched_rollout(env, stack_params([levels[i % 3] for i in range(64)]), keys, actions)
    for i, level in enumerate(levels):
        single = rollout(env, level, keys[i], actions[i])
        for b, s in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_array_equal(b[i], s)
    # Same seed -> same result; another seed -> another result.
    again = rollout(env, levels[0], keys[0], actions[0])
    other = rollout(env, levels[0], keys[1], actions[0])
    np.testing.assert_array_equal(again[0], batched[0][0])
    assert not np.array_equal(other[0], again[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(objects=[(1, 1.5, 0)]), "p_terminate=1.5 is not a probability"),
        (dict(objects=[(1, 0, -0.1)]), "p_respawn=-0.1 is not a probability"),
        (dict(objects=[(1, 0, 0)] * 3), "at most max_objects=2"),
        (dict(height=5), r"height must be in \[1, 4\]"),
        (dict(placement="everywhere"), "unknown placement"),
        (dict(walls=np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0] * 4, [0] * 4], bool)), "connected"),
        (dict(height=1, width=2, objects=[(1, 0, 0)] * 2), "free cells cannot hold"),
        (dict(objects=[(1, 0, 0)] * 2, positions=[(0, 0), (0, 0)]), "distinct"),
        (dict(max_steps=0), "max_steps must be >= 1"),
        (dict(objects=[(1, 0, 0)], kinds=[3]), "must be in"),
    ],
)
def test_bad_params_raise_clear_errors(kwargs, message):
    env = GridWorld(4, 4, 2, num_kinds=2, obs_mode="map")
    args = dict(height=4, width=4, objects=[])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_level(env, **args)


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="unknown obs_mode 'pixels'"):
        GridWorld(4, 4, 1, obs_mode="pixels")
    with pytest.raises(ValueError, match="more than int32"):
        GridWorld(20, 20, 25)


# --------------------------------------------------------------------------- named grids
PAPER_TABLE = {  # name: (height, width, objects, max steps) from the paper's Appendix A
    "dense": (11, 11, [(1, 0, 0.05)] * 2 + [(-1, 0.5, 0.1), (-1, 0, 0.5)], 500),
    "sparse": (13, 13, [(1, 1, 0), (-1, 1, 0)], 50),
    "long_horizon": (11, 11, [(1, 0, 0.01)] * 2 + [(-1, 0.5, 1)] * 2, 1000),
    "longer_horizon": (7, 9, [(1, 0.1, 0.01)] * 2 + [(-1, 0.8, 1)] * 5, 2000),
    "long_dense": (11, 11, [(1, 0, 0.005)] * 4, 2000),
    "small": (5, 7, [(1, 0, 0.05)] * 2 + [(-1, 0.5, 0.1)] * 2, 500),
    "small_sparse": (5, 7, [(1, 1, 1)] + [(-1, 1, 1)] * 2, 50),
    "very_dense": (11, 11, [(1, 0, 1)], 2000),
}
NAMED = [f"tabular_{n}"
         for n in ("dense", "sparse", "long_horizon", "longer_horizon", "long_dense")]
NAMED += [f"random_{n}" for n in ("dense", "long_horizon", "small", "small_sparse", "very_dense")]


@pytest.mark.parametrize("name", NAMED)
def test_named_grid_matches_paper_table(name):
    tabular = name.startswith("tabular_")
    height, width, objects, max_steps = PAPER_TABLE[name.split("_", 1)[1]]
    env, params = make_named_grid(name)
    assert env.obs_mode == ("tabular" if tabular else "map")
    assert (int(params.height), int(params.width)) == (height, width)
    assert int(params.max_steps_in_episode) == max_steps
    assert bool(params.random_placement) == (not tabular)
    n = len(objects)
    assert int(params.obj_active.sum()) == n
    got = np.stack([params.obj_reward, params.obj_p_terminate, params.obj_p_respawn], 1)[:n]
    np.testing.assert_allclose(got, np.asarray(objects, np.float32))
    assert not bool(params.walls[:height, :width].any())  # no walls besides the border
    pos = {tuple(p) for p in np.asarray(params.obj_pos[:n])}
    assert len(pos) == n and all(r < height and c < width for r, c in pos)
    assert set(NAMED_GRIDS) == set(NAMED)


# ----------------------------------------------------------------------------- generator
sample_levels = jax.jit(jax.vmap(sample_level, in_axes=(0, None, None)), static_argnums=(1, 2))
heldout_flags = jax.jit(jax.vmap(is_heldout, in_axes=(0, None)), static_argnums=1)


def test_heldout_levels_are_disjoint_from_training():
    dist = LevelDistribution(placement="mixed", wall_density=1.0)
    keys = jax.random.split(KEY, 1000)
    train, held = sample_levels(keys, dist, "train"), sample_levels(keys, dist, "heldout")
    assert not bool(heldout_flags(train, dist).any())
    assert bool(heldout_flags(held, dist).all())
    descriptor = lambda p: set(zip(np.asarray(p.height), np.asarray(p.width),  # noqa: E731
                                   np.asarray(p.obj_active.sum(1))))
    d_train, d_held = descriptor(train), descriptor(held)
    assert d_train.isdisjoint(d_held) and len(d_held) > 20 and len(d_train) > 100
    # Reproducible, and a different split seed gives a different split.
    again = sample_levels(keys[:1000], dist, "train")
    np.testing.assert_array_equal(again.walls, train.walls)
    assert bool(heldout_flags(train, LevelDistribution(split_seed=1)).any())

    # Every level is valid: walls outside the size, free cells connected, objects on
    # distinct free cells, a rewarding object 0, both placements, real walls.
    assert 300 < int(train.random_placement.sum()) < 700
    assert float(np.asarray(train.walls).mean()) > 0.2
    for i in range(200):
        h, w = int(train.height[i]), int(train.width[i])
        walls = np.asarray(train.walls[i])
        assert walls[h:].all() and walls[:, w:].all()
        assert _connected(~walls)
        n = int(train.obj_active[i].sum())
        pos = np.asarray(train.obj_pos[i, :n])
        assert not walls[pos[:, 0], pos[:, 1]].any() and len({tuple(p) for p in pos}) == n
        assert float(train.obj_reward[i, 0]) > 0
    # The env runs on a generated batch.
    env = dist.env(obs_mode="map")
    obs, _ = jax.vmap(env.reset)(keys[:8], jax.tree.map(lambda x: x[:8], train))
    assert obs.shape == (8, 2 + dist.num_kinds, dist.max_height, dist.max_width)


def test_level_distribution_validation():
    with pytest.raises(ValueError, match="free cells"):
        LevelDistribution(height_range=(1, 2), width_range=(1, 2))
    with pytest.raises(ValueError, match="family is empty"):
        LevelDistribution(height_range=(5, 5), width_range=(5, 5), max_objects=1)
    with pytest.raises(ValueError, match="p_respawn_choices"):
        LevelDistribution(p_respawn_choices=(0.5, 2.0))
