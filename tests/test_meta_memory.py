"""Meta-training in less memory: lifetime micro-batches and rematerialisation change the
footprint, never the update."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lpg.meta import (HyperChoices, MetaConfig, group_meta_gradient, lifetime_window, make_meta_trainer,
                      sources_for)
from lpg.update_rule import RuleConfig

CONFIG = MetaConfig(
    envs=("probe",), lifetimes_per_env=4, num_envs=8, rollout_len=4, inner_updates=2, lifetime_updates=20,
    rule=RuleConfig(hidden=16, y_size=4),
    hypers=HyperChoices(discounts=(0.9,), learning_rates=(1.0,), alpha_ys=(0.5,), entropy_costs=(0.01,)),
    meta_lr=3e-3, num_meta_steps=3, steps_per_chunk=3,
)


def _allclose(expected, actual):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), expected, actual)


@pytest.fixture(scope="module")
def poisoned_state():
    """A meta-state whose lifetime 1 has an infinite agent (as in test_lpg's non-finite test)."""
    state = make_meta_trainer(CONFIG, sources_for(CONFIG.envs)).init(jax.random.PRNGKey(0))
    batch = state.lifetimes[0]
    agent = batch.agent.replace(params=jax.tree.map(lambda x: x.at[1].set(jnp.inf), batch.agent.params))
    return state.replace(lifetimes=(batch.replace(agent=agent),))


def _meta_gradient(config, state):
    group = make_meta_trainer(config, sources_for(config.envs)).groups[0]
    return jax.jit(lambda p, b: group_meta_gradient(group, config, p, b))(state.rule_params, state.lifetimes[0])


@pytest.fixture(scope="module")
def finite_mean_gradient(poisoned_state):
    """The meta-gradient by hand: each lifetime's own, averaged over the finite lifetimes 0, 2, 3."""
    group = make_meta_trainer(CONFIG, sources_for(CONFIG.envs)).groups[0]
    grad = jax.grad(lambda p, lt: lifetime_window(group, CONFIG, p, lt)[0])
    grads = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(poisoned_state.rule_params, poisoned_state.lifetimes[0])
    return jax.tree.map(lambda g: g[np.array([0, 2, 3])].mean(0), grads)


# One case in the default suite (~8 s each); the rest opt-in.
@pytest.mark.parametrize("microbatches, remat", [*(pytest.param(*case, marks=pytest.mark.slow) for case in
                                                   [(1, False), (2, False), (4, False), (1, True)]), (2, True)])
def test_microbatches_and_remat_give_the_same_meta_gradient_with_a_non_finite_lifetime(
        poisoned_state, finite_mean_gradient, microbatches, remat):
    """The finite lifetimes' mean meta-gradient, and the same loss, lifetimes (in their order),
    metrics and finiteness mask as one batch without remat; with 4 micro-batches of one lifetime,
    one micro-batch has no finite lifetime at all."""
    expected = _meta_gradient(CONFIG, poisoned_state)
    actual = _meta_gradient(dataclasses.replace(CONFIG, lifetime_microbatches=microbatches, remat=remat),
                            poisoned_state)
    np.testing.assert_array_equal(expected[4], [True, False, True, True])
    np.testing.assert_array_equal(expected[4], actual[4])
    assert float(optax.global_norm(finite_mean_gradient)) > 0
    _allclose(finite_mean_gradient, actual[1])
    _allclose(expected[:4], actual[:4])


def test_microbatched_rematerialised_meta_training_follows_the_plain_one(poisoned_state):
    """Three meta-steps (Adam, source balancing, renewal of the non-finite lifetime) give the same rule."""

    def run(config):
        trainer = make_meta_trainer(config, sources_for(config.envs))
        return jax.jit(trainer.run)(poisoned_state)

    (expected, expected_m), (actual, actual_m) = run(CONFIG), run(
        dataclasses.replace(CONFIG, lifetime_microbatches=2, remat=True))
    np.testing.assert_array_equal(expected_m["probe/nonfinite"], [1, 0, 0])
    np.testing.assert_array_equal(expected_m["probe/nonfinite"], actual_m["probe/nonfinite"])
    _allclose(expected.rule_params, actual.rule_params)
    _allclose(expected.lifetimes, actual.lifetimes)
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(poisoned_state.rule_params),
                                                          jax.tree.leaves(expected.rule_params)))
    assert moved > 1e-3  # three Adam steps of 3e-3: the comparison is not between two untouched rules


def _temp_bytes(config):
    trainer = make_meta_trainer(config, sources_for(config.envs))
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    return jax.jit(trainer.step).lower(abstract).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow  # default-suite time (session 30): ~30 s (three compiles of the full step for XLA's memory analysis)
def test_microbatches_and_remat_shrink_the_compiled_footprint():
    """XLA's own buffer assignment: what the options are for."""
    config = dataclasses.replace(CONFIG, lifetimes_per_env=8, num_envs=16, rollout_len=8, inner_updates=4,
                                 rule=RuleConfig(hidden=64, y_size=4))
    plain = _temp_bytes(config)
    microbatched = _temp_bytes(dataclasses.replace(config, lifetime_microbatches=4))
    rematerialised = _temp_bytes(dataclasses.replace(config, remat=True))
    # Measured: 0.25 and 0.27 of the plain step's temporaries.
    assert microbatched < 0.4 * plain, (microbatched, plain)
    assert rematerialised < 0.5 * plain, (rematerialised, plain)


def test_microbatches_that_do_not_divide_the_lifetimes_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^MetaConfig: lifetime_microbatches must be >= 1 and divide "
                                         r"lifetimes_per_env \(got lifetimes_per_env=4, lifetime_microbatches=3\)$"):
        dataclasses.replace(CONFIG, lifetime_microbatches=3)
    with pytest.raises(ValueError, match="lifetime_microbatches"):
        dataclasses.replace(CONFIG, lifetime_microbatches=0)
