"""Agent networks: the matmul convolution is nn.Conv's function, parameters and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpg.agents import ConvAgent, MatmulConv, MLPAgent, TabularAgent, inactive_units


@pytest.mark.parametrize("kernel_size,shape", [((3, 3), (10, 10, 4)), ((2, 2), (5, 7, 3)), ((1, 3), (4, 6, 2))])
def test_matmul_conv_is_nn_conv(kernel_size, shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    reference = nn.Conv(5, kernel_size)
    params = reference.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)  # non-zero bias
    mine = MatmulConv(5, kernel_size)
    assert jax.tree.map(jnp.shape, mine.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(mine.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5)
    loss = lambda net: lambda p: jnp.sum(jnp.tanh(net.apply(p, x)) ** 2)  # noqa: E731
    for a, b in zip(jax.tree.leaves(jax.grad(loss(mine))(params)), jax.tree.leaves(jax.grad(loss(reference))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_conv_agent_keeps_nn_conv_parameter_names():
    params = ConvAgent(num_actions=3, aux_size=2).init(jax.random.PRNGKey(0), jnp.zeros((10, 10, 4)))
    assert params["params"]["Conv_0"]["kernel"].shape == (3, 3, 4, 16)
    assert params["params"]["Conv_0"]["bias"].shape == (16,)


@pytest.mark.parametrize("shape", [(50,), (10, 10, 4)])
def test_a_zero_aux_head_starts_every_state_at_zero_and_leaves_the_policy_alone(shape):
    """aux_init="zeros": aux(s) = 0 at every observation (as a table starts), the same policy as the
    random-aux network from the same key, and an aux head that still learns (non-zero gradient)."""
    from lpg.agents import MLPAgent

    make = (lambda zero: ConvAgent(3, 4, zero_aux=zero)) if len(shape) == 3 else (lambda zero: MLPAgent(3, 4, zero_aux=zero))
    obs = jax.random.uniform(jax.random.PRNGKey(0), (6,) + shape)
    zero, lecun = make(True), make(False)
    params_zero, params_lecun = (net.init(jax.random.PRNGKey(1), obs[0]) for net in (zero, lecun))
    logits_zero, aux_zero = jax.vmap(lambda o: zero.apply(params_zero, o))(obs)
    logits_lecun, aux_lecun = jax.vmap(lambda o: lecun.apply(params_lecun, o))(obs)
    assert np.all(np.asarray(aux_zero) == 0.0) and np.ptp(np.asarray(aux_lecun), axis=0).max() > 1e-3
    np.testing.assert_allclose(logits_zero, logits_lecun, rtol=1e-6, atol=1e-7)
    grads = jax.grad(lambda p: jnp.sum(jax.vmap(lambda o: zero.apply(p, o))(obs)[1] * jnp.arange(4.0)))(params_zero)
    head = sorted(k for k in grads["params"] if k.startswith("Dense"))[-1]
    assert float(jnp.abs(grads["params"][head]["kernel"]).max()) > 1e-3


def test_make_agent_names_the_allowed_aux_inits():
    from gymnax import make as gymnax_make

    from lpg.agents import make_agent

    env, params = gymnax_make("Catch-bsuite")
    assert make_agent(env, params, aux_size=2, aux_init="zeros").zero_aux
    with pytest.raises(ValueError, match="lecun"):
        make_agent(env, params, aux_size=2, aux_init="orthogonal")


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_inactive_units_counts_the_torso_units_no_observation_switches_on(kind):
    shape = (24,) if kind == "mlp" else (5, 5, 3)
    net = MLPAgent(num_actions=3, aux_size=2) if kind == "mlp" else ConvAgent(num_actions=3, aux_size=2)
    obs = jax.random.uniform(jax.random.PRNGKey(0), (16,) + shape)
    params = net.init(jax.random.PRNGKey(1), obs[0])
    last = "Dense_1" if kind == "mlp" else "Dense_0"  # the torso's last hidden layer
    kernel, bias = params["params"][last]["kernel"], params["params"][last]["bias"]
    # Direct: the layer's input by hand, then the units whose pre-activation is <= 0 on all 16 inputs.
    if kind == "mlp":
        x = jax.nn.relu(obs @ params["params"]["Dense_0"]["kernel"] + params["params"]["Dense_0"]["bias"])
    else:
        conv = jax.vmap(lambda o: MatmulConv(16).apply({"params": params["params"]["Conv_0"]}, o))(obs)
        x = jax.nn.relu(conv).reshape(16, -1)
    expected = np.mean(np.all(np.asarray(x @ kernel + bias) <= 0, axis=0))
    assert 0.0 < inactive_units(net, params, obs) < 1.0  # a fresh net: some units on, some off
    np.testing.assert_allclose(inactive_units(net, params, obs), expected, atol=1e-6)
    # Half the units' biases far below any input's reach: exactly that half is off.
    shut = bias.at[::2].set(-1e4).at[1::2].set(1e4)
    shut_params = {"params": {**params["params"], last: {"kernel": kernel, "bias": shut}}}
    np.testing.assert_allclose(inactive_units(net, shut_params, obs), 0.5)


def test_inactive_units_of_a_table_is_nan():
    table = TabularAgent(num_states=5, num_actions=2, aux_size=1)
    obs = jnp.arange(5)
    assert np.isnan(inactive_units(table, table.init(jax.random.PRNGKey(0), obs[0]), obs))
