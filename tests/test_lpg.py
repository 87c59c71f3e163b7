"""LPG: the backward rule, meta-gradients, the critic, learning, resume, sharding, errors."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from envs import planning
from envs.chain import DelayedChain, make_chain
from envs.sources import level_sampler
from experiments.meta_train import meta_train
from experiments.presets import META_PRESETS
from lpg import agents, evaluate, sharding
from lpg.inner import Hypers
from lpg.meta import (HyperChoices, MetaConfig, Source, critic_values, group_meta_gradient, init_lifetime,
                      lifetime_window, make_group, make_meta_trainer, sources_for)
from lpg.runs import RunDir, RunDirError
from lpg.update_rule import RuleConfig, RuleInputs, UpdateRule, init_rule, load_rule, y_loss
from tests.helpers import probe_bandit_return

TINY = META_PRESETS["tiny"]
PROBE_HYPERS = HyperChoices(discounts=(0.9,), learning_rates=(1.0,), alpha_ys=(0.5,), entropy_costs=(0.01,))


def _rule_inputs(T=8, m=4, done_at=(4,), seed=0):
    rng = np.random.default_rng(seed)
    done = np.zeros(T, np.float32)
    done[list(done_at)] = 1.0
    return RuleInputs(
        r_t=jnp.asarray(rng.normal(size=T), jnp.float32), d_t=jnp.asarray(done), done_t=jnp.asarray(done),
        discount=jnp.full((T,), 0.99), pi_a_t=jnp.asarray(rng.uniform(size=T), jnp.float32),
        y_t=jnp.asarray(rng.normal(size=(T, m)), jnp.float32),
        y_tp1=jnp.asarray(rng.normal(size=(T, m)), jnp.float32),
    )


def test_rule_reads_backwards_and_resets_at_episode_ends():
    config = RuleConfig(hidden=16, y_size=4)
    rule = UpdateRule(config)
    params = init_rule(config, jax.random.PRNGKey(0))
    inputs = _rule_inputs()  # episode boundary after step 4: steps 0-4 | 5-7
    apply = jax.jit(rule.apply)
    base = apply(params, inputs)[0]

    def changed_steps(t):
        bumped = inputs._replace(r_t=inputs.r_t.at[t].add(3.0))
        return np.nonzero(np.abs(np.asarray(apply(params, bumped)[0] - base)) > 1e-7)[0].tolist()

    assert changed_steps(2) == [0, 1, 2]  # steps at and before t in the same episode, nothing after
    assert changed_steps(6) == [5, 6]  # nothing leaks back across the boundary at step 4
    assert changed_steps(4) == [0, 1, 2, 3, 4]


def test_a_rule_with_a_context_reads_no_further_ahead_than_its_window():
    config = RuleConfig(hidden=16, y_size=4, context=3)  # windows 0-2 | 3-5 | 6-7
    params = init_rule(config, jax.random.PRNGKey(0))
    inputs = _rule_inputs(done_at=())
    apply = jax.jit(UpdateRule(config).apply)
    base_pi, base_y = apply(params, inputs)

    def changed_steps(**bump):
        bumped = inputs._replace(**{k: getattr(inputs, k).at[t].add(3.0) for k, t in bump.items()})
        pi, y = apply(params, bumped)
        moved = (np.abs(np.asarray(pi - base_pi)) > 1e-7) | (np.abs(np.asarray(y - base_y)) > 1e-7).any(-1)
        return np.nonzero(moved)[0].tolist()

    assert changed_steps(r_t=4) == [3, 4]  # within its window only: nothing from step 6 on, nothing before 3
    assert changed_steps(r_t=6) == [6]
    assert changed_steps(r_t=2) == [0, 1, 2]
    # Beyond the window the future arrives only through the bootstrap input y(s_t+1) of the window's last step.
    assert changed_steps(y_tp1=5) == [3, 4, 5]
    with pytest.raises(ValueError, match="context"):
        RuleConfig(context=-1)


@pytest.mark.parametrize("y_loss", ["mse", "kl"])
def test_a_bootstrap_gate_blends_the_target_with_the_next_prediction(y_loss):
    config = RuleConfig(hidden=16, y_size=4, y_loss=y_loss, bootstrap_gate=True)
    params = init_rule(config, jax.random.PRNGKey(0))
    inputs = _rule_inputs()
    apply = jax.jit(UpdateRule(config).apply)
    y_next = np.clip(inputs.y_tp1, 0, 1) if y_loss == "mse" else jax.nn.softmax(inputs.y_tp1)

    def with_gate_bias(b):
        gate = params["params"]["gate"]
        forced = {"kernel": jnp.zeros_like(gate["kernel"]), "bias": jnp.full_like(gate["bias"], b)}
        return {"params": {**params["params"], "gate": forced}}

    closed = UpdateRule(dataclasses.replace(config, bootstrap_gate=False)).apply(
        {"params": {k: v for k, v in params["params"].items() if k != "gate"}}, inputs)[1]
    np.testing.assert_allclose(apply(with_gate_bias(50.0), inputs)[1], y_next, atol=1e-6)  # g = 1: ȳ(s_t+1)
    np.testing.assert_allclose(apply(with_gate_bias(-50.0), inputs)[1], closed, atol=1e-6)  # g = 0: no gate
    half = apply(with_gate_bias(0.0), inputs)[1]
    np.testing.assert_allclose(half, 0.5 * (y_next + closed), atol=1e-6)
    if y_loss == "kl":
        np.testing.assert_allclose(half.sum(-1), 1.0, atol=1e-6)  # still a distribution
    else:
        assert float(half.min()) >= 0.0 and float(half.max()) <= 1.0
    shut = init_rule(dataclasses.replace(config, bootstrap_gate_bias=-3.0), jax.random.PRNGKey(0))
    np.testing.assert_allclose(shut["params"]["gate"]["bias"], -3.0)  # the initial bias is the config's
    # Shut where s_t+1 is terminal (d_t = 1 at step 4): the no-gate target there, ȳ(s_t+1) elsewhere.
    masked = UpdateRule(dataclasses.replace(config, bootstrap_gate_terminal_shut=True)).apply(with_gate_bias(50.0), inputs)[1]
    terminal = np.asarray(inputs.d_t, bool)
    assert terminal.sum() == 1
    np.testing.assert_allclose(masked[terminal], closed[terminal], atol=1e-6)
    np.testing.assert_allclose(masked[~terminal], y_next[~terminal], atol=1e-6)
    with pytest.raises(ValueError, match="bootstrap_gate=True"):
        RuleConfig(bootstrap_gate_carry=True)


@pytest.mark.parametrize("y_loss", ["mse", "kl"])
def test_a_carrying_gate_is_a_lambda_return_over_targets(y_loss):
    config = RuleConfig(hidden=16, y_size=4, y_loss=y_loss, bootstrap_gate=True, bootstrap_gate_carry=True)
    params = init_rule(config, jax.random.PRNGKey(1))
    inputs = _rule_inputs()  # episode (terminal) end at step 4: steps 0-4 | 5-7
    y_next = np.clip(inputs.y_tp1, 0, 1) if y_loss == "mse" else np.asarray(jax.nn.softmax(inputs.y_tp1))
    closed = np.asarray(UpdateRule(dataclasses.replace(config, bootstrap_gate=False, bootstrap_gate_carry=False)).apply(
        {"params": {k: v for k, v in params["params"].items() if k != "gate"}}, inputs)[1])

    def target(cfg, bias, inputs=inputs):
        gate = params["params"]["gate"]
        forced = {"kernel": jnp.zeros_like(gate["kernel"]), "bias": jnp.full_like(gate["bias"], bias)}
        return np.asarray(UpdateRule(cfg).apply({"params": {**params["params"], "gate": forced}}, inputs)[1])

    # Open: every step takes ȳ after its episode's (or the trajectory's) last step.
    np.testing.assert_allclose(target(config, 50.0), y_next[[4, 4, 4, 4, 4, 7, 7, 7]], atol=1e-6)
    # Open but shut at the terminal step: the episode's steps all take the terminal step's own target.
    shut = target(dataclasses.replace(config, bootstrap_gate_terminal_shut=True), 50.0)
    np.testing.assert_allclose(shut, np.concatenate([closed[[4] * 5], y_next[[7] * 3]]), atol=1e-6)
    # Half open: the recursion ŷ_t = ½ b_t + ½ σ(W h_t), b_t = ŷ_t+1 inside an episode, ȳ(s_t+1) at its end.
    expected = np.zeros_like(closed)
    for t in reversed(range(8)):
        b = y_next[t] if t in (4, 7) else expected[t + 1]
        expected[t] = 0.5 * b + 0.5 * closed[t]
    half = target(config, 0.0)
    np.testing.assert_allclose(half, expected, atol=1e-6)
    if y_loss == "kl":
        np.testing.assert_allclose(half.sum(-1), 1.0, atol=1e-6)
    # A context's windows end the carry as an episode does: windows 0-2 | 3-5 | 6-7.
    no_episodes = inputs._replace(d_t=jnp.zeros(8), done_t=jnp.zeros(8))
    windowed = target(dataclasses.replace(config, context=3), 50.0, no_episodes)
    np.testing.assert_allclose(windowed, y_next[[2, 2, 2, 5, 5, 5, 7, 7]], atol=1e-6)


def _probe_config(**kw):
    base = MetaConfig(
        envs=("probe",), lifetimes_per_env=4, num_envs=8, rollout_len=4, inner_updates=2, lifetime_updates=20,
        rule=RuleConfig(hidden=16, y_size=4), hypers=PROBE_HYPERS, meta_lr=3e-3, num_meta_steps=10,
        steps_per_chunk=5,
    )
    return dataclasses.replace(base, **kw)


def test_meta_gradient_is_finite_nonzero_and_matches_finite_differences():
    with jax.enable_x64(True):
        config = _probe_config(lifetimes_per_env=1)
        trainer = make_meta_trainer(config, sources_for(config.envs))
        state = trainer.init(jax.random.PRNGKey(3))
        group = trainer.groups[0]
        to64 = lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
        # flax initialises float32 parameters even under x64: promote the whole lifetime.
        lifetime = jax.tree.map(lambda x: x[0], state.lifetimes[0])
        lifetime = lifetime.replace(agent=jax.tree.map(to64, lifetime.agent), critic=jax.tree.map(to64, lifetime.critic))

        def loss(rule_params):
            return lifetime_window(group, config, rule_params, lifetime)[0]

        # Zero-initialised tables give y = 0 and zero biases put φ's ReLUs exactly on their kink,
        # where finite differences see half a slope; jitter the rule to a generic point.
        params = jax.tree.map(
            lambda x: to64(x) + 0.1 * jax.random.normal(jax.random.PRNGKey(9), x.shape, jnp.float64),
            state.rule_params,
        )
        grads = jax.jit(jax.grad(loss))(params)
        flat_g = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
        assert bool(jnp.all(jnp.isfinite(flat_g))) and float(jnp.linalg.norm(flat_g)) > 0
        direction = jax.tree.map(
            lambda x, k: jax.random.normal(k, x.shape, jnp.float64),
            params, jax.tree.unflatten(jax.tree.structure(params),
                                       list(jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(params))))),
        )
        eps = 1e-5
        f = jax.jit(loss)
        plus = f(jax.tree.map(lambda p, d: p + eps * d, params, direction))
        minus = f(jax.tree.map(lambda p, d: p - eps * d, params, direction))
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def _fresh_lifetime(source: Source, config: MetaConfig):
    """(group, a fresh lifetime, a fresh rule) for one source."""
    group = make_group(source, config)
    return group, init_lifetime(group, config, jax.random.PRNGKey(0)), init_rule(config.rule, jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def probe_trainer():
    """One probe-bandit meta-trainer and its jitted meta-step, shared by the tests below."""
    config = _probe_config(lifetime_updates=40)
    trainer = make_meta_trainer(config, sources_for(config.envs))
    return config, trainer, jax.jit(trainer.step)


@pytest.mark.slow  # default-suite time (session 30): ~15 s; sampled lifetime lengths are an option no preset uses
def test_lifetimes_draw_their_own_length_and_end_at_it():
    hypers = dataclasses.replace(PROBE_HYPERS, lifetime_scales=(0.5, 1.0, 2.0))
    config = _probe_config(lifetime_updates=8, lifetimes_per_env=16, hypers=hypers)  # K = 2
    trainer = make_meta_trainer(config, sources_for(config.envs))
    state, step = trainer.init(jax.random.PRNGKey(0)), jax.jit(trainer.step)
    assert set(np.asarray(state.lifetimes[0].hypers.lifetime_updates).tolist()) == {4.0, 8.0, 16.0}
    renewed, ended_lengths = 0, set()
    for _ in range(8):
        before = state.lifetimes[0]
        state, metrics = step(state)
        after = state.lifetimes[0]
        ended = np.asarray(before.updates) + config.inner_updates >= np.asarray(before.hypers.lifetime_updates)
        assert int(metrics["probe/collapsed"]) == 0 and int(metrics["probe/nonfinite"]) == 0
        np.testing.assert_array_equal(np.asarray(after.updates) == 0, ended)  # renewed exactly at its own N
        np.testing.assert_array_equal(np.asarray(after.updates)[~ended], np.asarray(before.updates)[~ended] + 2)
        renewed += int(ended.sum())
        ended_lengths.update(np.asarray(before.hypers.lifetime_updates)[ended].tolist())
        assert set(np.asarray(after.hypers.lifetime_updates).tolist()) <= {4.0, 8.0, 16.0}  # renewed: drawn again
    assert ended_lengths == {4.0, 8.0, 16.0} and renewed >= 16  # every length ended at its N in 16 updates
    for scales, message in (((), "non-empty"), ((1.0, 0.0), "lifetime_scales must be > 0")):
        with pytest.raises(ValueError, match=message):
            HyperChoices(lifetime_scales=scales)


@pytest.mark.slow  # default-suite time (session 30): ~18 s; a wrong-signed step also fails the learning tests below
def test_one_meta_step_moves_the_rule_against_its_meta_gradient(probe_trainer):
    """Adam's first step is -lr · g / (|g| + eps) per parameter: -meta_lr · sign(g) wherever the
    meta-gradient g (of the lifetimes' windows, from `group_meta_gradient`) is not ~0; clipping and the
    unit-norm balance of sources rescale g and leave its sign."""
    config, trainer, step = probe_trainer
    state = trainer.init(jax.random.PRNGKey(0))
    new_state, metrics = step(state)
    assert int(metrics["skipped_updates"]) == 0 and int(metrics["probe/nonfinite"]) == 0
    grads = jax.jit(lambda p, b: group_meta_gradient(trainer.groups[0], config, p, b)[1])(
        state.rule_params, state.lifetimes[0])
    g, delta = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in
                (grads, jax.tree.map(jnp.subtract, new_state.rule_params, state.rule_params)))
    assert np.isclose(float(metrics["probe/grad_norm"]), np.linalg.norm(g), rtol=1e-4)
    # What reaches Adam: g at unit norm (one source), clipped to meta_max_grad_norm; its first step is
    # -lr · s / (|s| + 1e-8), i.e. -lr · sign(g) wherever s is well above Adam's eps.
    scaled = g / np.linalg.norm(g) * min(1.0, config.meta_max_grad_norm)
    lr = config.meta_lr
    np.testing.assert_allclose(delta, -lr * scaled / (np.abs(scaled) + 1e-8), rtol=1e-2, atol=1e-2 * lr)
    clear = np.abs(scaled) > 1e-6
    assert clear.sum() > 100
    np.testing.assert_allclose(delta[clear], -lr * np.sign(g[clear]), rtol=1e-2)
    assert np.all(delta[g == 0] == 0)


def _occupancy(mdp, pi, steps=400):
    """Undiscounted state occupancy of an episode from d0 under pi (normalised): where errors matter."""
    P_T, d, occ = mdp.policy_matrix(pi).T.tocsr(), mdp.d0.copy(), np.zeros(mdp.num_states)
    for _ in range(steps):
        occ, d = occ + d, P_T @ d
    return occ / occ.sum()


@pytest.mark.parametrize("level", ["chain_40", "tabular_small"])
def test_meta_critic_tracks_the_exact_value_of_the_current_policy(level):
    """After 25 windows of a lifetime, the critic's v matches V^π of the agent's current policy
    (exact policy evaluation), weighted by where the policy goes. A chain of length 40 > T = 20
    needs bootstrapping across rollouts; the critic starts at 0, an error of the value's scale."""
    if level == "chain_40":
        env = DelayedChain(max_length=50)
        source = Source(level, env, lambda key: make_chain(env, 40, good_action=1))
    else:
        source = Source(level, *level_sampler(level))
    config = MetaConfig(envs=(level,), num_envs=32, rollout_len=20, inner_updates=5, lifetime_updates=250,
                        rule=RuleConfig(hidden=16, y_size=4),
                        hypers=HyperChoices(discounts=(0.99,), learning_rates=(40.0,), alpha_ys=(0.5,),
                                            entropy_costs=(0.01,)))
    group, lifetime, rule_params = _fresh_lifetime(source, config)
    window = jax.jit(lambda lt: lifetime_window(group, config, rule_params, lt)[1][0])
    for _ in range(25):
        lifetime = window(lifetime)
    mdp = planning.tabular_mdp(source.env, lifetime.env_params)
    states = jnp.arange(mdp.num_states)
    logits, _ = jax.vmap(lambda s: group.agent.network.apply(lifetime.agent.params, s))(states)
    pi = np.asarray(jax.nn.softmax(logits), np.float64)
    true_v = planning.policy_evaluation(mdp, pi, 0.99)
    critic_v = np.asarray(critic_values(group, lifetime.critic.params, states))
    occ = _occupancy(mdp, pi)
    scale, error = occ @ np.abs(true_v), occ @ np.abs(critic_v - true_v)
    assert scale > 0.3, scale  # a value worth tracking
    assert error < (0.05 if level == "chain_40" else 0.2) * scale, (error, scale)


@pytest.mark.parametrize("anneal", [0.0, 0.5, 1.0])
def test_entropy_bonus_falls_linearly_over_the_lifetime(anneal):
    """meta-loss = pg − β0 (1 − a n/N) H(π) with the regularisers off, n the updates done at the scoring
    rollout: the paper's constant bonus at a = 0, none at the end of a lifetime at a = 1."""
    source = Source("chain_short", *level_sampler("chain_short"))
    config = MetaConfig(envs=("chain_short",), num_envs=8, rollout_len=10, inner_updates=2, lifetime_updates=50,
                        rule=RuleConfig(hidden=8, y_size=4), beta1=0.0, beta2=0.0, beta3=0.0, entropy_anneal=anneal,
                        hypers=HyperChoices(discounts=(0.99,), learning_rates=(40.0,), alpha_ys=(0.5,),
                                            entropy_costs=(0.02,)))
    group, lifetime, rule_params = _fresh_lifetime(source, config)
    window = jax.jit(lambda lt: lifetime_window(group, config, rule_params, lt)[1][1])
    for done in (0, 23, 48):  # the scoring rollout comes after 2, 25 and 50 of the 50 updates
        m = window(lifetime.replace(updates=jnp.asarray(done, lifetime.updates.dtype)))
        beta0 = 0.02 * (1.0 - anneal * (done + 2) / 50)
        assert float(m["entropy"]) > 0.5  # a fresh policy: the bonus is not multiplied by ~0
        np.testing.assert_allclose(float(m["meta_loss"]), float(m["pg_loss"] - beta0 * m["entropy"]),
                                   rtol=1e-5, atol=1e-7)


def test_y_table_takes_the_implicit_step_and_stays_in_the_targets_range():
    # One state holding the whole batch, lr 80, α_y 1: explicit SGD would move y by 160·(ŷ − y).
    grads = 2.0 * 1.0 * 1.0 * (jnp.zeros((2, 3)) - jnp.ones((2, 3)))  # d/dy of α_y·mean‖y − ŷ‖², y=0, ŷ=1
    share = jnp.array([1.0, 0.0])
    step = agents.implicit_table_step(grads, share, 80.0, 1.0)
    np.testing.assert_allclose(0.0 - 80.0 * step[0], 160.0 / 161.0, rtol=1e-6)  # (y + a ŷ)/(1 + a), a = 160
    np.testing.assert_array_equal(step[1], grads[1])  # an unvisited row keeps plain SGD
    # A whole lifetime at the paper's largest rates: ŷ ∈ [0, 1] and every step is a convex
    # combination, so y stays in [0, 1] (plain SGD leaves it within one update on a chain).
    env, _ = level_sampler("chain_short")
    params = make_chain(env, 5, good_action=0)
    config = RuleConfig(hidden=16, y_size=4)
    hypers = Hypers(*(jnp.float32(x) for x in (0.99, 80.0, 1.0, 0.01, 100)))
    learner = evaluate.lpg_learner(env, params, init_rule(config, jax.random.PRNGKey(2)), config, hypers)
    lifetime = evaluate.LifetimeConfig(num_updates=60, num_envs=16, rollout_len=20, num_seeds=2)
    states, _ = evaluate.make_lifetimes(env, lambda _: learner, lifetime, return_state=True)(
        jax.tree.map(lambda x: jnp.asarray(x)[None], params), (), jax.random.PRNGKey(0))
    y = np.asarray(states.learner.params["params"]["aux"])
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0 + 1e-6 and y.max() > 0.05


@pytest.mark.parametrize("baseline,optimizer,blind", [
    ("batch_mean", "adam", True), ("none", "adam", False), ("adam_batch_mean", "adam", True),
    ("adam_batch_mean", "sgd", False), ("batch_mean", "sgd", True), ("step_mean", "sgd", True),
    ("adam_step_mean", "adam", True), ("adam_step_mean", "sgd", False)])
def test_pi_hat_baseline_makes_the_update_blind_to_a_constant_push(baseline, optimizer, blind):
    """Shifting every π̂ by a constant (the π̂ head's bias) must not change the agent's update when
    the batch mean is subtracted, and does change it without (a constant times Σ ∇log π(a) of the
    sampled actions, zero only in expectation). MLP agent on Catch, as in evaluation;
    "adam_batch_mean" subtracts the mean for Adam agents only."""
    from gymnax import make as gymnax_make

    from lpg import rollout as engine
    from lpg.inner import make_lpg_agent

    env, params = gymnax_make("Catch-bsuite")
    config = RuleConfig(hidden=16, y_size=4, pi_hat_baseline=baseline)
    agent = make_lpg_agent(env, params, config, optimizer=optimizer)
    rule = init_rule(config, jax.random.PRNGKey(0))
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 2.0 if "pi_hat" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path)
        else x, rule)
    hypers = Hypers(*(jnp.float32(x) for x in (0.99, 1e-2, 0.5, 0.0, 100)))
    state = agent.init(jax.random.PRNGKey(1), hypers.learning_rate)
    rollout_state = engine.reset(env, params, jax.random.PRNGKey(2), 8)
    _, traj = engine.rollout(env, params, agent.policy_fn, state.params, rollout_state, jax.random.PRNGKey(3), 20)
    (new, (pi_hat, _)), (new_shifted, (pi_hat_shifted, _)) = (agent.update(r, state, traj, hypers) for r in (rule, shifted))
    np.testing.assert_allclose(pi_hat_shifted, pi_hat + 2.0, rtol=1e-5, atol=1e-5)  # the rule's own output moved
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_shifted.params)))
    if blind:
        assert gap < 1e-6
    else:
        assert gap > 1e-4


