"""A2C: the λ-return maths, the loss on known numbers (jitted and not), and learning on probe and LPG environments."""

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import planning
from lpg.a2c import A2CConfig, a2c_loss, lambda_returns, make_a2c, normalise_advantages
from lpg.agents import make_agent
from lpg.rollout import Trajectory
from tests.helpers import final_returns


def _traj(r, term, trunc):
    T = len(r)
    z = jnp.zeros(T)
    return Trajectory(obs=z, action=z.astype(int), reward=jnp.asarray(r, jnp.float32),
                      terminated=jnp.asarray(term, bool), truncated=jnp.asarray(trunc, bool), next_obs=z,
                      first=z.astype(bool), policy_out={}, episode_return=z, info={})


def test_lambda_returns_respect_termination_and_truncation():
    # Steps: t0 -> t1 (truncated: bootstrap from v(s'_1), no continuation) -> t2 -> t3 (terminal).
    r = [1.0, 2.0, 3.0, 4.0]
    v_tp1 = jnp.asarray([10.0, 20.0, 30.0, 40.0])
    g, lam = 0.5, 0.8
    got = lambda_returns(_traj(r, [0, 0, 0, 1], [0, 1, 0, 0]), v_tp1, g, lam)
    g3 = 4.0  # terminal: no bootstrap
    g2 = 3.0 + g * ((1 - lam) * 30.0 + lam * g3)
    g1 = 2.0 + g * 20.0  # truncated: λ_1 = 0
    g0 = 1.0 + g * ((1 - lam) * 10.0 + lam * g1)
    np.testing.assert_allclose(got, [g0, g1, g2, g3], rtol=1e-6)


def test_normalised_advantages_have_zero_mean_unit_scale_and_keep_their_order():
    adv = jnp.array([[3.0, -1.0, 10.0], [0.5, 7.0, -4.0]])
    out = normalise_advantages(adv)
    np.testing.assert_allclose([out.mean(), out.std()], [0.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(jnp.argsort(out, axis=None), jnp.argsort(adv, axis=None))
    np.testing.assert_allclose(normalise_advantages(100.0 * adv - 3.0), out, atol=1e-5)  # scale-free


def test_a2c_loss_on_known_numbers_jitted_and_not():
    """A fresh table: π uniform over A actions and v = 0, so the advantage is the λ-return G_t itself
    (G_t = r_t + γλ G_t+1 within the episode) and every term of the loss has a closed form."""
    env, params = envs.make("chain_short")
    net = make_agent(env, params, aux_size=1)
    theta = net.init(jax.random.PRNGKey(0), jnp.int32(0))
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(theta))
    num_actions = env.action_space(params).n
    traj = _traj([0.0, 1.0, 0.0, -1.0], [0, 0, 0, 1], [0, 0, 0, 0])._replace(
        obs=jnp.asarray([0, 2, 4, 6]), next_obs=jnp.asarray([2, 4, 6, 8]), action=jnp.asarray([0, 1, 1, 0]))
    cfg = A2CConfig(discount=0.9, gae_lambda=0.5, entropy_cost=0.01, value_cost=0.5)
    gl = cfg.discount * cfg.gae_lambda
    g3 = -1.0
    g2 = 0.0 + gl * g3
    g1 = 1.0 + gl * g2
    g0 = 0.0 + gl * g1
    returns = np.array([g0, g1, g2, g3])
    expected = {"pg_loss": np.log(num_actions) * returns.mean(),  # -mean(log(1/A) · G)
                "entropy": np.log(num_actions), "value_loss": 0.5 * np.mean(returns**2)}
    expected["loss"] = expected["pg_loss"] + 0.5 * expected["value_loss"] - 0.01 * expected["entropy"]
    for loss_fn in (a2c_loss, jax.jit(a2c_loss, static_argnums=(0, 3))):
        _, parts = loss_fn(net.apply, theta, traj, cfg)
        for name, value in expected.items():
            np.testing.assert_allclose(float(parts[name]), value, rtol=1e-5, err_msg=name)


def _random_return(env, params):
    mdp = planning.tabular_mdp(env, params)
    S, A = mdp.R.shape
    return planning.episode_return(mdp, np.full((S, A), 1.0 / A), int(params.max_steps_in_episode))


def test_a2c_learns_the_tabular_dense_grid():
    final, env, params = final_returns("tabular_dense", make_a2c, A2CConfig(learning_rate=20.0), updates=300)
    optimal = planning.optimal_episode_return(env, params, 0.99)
    random = _random_return(env, params)
    assert optimal > 40 and random < 1
    # After 384k steps A2C is far from random and well on its way to optimal (measured ~18 of ~46).
    assert final.min() > 0.2 * optimal, (final, optimal, random)


def test_a2c_learns_a_delayed_chain():
    final, env, params = final_returns("chain_short", make_a2c, A2CConfig(learning_rate=20.0), updates=60)
    assert planning.optimal_episode_return(env, params, 0.99) == 1.0
    assert abs(_random_return(env, params)) < 1e-6
    assert final.min() > 0.9, final
