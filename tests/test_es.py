"""The ES outer loop (lpg.es, experiments.es_train) and lifetime-conditioned rules."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.probe import ContextualBandit
from experiments.es_train import es_train
from experiments.presets import ES_PRESETS
from lpg import evaluate
from lpg.es import ESConfig, make_es_trainer, make_strategy, normalised_fitness
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.learner import make_train
from lpg.meta import HyperChoices, sources_for
from lpg.update_rule import RuleConfig, RuleInputs, UpdateRule, init_rule, load_rule
from tests.helpers import probe_bandit_return

TINY = ES_PRESETS["tiny"]


def _quadratic_step(key, mean, target, config):
    """One generation of the trainer's ES (its strategy and fitness) on return = −‖x − target‖²."""
    strategy = make_strategy(config, mean)
    params = strategy.default_params
    state = strategy.init(key, mean, params)
    population, state = strategy.ask(key, state, params)
    returns = -jnp.sum((population - target) ** 2, axis=1)
    fitness = normalised_fitness(returns[:, None])
    new_state, _ = strategy.tell(key, population, -fitness, state, params)
    return population, state, strategy.get_mean(new_state)


def test_es_step_on_a_quadratic_points_downhill_and_pairs_are_antithetic():
    dims = 10
    mean = jnp.zeros(dims)
    target = jax.random.normal(jax.random.PRNGKey(1), (dims,))
    config = ESConfig(population_size=512, sigma=0.1, es_lr=0.05)
    population, state, new_mean = _quadratic_step(jax.random.PRNGKey(0), mean, target, config)
    # Antithetic sampling: member i and member i + P/2 share their noise with opposite signs.
    half = config.population_size // 2
    np.testing.assert_allclose(population[:half] - mean, -(population[half:] - mean), rtol=1e-6)
    # Adam's first step is lr · sign(estimate): it must point the way the return increases.
    step = np.asarray(new_mean - mean)
    cosine = step @ np.asarray(target) / (np.linalg.norm(step) * np.linalg.norm(target))
    assert cosine > 0.6, cosine
    assert np.mean(np.sign(step) == np.sign(np.asarray(target))) >= 0.9


def test_es_converges_on_a_quadratic():
    dims = 10
    target = jax.random.normal(jax.random.PRNGKey(1), (dims,))
    config = ESConfig(population_size=64, sigma=0.1, es_lr=0.05)
    strategy = make_strategy(config, jnp.zeros(dims))
    params = strategy.default_params
    state = strategy.init(jax.random.PRNGKey(0), jnp.zeros(dims), params)

    @jax.jit
    def generation(state, key):
        population, state = strategy.ask(key, state, params)
        fitness = normalised_fitness(-jnp.sum((population - target) ** 2, axis=1)[:, None])
        return strategy.tell(key, population, -fitness, state, params)[0], None

    state, _ = jax.lax.scan(generation, state, jax.random.split(jax.random.PRNGKey(2), 200))
    start, end = float(jnp.linalg.norm(target)), float(jnp.linalg.norm(strategy.get_mean(state) - target))
    assert end < start / 5, (start, end)


def test_fitness_is_per_level_normalised_and_a_non_finite_member_ranks_last():
    returns = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    fitness = normalised_fitness(returns)
    # An affine change of one level's returns (a level worth 100x more) changes nothing.
    rescaled = returns.at[:, 1].set(100.0 * returns[:, 1] + 5.0)
    np.testing.assert_allclose(normalised_fitness(rescaled), fitness, rtol=1e-4, atol=1e-5)
    # z-scores per level: the fitness is the mean of each member's standardised returns.
    z = (returns - returns.mean(0)) / returns.std(0)
    np.testing.assert_allclose(fitness, z.mean(1), rtol=1e-5, atol=1e-6)
    # A level where every member scored the same adds 0.
    flat = jnp.concatenate([returns, jnp.full((8, 1), 3.0)], axis=1)
    np.testing.assert_allclose(normalised_fitness(flat), fitness * 3 / 4, rtol=1e-5, atol=1e-6)
    # A non-finite member has no fitness (evosax ranks nan last); the others are scored without it.
    poisoned = returns.at[2, 0].set(jnp.inf)
    f = np.asarray(normalised_fitness(poisoned))
    assert np.isnan(f[2]) and np.all(np.isfinite(np.delete(f, 2)))
    strategy = make_strategy(ESConfig(population_size=8), jnp.zeros(3))
    shaped = strategy.fitness_shaping_fn(None, -jnp.asarray(f), None, None)
    assert float(shaped[2]) == pytest.approx(0.5)  # the largest value to a minimiser: last