@pytest.mark.parametrize("baseline,blind_to_steps", [("step_mean", True), ("adam_step_mean", True),
                                                     ("batch_mean", False), ("adam_batch_mean", False)])
def test_a_step_mean_baseline_removes_what_pi_hat_owes_to_the_step(baseline, blind_to_steps):
    """π̂ [B, T] plus any c_t shared by every stream at step t (what the backward LSTM adds for a
    step's place in the rollout) pushes the policy the same with the per-step mean subtracted; the
    batch mean removes only c's average. Either way a constant goes, and what is left sums to 0."""
    from gymnax import make as gymnax_make

    from lpg.inner import make_lpg_agent

    env, params = gymnax_make("Catch-bsuite")
    agent = make_lpg_agent(env, params, RuleConfig(hidden=8, y_size=4, pi_hat_baseline=baseline), optimizer="adam")
    pi_hat = jax.random.normal(jax.random.PRNGKey(0), (8, 20))
    per_step = jnp.linspace(-2.0, 1.0, 20)[None, :]
    used, shifted, constant = (np.asarray(agent.pi_hat_used(x)) for x in (pi_hat, pi_hat + per_step, pi_hat + 3.0))
    np.testing.assert_allclose(constant, used, atol=1e-5)
    x = np.asarray(pi_hat)
    np.testing.assert_allclose(used, x - (x.mean(0, keepdims=True) if blind_to_steps else x.mean()), atol=1e-5)
    assert abs(used.sum()) < 1e-3
    if blind_to_steps:
        np.testing.assert_allclose(shifted, used, atol=1e-5)
        np.testing.assert_allclose(used.sum(0), 0.0, atol=1e-5)
    else:
        assert np.abs(shifted - used).max() > 0.5


