"""PPO: with one epoch, one minibatch and raw advantages it is A2C's update exactly; its own
update (epochs, minibatches, clipping) learns a delayed chain and Catch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import planning
from lpg import rollout as engine
from lpg.a2c import A2CConfig, A2CState, make_a2c, make_optimizer
from lpg.agents import make_agent
from lpg.ppo import PPOConfig, PPOState, make_ppo
from tests.helpers import final_returns


@pytest.mark.parametrize("name, optimizer, lr", [("chain_short", "sgd", 20.0), ("Catch-bsuite", "adam", 1e-2)])
def test_one_epoch_one_minibatch_ppo_is_a2c(name, optimizer, lr):
    env, params = envs.make(name)
    common = dict(num_envs=8, rollout_len=12, learning_rate=lr, optimizer=optimizer, max_grad_norm=None)
    a2c = make_a2c(env, params, A2CConfig(**common))
    ppo = make_ppo(env, params, PPOConfig(**common, epochs=1, minibatches=1, normalise_advantages=False))
    network = make_agent(env, params, aux_size=1)
    obs0, _ = env.reset(jax.random.PRNGKey(0), params)
    theta = network.init(jax.random.PRNGKey(1), obs0)
    opt = make_optimizer(optimizer, lr)
    rollout_state = engine.reset(env, params, jax.random.PRNGKey(2), 8)
    for i in range(3):  # the same rollout for both, from a policy that has already moved
        _, traj = engine.rollout(env, params, a2c.policy_fn, theta, rollout_state, jax.random.PRNGKey(3 + i), 12)
        a2c_state, a2c_metrics = a2c.update(A2CState(theta, opt.init(theta)), traj)
        ppo_state, ppo_metrics = ppo.update(PPOState(theta, opt.init(theta), jax.random.PRNGKey(0)), traj)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     a2c_state.params, ppo_state.params)
        np.testing.assert_allclose(a2c_metrics["value_loss"], ppo_metrics["value_loss"], rtol=1e-5)
        assert float(ppo_metrics["clip_fraction"]) == 0.0
        theta = a2c_state.params


def test_ppo_trains_on_every_stream_it_is_given():
    """The minibatches split the trajectory's own streams, whatever PPOConfig.num_envs says: with one
    epoch and one minibatch, 8 streams give A2C's update on all 8; streams that cannot be split into
    whole-stream minibatches are an error that says so."""
    env, params = envs.make("chain_short")
    common = dict(rollout_len=12, learning_rate=20.0, optimizer="sgd", max_grad_norm=None)
    a2c = make_a2c(env, params, A2CConfig(num_envs=8, **common))
    ppo = make_ppo(env, params, PPOConfig(num_envs=4, **common, epochs=1, minibatches=1, normalise_advantages=False))
    theta = make_agent(env, params, aux_size=1).init(jax.random.PRNGKey(1), env.reset(jax.random.PRNGKey(0), params)[0])
    opt = make_optimizer("sgd", 20.0)
    _, traj = engine.rollout(env, params, a2c.policy_fn, theta, engine.reset(env, params, jax.random.PRNGKey(2), 8),
                             jax.random.PRNGKey(3), 12)
    a2c_state, _ = a2c.update(A2CState(theta, opt.init(theta)), traj)
    ppo_state, _ = ppo.update(PPOState(theta, opt.init(theta), jax.random.PRNGKey(0)), traj)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), a2c_state.params, ppo_state.params)
    three = make_ppo(env, params, PPOConfig(num_envs=9, **common, minibatches=3))
    with pytest.raises(ValueError, match="8 streams cannot be split into 3 minibatches"):
        three.update(PPOState(theta, opt.init(theta), jax.random.PRNGKey(0)), traj)


def test_more_epochs_move_the_policy_further_but_the_clip_bounds_it():
    env, params = envs.make("Catch-bsuite")
    base = dict(num_envs=8, rollout_len=20, learning_rate=3e-3, minibatches=2)
    network = make_agent(env, params, aux_size=1)
    obs0, _ = env.reset(jax.random.PRNGKey(0), params)
    theta = network.init(jax.random.PRNGKey(1), obs0)
    rollout_state = engine.reset(env, params, jax.random.PRNGKey(2), 8)
    kl = {}
    for name, config in (("1 epoch", PPOConfig(**base, epochs=1)), ("8 epochs", PPOConfig(**base, epochs=8)),
                         ("8 epochs, tight clip", PPOConfig(**base, epochs=8, clip_epsilon=0.02))):
        ppo = make_ppo(env, params, config)
        _, traj = engine.rollout(env, params, ppo.policy_fn, theta, rollout_state, jax.random.PRNGKey(3), 20)
        opt = make_optimizer("adam", 3e-3, 0.5)
        state, _ = ppo.update(PPOState(theta, opt.init(theta), jax.random.PRNGKey(0)), traj)
        logp_old = jax.nn.log_softmax(traj.policy_out["logits"])
        logp_new = jax.nn.log_softmax(jax.vmap(jax.vmap(lambda o: network.apply(state.params, o)[0]))(traj.obs))
        kl[name] = float(jnp.mean(jnp.sum(jnp.exp(logp_old) * (logp_old - logp_new), -1)))  # KL(old || new)
    assert kl["8 epochs"] > 2 * kl["1 epoch"] > 0, kl
    assert kl["8 epochs, tight clip"] < 0.5 * kl["8 epochs"], kl


def test_ppo_learns_a_delayed_chain():
    config = PPOConfig(num_envs=32, rollout_len=20, learning_rate=5.0, optimizer="sgd", max_grad_norm=None)
    final, env, params = final_returns("chain_short", make_ppo, config, updates=60, seeds=3)
    assert planning.optimal_episode_return(env, params, 0.99) == 1.0
    assert final.min() > 0.9, final


def test_ppo_learns_catch():
    config = PPOConfig(num_envs=32, rollout_len=20, learning_rate=3e-3)
    final, _, _ = final_returns("Catch-bsuite", make_ppo, config, updates=150, seeds=3)
    assert final.min() > 0.6, final  # random -0.6, optimal 1