# ~27 s each (session 30: both opt-in); the ES step itself is tested on quadratics above.
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_es_improves_the_end_of_lifetime_return_over_the_initial_rule(seed):
    config = ESConfig(envs=("probe",), num_envs=8, rollout_len=4, lifetime_updates=40, score_updates=4,
                      rule=RuleConfig(hidden=16, y_size=4), hypers=HyperChoices(discounts=(0.9,), learning_rates=(1.0,),
                                                                             alpha_ys=(0.5,), entropy_costs=(0.01,)),
                      levels_per_env=2, population_size=16, sigma=0.05, es_lr=0.02, seed=seed)
    trainer = make_es_trainer(config, sources_for(config.envs))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(seed))
    step = jax.jit(trainer.step)
    before_params = trainer.rule_params(state)
    for _ in range(40):
        state, metrics = step(state)
    before = probe_bandit_return(before_params, config.rule, seed)
    after = probe_bandit_return(trainer.rule_params(state), config.rule, seed)
    # Optimal expected return 0.9, uniform policy 0.367: demand a clear gain.
    assert after > before + 0.15, (before, after)


@pytest.mark.slow  # default-suite time (session 30): ~20 s; LPG's kill-and-resume test (same RunDir) stays in the default suite
def test_kill_and_resume_reproduces_the_uninterrupted_es_run(tmp_path, killed_after_checkpoint):
    config = dataclasses.replace(TINY, num_generations=6, steps_per_chunk=2, checkpoint_every=1)
    full, trainer = es_train(config, str(tmp_path / "full"), quiet=True)

    with killed_after_checkpoint(2):
        es_train(config, str(tmp_path / "resumed"), quiet=True)
    resumed, _ = es_train(config, str(tmp_path / "resumed"), quiet=True)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(full), jax.device_get(resumed))
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert (tmp_path / "resumed" / "progress.png").stat().st_size > 1000
    saved, rule_config = load_rule(tmp_path / "resumed" / "rule.msgpack")
    assert rule_config == config.rule
    jax.tree.map(np.testing.assert_allclose, saved, jax.device_get(trainer.rule_params(resumed)))