def test_rules_saved_before_the_baseline_option_load_without_one(tmp_path):
    from lpg.update_rule import save_rule

    save_rule(tmp_path / "rule.msgpack", init_rule(RuleConfig(hidden=8, y_size=4), jax.random.PRNGKey(0)),
              RuleConfig(hidden=8, y_size=4))
    assert load_rule(tmp_path / "rule.msgpack")[1].pi_hat_baseline == "batch_mean"
    legacy = json.loads((tmp_path / "rule.json").read_text())
    del legacy["pi_hat_baseline"]
    (tmp_path / "rule.json").write_text(json.dumps(legacy))
    assert load_rule(tmp_path / "rule.msgpack")[1].pi_hat_baseline == "none"


def test_a_rule_starts_network_agents_y_where_its_config_says(tmp_path):
    """RuleConfig.y_init reaches the agent (y = 0 at every state with "zeros"); rules saved before the
    field existed load with "lecun", the random start they were meta-trained with."""
    from gymnax import make as gymnax_make

    from lpg.inner import make_lpg_agent
    from lpg.update_rule import save_rule

    env, params = gymnax_make("Catch-bsuite")
    obs = jax.vmap(lambda k: env.reset(k, params)[0])(jax.random.split(jax.random.PRNGKey(0), 8))
    for y_init, all_zero in (("zeros", True), ("lecun", False)):
        agent = make_lpg_agent(env, params, RuleConfig(hidden=8, y_size=4, y_init=y_init), optimizer="adam")
        state = agent.init(jax.random.PRNGKey(1), jnp.float32(1e-2))
        y = np.asarray(jax.vmap(lambda o: agent.network.apply(state.params, o))(obs)[1])
        assert bool(np.all(y == 0.0)) == all_zero
    save_rule(tmp_path / "rule.msgpack", init_rule(RuleConfig(hidden=8, y_size=4), jax.random.PRNGKey(0)),
              RuleConfig(hidden=8, y_size=4, y_init="zeros"))
    assert load_rule(tmp_path / "rule.msgpack")[1].y_init == "zeros"
    legacy = json.loads((tmp_path / "rule.json").read_text())
    del legacy["y_init"]
    (tmp_path / "rule.json").write_text(json.dumps(legacy))
    assert load_rule(tmp_path / "rule.msgpack")[1].y_init == "lecun"
    with pytest.raises(ValueError, match="y_init"):
        RuleConfig(y_init="normal")


