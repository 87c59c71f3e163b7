"""Agent networks: the matmul convolution is nn.Conv's function, parameters and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpg.agents import ConvAgent, MatmulConv


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