@pytest.mark.slow  # default-suite time (session 30): ~30 s; LPG's sharded meta-step test stays in the default suite
def test_population_sharded_over_8_virtual_devices_equals_one_device():
    script = textwrap.dedent(
        """
        import dataclasses, jax, numpy as np
        from experiments.es_train import build, es_train
        from experiments.presets import ES_PRESETS
        assert jax.device_count() == 8, jax.devices()
        config = dataclasses.replace(ES_PRESETS["tiny"], population_size=8, num_generations=2)
        one, _ = es_train(config, None, quiet=True, devices=1)
        eight, _ = es_train(config, None, quiet=True, devices=8)
        # The population really is split: the compiled step holds a per-device slice of it.
        built = build(config, 8)
        hlo = built.run_chunk.lower(built.template).compile().as_text()
        assert "all-gather" in hlo or "all-reduce" in hlo
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     jax.device_get(one.strategy.mean), jax.device_get(eight.strategy.mean))
        print("ES-SHARDED-OK")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "ES-SHARDED-OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("kwargs, message", [
    (dict(population_size=7), "population_size"),
    (dict(score_updates=0), "score_updates"),
    (dict(num_generations=5, steps_per_chunk=2), "multiple"),
    (dict(sigma=0.0), "sigma"),
    (dict(hypers=HyperChoices(lifetime_scales=(0.5, 1.0))), "lifetime_scales must be"),
])
def test_bad_es_configs_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **kwargs)


# ------------------------------------------------------------------------------ lifetime conditioning
def test_a_conditioned_rule_reads_n_over_N_and_log_N_from_the_agents_own_update_count():
    env = ContextualBandit(num_states=4, num_actions=3)
    params = env.sample_params(jax.random.PRNGKey(0))
    config = RuleConfig(hidden=8, y_size=4, lifetime_inputs=True)
    agent = make_lpg_agent(env, params, config, optimizer="sgd")
    hypers = Hypers(*(jnp.float32(x) for x in (0.9, 1.0, 0.5, 0.0, 40)))
    rule_params = init_rule(config, jax.random.PRNGKey(1))

    def update(state, traj):
        inputs = agent.rule_inputs(state.params, jax.tree.map(lambda x: x[:, 0], traj), hypers,
                                   state.opt_state.count)
        new_state, _ = agent.update(rule_params, state, traj, hypers)
        return new_state, {"progress": inputs.progress[0], "log_lifetime": inputs.log_lifetime[0]}

    learner = make_lpg_learner(agent, rule_params, hypers)._replace(update=update)
    train = make_train(env, params, learner, num_envs=4, rollout_len=3)
    _, metrics = jax.jit(lambda s: train.run(s, 5))(train.init(jax.random.PRNGKey(2)))
    np.testing.assert_allclose(metrics["progress"], np.arange(5) / 40, rtol=1e-6)
    np.testing.assert_allclose(metrics["log_lifetime"], np.log(40.0), rtol=1e-6)


def test_a_conditioned_rule_can_tell_early_from_late_and_an_unconditioned_one_reads_neither():
    T, m = 6, 4
    base = RuleInputs(*(jnp.linspace(0, 1, T) for _ in range(5)), jnp.ones((T, m)) * 0.3, jnp.ones((T, m)) * 0.2)
    conditioned = RuleConfig(hidden=8, y_size=m, lifetime_inputs=True)
    params = init_rule(conditioned, jax.random.PRNGKey(0))
    at = lambda p: base._replace(progress=jnp.full(T, p), log_lifetime=jnp.full(T, np.log(100.0)))  # noqa: E731
    early, _ = UpdateRule(conditioned).apply(params, at(0.0))
    late, _ = UpdateRule(conditioned).apply(params, at(0.9))
    assert float(jnp.abs(early - late).max()) > 1e-4
    with pytest.raises(ValueError, match="lifetime_inputs"):
        UpdateRule(conditioned).apply(params, base)
    # Without conditioning the extra inputs are not read: the same outputs with or without them.
    plain = RuleConfig(hidden=8, y_size=m)
    p = init_rule(plain, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(UpdateRule(plain).apply(p, base)[0], UpdateRule(plain).apply(p, at(0.9))[0])


def test_a_conditioned_rule_without_a_lifetime_length_says_what_is_missing():
    env = ContextualBandit(num_states=4, num_actions=3)
    params = env.sample_params(jax.random.PRNGKey(0))
    config = RuleConfig(hidden=8, y_size=4, lifetime_inputs=True)
    hypers = Hypers(*(jnp.float32(x) for x in (0.9, 1.0, 0.5, 0.0)))  # no lifetime_updates
    learner = evaluate.lpg_learner(env, params, init_rule(config, jax.random.PRNGKey(1)), config, hypers)
    train = make_train(env, params, learner, num_envs=4, rollout_len=3)
    with pytest.raises(ValueError, match="lifetime_updates"):
        train.run(train.init(jax.random.PRNGKey(2)), 1)