@struct.dataclass
class _NaNState(environment.EnvState):
    time: jnp.ndarray


class _NaNRewardEnv(environment.Environment):
    """Pays NaN: any meta-gradient through it is non-finite."""

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=5)

    def step_env(self, key, state, action, params):
        state = _NaNState(time=state.time + 1)
        return jnp.int32(0), state, jnp.float32(jnp.nan), jnp.bool_(False), {}

    def reset_env(self, key, params):
        return jnp.int32(0), _NaNState(time=jnp.int32(0))

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Discrete(1)


def test_an_all_nan_source_leaves_the_rule_unchanged_and_resets_every_lifetime():
    config = _probe_config(envs=("nan",))
    env = _NaNRewardEnv()
    trainer = make_meta_trainer(config, [Source("nan", env, lambda key: env.default_params)])
    state = trainer.init(jax.random.PRNGKey(0))
    new_state, metrics = jax.jit(trainer.step)(state)
    assert int(metrics["nan/nonfinite"]) == config.lifetimes_per_env
    assert np.all(np.asarray(new_state.lifetimes[0].updates) == 0)
    jax.tree.map(np.testing.assert_array_equal, state.rule_params, new_state.rule_params)


def test_a_non_finite_lifetime_is_reset_and_left_out_while_the_others_update_the_rule(probe_trainer):
    _, trainer, step = probe_trainer
    state = trainer.init(jax.random.PRNGKey(0))
    batch = state.lifetimes[0]
    poisoned_agent = batch.agent.replace(params=jax.tree.map(lambda x: x.at[1].set(jnp.inf), batch.agent.params))
    poisoned = state.replace(lifetimes=(batch.replace(agent=poisoned_agent),))
    _, clean = step(state)
    new_state, metrics = step(poisoned)
    assert int(metrics["probe/nonfinite"]) == 1 and int(clean["probe/nonfinite"]) == 0
    assert int(metrics["skipped_updates"]) == 0
    assert int(new_state.lifetimes[0].updates[1]) == 0  # reset
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state.lifetimes[0].agent.params))
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.rule_params),
                                                          jax.tree.leaves(new_state.rule_params))]
    assert np.isfinite(float(metrics["meta_loss"])) and max(moved) > 0 and all(np.isfinite(moved))
    # The other lifetimes' gradients were averaged without lifetime 1 (not vetoed, not diluted): the
    # meta-gradient is the mean of lifetimes 0, 2 and 3 alone, computed as a batch of those three.
    config = probe_trainer[0]
    others = jax.tree.map(lambda x: x[np.array([0, 2, 3])], batch)
    expected = jax.jit(lambda p, b: group_meta_gradient(trainer.groups[0], config, p, b)[1])(state.rule_params, others)
    norm = float(optax.global_norm(expected))
    assert float(metrics["probe/grad_norm"]) == pytest.approx(norm, rel=1e-4)
    assert float(metrics["probe/grad_norm"]) != pytest.approx(0.75 * norm, rel=1e-2)  # not diluted over 4


