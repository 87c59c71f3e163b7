"""Environment registry: project names, option pass-through, gymnax fall-through, errors."""

import jax
import numpy as np
import pytest
from gymnax.environments import environment

from envs import registry
from envs.chain import DelayedChain
from envs.gridworld import GridWorld

GRIDS = ["tabular_dense", "tabular_sparse", "tabular_long_horizon", "tabular_longer_horizon",
         "tabular_long_dense", "random_dense", "random_long_horizon", "random_small",
         "random_small_sparse", "random_very_dense"]
CHAINS = ["chain_short", "chain_long", "chain_short_noisy", "chain_long_noisy",
          "chain_distraction", "chain_medium", "chain_heldout"]


def test_names_are_the_paper_environments_the_task_distributions_and_the_transfer_checks():
    import envs  # registers the RL² task distributions and envs.transfer

    assert set(envs.names()) == set(GRIDS + CHAINS) | {"bandit_beta", "bandit_swapped", "hidden_goal"} | {
        "keydoor", "keydoor_reward10", "noisy_contexts", "step_cost_grid"}


@pytest.mark.parametrize("name", GRIDS)
def test_make_grid(name):
    env, params = registry.make(name)
    assert isinstance(env, GridWorld) and env.num_actions == 9
    assert env.obs_mode == ("tabular" if name.startswith("tabular") else "map")
    assert bool(params.random_placement) == name.startswith("random")
    env18, params18 = registry.make(name, collect_actions=True)
    assert env18.num_actions == 18
    np.testing.assert_array_equal(params18.obj_pos, params.obj_pos)  # same level


def test_make_chain_and_step():
    env, params = registry.make("chain_distraction")
    assert isinstance(env, DelayedChain) and env.num_actions == 2
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (22,)
    lengths = {int(registry.make("chain_long", seed=s)[1].length) for s in range(20)}
    assert len(lengths) > 5 and max(lengths) <= 50
    _, noisy = registry.make("chain_short_noisy", length=9, good_action=1)
    assert (int(noisy.length), int(noisy.good_action), bool(noisy.noisy)) == (9, 1, True)


def test_named_tabular_grid_runs():
    env, params = registry.make("tabular_sparse")
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert 0 <= int(obs) < env.num_states and int(obs) % 4 == 0b11  # both objects present


def test_gymnax_names_fall_through():
    env, params = registry.make("CartPole-v1")
    assert isinstance(env, environment.Environment) and env.num_actions == 2
    env, _ = registry.make("Breakout-MinAtar")
    assert env.num_actions >= 3


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown environment 'tabular_huge'.*tabular_dense"):
        registry.make("tabular_huge")


def test_register_custom_factory():
    registry.register("corridor_test", lambda **kw: ("env", kw))
    try:
        assert registry.make("corridor_test", size=3) == ("env", {"size": 3})
        assert "corridor_test" in registry.names()
    finally:
        registry._REGISTRY.pop("corridor_test")