@pytest.mark.parametrize("seed", [0, 1])
def test_meta_training_improves_lifetime_return_over_the_initial_rule(probe_trainer, seed):
    config, trainer, step = probe_trainer
    state = trainer.init(jax.random.PRNGKey(seed))
    trained = state
    for _ in range(150):
        trained, _ = step(trained)
    before = probe_bandit_return(state.rule_params, config.rule, seed)
    after = probe_bandit_return(trained.rule_params, config.rule, seed)
    # Optimal expected return 0.9, uniform policy 0.367: demand a clear gain.
    assert after > before + 0.15, (before, after)
    assert after > 0.6, (before, after)


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, killed_after_checkpoint, monkeypatch):
    config = dataclasses.replace(TINY, num_meta_steps=6, steps_per_chunk=2, checkpoint_every=1)
    full, _ = meta_train(config, str(tmp_path / "full"), quiet=True)

    with killed_after_checkpoint(2):
        meta_train(config, str(tmp_path / "resumed"), quiet=True)
    resumed, _ = meta_train(config, str(tmp_path / "resumed"), quiet=True)

    jax.tree.map(np.testing.assert_array_equal, full.rule_params, resumed.rule_params)
    rows = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert (tmp_path / "resumed" / "progress.png").stat().st_size > 1000  # redrawn at every checkpoint
    saved_params, _ = load_rule(tmp_path / "resumed" / "rule.msgpack")
    jax.tree.map(np.testing.assert_allclose, saved_params, jax.device_get(resumed.rule_params))
    # The rule at every checkpoint (meta-steps 2, 4, 6), each as the state checkpointed there.
    snapshots = sorted(p.name for p in (tmp_path / "full" / "rules").iterdir())
    assert snapshots == ["step00002", "step00004", "step00006"]
    kept = RunDir(tmp_path / "full", config)
    for chunk in kept.checkpoints.all_steps():  # the last two (chunks 2 and 3)
        state = kept.checkpoints.restore(chunk)
        snapshot, snapshot_config = load_rule(tmp_path / "full" / "rules" / f"step{2 * chunk:05d}" / "rule.msgpack")
        jax.tree.map(np.testing.assert_array_equal, snapshot, state["rule_params"])
        assert snapshot_config == config.rule
    assert (tmp_path / "full" / "rules" / "step00002" / "config.json").read_text() == \
        (tmp_path / "full" / "config.json").read_text()
    kept.close()
    RunDir(tmp_path / "full", config, resume=False).close()  # starting over clears the snapshots too
    assert not (tmp_path / "full" / "rules").exists()

    # Run again once finished: the final state comes back from the checkpoint, nothing is compiled.
    def no_compile(*args, **kwargs):
        raise AssertionError("a finished run compiled its chunk")

    monkeypatch.setattr(jax.stages.Lowered, "compile", no_compile)
    again, _ = meta_train(config, str(tmp_path / "resumed"), quiet=True)
    jax.tree.map(np.testing.assert_array_equal, full.rule_params, again.rule_params)


def test_a_finished_run_resumed_with_more_meta_steps_equals_one_asked_for_that_many(tmp_path, capsys):
    config = dataclasses.replace(TINY, num_meta_steps=6, steps_per_chunk=2, checkpoint_every=1)
    full, _ = meta_train(config, str(tmp_path / "full"), quiet=True)
    meta_train(dataclasses.replace(config, num_meta_steps=2), str(tmp_path / "extended"))
    extended, _ = meta_train(config, str(tmp_path / "extended"))
    assert "extending" in capsys.readouterr().err
    jax.tree.map(np.testing.assert_array_equal, full.rule_params, extended.rule_params)
    rows = [json.loads(l) for l in (tmp_path / "extended" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert sorted(p.name for p in (tmp_path / "extended" / "rules").iterdir()) == [
        "step00002", "step00004", "step00006"]
    assert json.loads((tmp_path / "extended" / "config.json").read_text())["num_meta_steps"] == 6
    # Fewer steps than the run holds is another run, refused with what differs.
    with pytest.raises(RunDirError, match="num_meta_steps: 6 there, 4 here"):
        meta_train(dataclasses.replace(config, num_meta_steps=4), str(tmp_path / "extended"), quiet=True)


def test_sharded_over_8_virtual_devices_equals_unsharded(tmp_path):
    script = textwrap.dedent(
        """
        import dataclasses, jax, numpy as np
        from experiments.meta_train import meta_train
        from experiments.presets import META_PRESETS
        assert jax.device_count() == 8, jax.devices()
        config = dataclasses.replace(META_PRESETS["tiny"], lifetimes_per_env=8, num_meta_steps=2)
        one, _ = meta_train(config, None, quiet=True, devices=1)
        eight, _ = meta_train(config, None, quiet=True, devices=8)
        assert len(eight.lifetimes[0].updates.sharding.device_set) == 8
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     jax.device_get(one.rule_params), jax.device_get(eight.rule_params))
        print("SHARDED-OK")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "SHARDED-OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.slow  # a subprocess with 8 virtual devices: minutes on 2 busy cores
def test_micro_batches_sharded_over_8_virtual_devices_equal_one_unsharded_batch():
    """Micro-batch j holds lifetimes j, j + m, ...: every device works on its own lifetimes in
    every micro-batch, so the compiled step moves no lifetime between devices (a micro-batch of
    contiguous lifetimes would all-gather them); only the meta-gradient sums are all-reduced."""
    script = textwrap.dedent(
        """
        import dataclasses, re, jax, numpy as np
        from experiments.meta_train import meta_train
        from experiments.presets import META_PRESETS
        from lpg import sharding
        from lpg.meta import make_meta_trainer, sources_for
        assert jax.device_count() == 8, jax.devices()
        config = dataclasses.replace(META_PRESETS["tiny"], lifetimes_per_env=16, num_meta_steps=2)
        split = dataclasses.replace(config, lifetime_microbatches=2)
        one, _ = meta_train(config, None, quiet=True, devices=1)
        eight, _ = meta_train(split, None, quiet=True, devices=8)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     jax.device_get(one.rule_params), jax.device_get(eight.rule_params))
        trainer = make_meta_trainer(split, sources_for(split.envs))
        abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
        shardings = sharding.meta_state_shardings(abstract, sharding.lifetime_mesh(8))
        hlo = jax.jit(trainer.run, in_shardings=(shardings,), out_shardings=(shardings, None)).lower(
            abstract).compile().as_text()
        moves = re.findall(r"\\b(all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\\(", hlo)
        assert not moves and "all-reduce" in hlo, moves
        print("MICROBATCHES-SHARDED-OK")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert "MICROBATCHES-SHARDED-OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(inner_updates=0), "inner_updates"),
        (dict(lifetime_updates=1, inner_updates=5), "lifetime_updates"),
        (dict(lifetime_updates=10, inner_updates=5, hypers=HyperChoices(lifetime_scales=(0.4, 1.0))), "smallest"),
        (dict(envs=()), "envs"),
        (dict(num_meta_steps=7, steps_per_chunk=2), "multiple"),
        (dict(agent="transformer"), "agent"),
    ],
)
def test_bad_meta_configs_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **kwargs)


def test_bad_rule_config_and_unknown_source_and_indivisible_lifetimes():
    with pytest.raises(ValueError, match="y_loss"):
        RuleConfig(y_loss="huber")
    with pytest.raises(ValueError, match="pi_hat_baseline"):
        RuleConfig(pi_hat_baseline="ema")
    with pytest.raises(ValueError, match="unknown level source"):
        sources_for(["no_such_grid"])
    with pytest.raises(ValueError, match="cannot be split evenly"):
        sharding.check_divisible(3, _FakeMesh(2))


class _FakeMesh:
    def __init__(self, n):
        self.devices = np.zeros(n)


def test_y_losses_on_known_numbers():
    """MSE: ‖y − ŷ‖²; KL: KL(softmax y ‖ ŷ), the paper's eq. 2 (zero at ŷ = softmax y, not symmetric)."""
    y, y_hat = jnp.array([0.0, 0.0]), jnp.array([0.25, 0.75])
    assert float(y_loss(y, y_hat, "mse")) == pytest.approx(0.25 ** 2 + 0.75 ** 2)
    assert float(y_loss(y, y_hat, "kl")) == pytest.approx(0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), rel=1e-6)
    logits = jnp.array([0.3, -1.2, 2.0])
    assert float(y_loss(logits, jax.nn.softmax(logits), "kl")) == pytest.approx(0.0, abs=1e-6)
    # KL(p ‖ q) with p = softmax y, not KL(q ‖ p): the two differ here.
    p, q = np.asarray(jax.nn.softmax(logits)), np.array([0.6, 0.3, 0.1])
    assert float(y_loss(logits, jnp.asarray(q), "kl")) == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-5)
    assert abs(np.sum(p * np.log(p / q)) - np.sum(q * np.log(q / p))) > 0.1


@pytest.mark.slow  # default-suite time (session 30): ~10 s; the KL target is an option, the MSE default is tested throughout
def test_kl_target_mode_runs_and_gives_finite_losses():
    config = _probe_config(rule=RuleConfig(hidden=16, y_size=4, y_loss="kl"))
    trainer = make_meta_trainer(config, sources_for(config.envs))
    _, metrics = jax.jit(trainer.step)(trainer.init(jax.random.PRNGKey(0)))
    assert np.isfinite(float(metrics["meta_loss"])) and int(metrics["skipped_updates"]) == 0


@pytest.mark.parametrize("source", [pytest.param("chain_distraction", marks=pytest.mark.slow), "generated_vector"])  # ~20 s each
def test_network_agents_trained_by_adam_give_a_finite_meta_gradient(source):
    """Differentiating through Adam: with eps_root = 0, d√v/dv = inf wherever a gradient is exactly 0
    (the distraction chain's unused branch bit before the choice, a grid cell never visited) and
    every lifetime turns NaN."""
    config = _probe_config(envs=(source,), lifetimes_per_env=2, num_envs=4, rollout_len=8)
    trainer = make_meta_trainer(config, sources_for(config.envs))
    assert trainer.groups[0].agent.optimizer_name == "adam" and not trainer.groups[0].tabular
    state = trainer.init(jax.random.PRNGKey(0))
    new_state, metrics = jax.jit(trainer.step)(state)
    assert int(metrics[f"{source}/nonfinite"]) == 0 and float(metrics["grad_norm"]) > 0
    assert min(abs(float(new_state.lifetimes[0].hypers.learning_rate[0]) - lr)
               for lr in config.hypers.network_learning_rates) < 1e-7


def test_sources_meta_gradients_are_balanced_to_unit_norm_before_averaging():
    """Two sources whose meta-gradients differ in size: each is scaled to unit norm, then they are
    averaged, so neither outweighs the other (computed here from each source's `group_meta_gradient`)."""
    config = _probe_config(envs=("probe", "chain_short"), rollout_len=8)
    trainer = make_meta_trainer(config, sources_for(config.envs))
    state = trainer.init(jax.random.PRNGKey(4))
    _, metrics = jax.jit(trainer.step)(state)
    grads = [jax.jit(lambda p, b, g=group: group_meta_gradient(g, config, p, b)[1])(state.rule_params, batch)
             for group, batch in zip(trainer.groups, state.lifetimes)]
    norms = [float(optax.global_norm(g)) for g in grads]
    for name, norm in zip(config.envs, norms):
        assert float(metrics[f"{name}/grad_norm"]) == pytest.approx(norm, rel=1e-4)
    assert max(norms) / min(norms) > 2  # so balancing matters
    balanced = jax.tree.map(lambda a, b: (a / norms[0] + b / norms[1]) / 2, *grads)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.global_norm(balanced)), rel=1e-4)
    plain = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    assert float(metrics["grad_norm"]) != pytest.approx(float(optax.global_norm(plain)), rel=1e-2)
