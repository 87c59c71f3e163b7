"""Agent networks: a policy head plus one auxiliary head, over a torso chosen by observation type.

The auxiliary head is the value v(s) for A2C (size 1) and the prediction vector y(s)
for LPG agents (size m). Tables start at π uniform and aux = 0; networks near π uniform (a
policy head of scale 0.01) with the aux head at random, or at 0 with `zero_aux`. Torsos: a
table for integer (tabular) observations, an MLP for vectors, a small conv net for image-like
maps. Every agent maps ONE observation to `(logits [A], aux [k])`; batching is done with vmap by
the caller. Network torsos sow their last hidden layer (after its ReLU) as `FEATURES` into the
"intermediates" collection; `inactive_units` reads it.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import gymnax.environments.spaces as spaces
import jax
import jax.numpy as jnp


class TabularAgent(nn.Module):
    """A table of logits and auxiliary outputs per state, initialised to zero (uniform π)."""

    num_states: int
    num_actions: int
    aux_size: int

    @nn.compact
    def __call__(self, obs):
        zeros = nn.initializers.zeros
        pi_table = self.param("pi", zeros, (self.num_states, self.num_actions))
        aux_table = self.param("aux", zeros, (self.num_states, self.aux_size))
        return pi_table[obs], aux_table[obs]


AUX_INITS = ("lecun", "zeros")
FEATURES = "features"


def _aux_head(aux_size: int, zero: bool) -> nn.Dense:
    init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Dense(aux_size, kernel_init=init)


class MLPAgent(nn.Module):
    num_actions: int
    aux_size: int
    hidden: Sequence[int] = (64, 64)
    zero_aux: bool = False  # aux head's kernel (and bias) start at 0: aux(s) = 0 for every s

    @nn.compact
    def __call__(self, obs):
        h = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        self.sow("intermediates", FEATURES, h)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(h)
        aux = _aux_head(self.aux_size, self.zero_aux)(h)
        return logits, aux


class MatmulConv(nn.Module):
    """A stride-1 'SAME' convolution of one [H, W, C] map written as one matmul over its patches.

    The same function and parameters (`kernel` [kh, kw, C, F], `bias` [F]) as `nn.Conv`. Why:
    XLA's CPU convolution is fast on its own but ~15x slower inside the `lax.scan` of a lifetime
    (benchmarks/conv.py: 1000.6 vs 67.4 ms per A2C gradient step of the conv agent; BENCHMARKS.md),
    while matmuls stay fast there.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)

    @nn.compact
    def __call__(self, x):
        (kh, kw), (h, w, c) = self.kernel_size, x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        # nn.Conv's 'SAME' padding: (k - 1) // 2 before, the rest after.
        xp = jnp.pad(x, (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
        patches = jnp.concatenate([xp[i:i + h, j:j + w] for i in range(kh) for j in range(kw)], axis=-1)
        return patches @ kernel.reshape(kh * kw * c, self.features) + bias  # [H, W, kh*kw*C] -> [H, W, F]


class ConvAgent(nn.Module):
    """Small conv net for [H, W, C] maps (channels-first maps are transposed by `make_agent`)."""

    num_actions: int
    aux_size: int
    channels: int = 16
    hidden: int = 64
    channels_first: bool = False
    conv: Any = MatmulConv  # or nn.Conv (same parameters; benchmarks/conv.py times both)
    zero_aux: bool = False  # as MLPAgent's

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32)
        if self.channels_first:
            x = jnp.moveaxis(x, 0, -1)
        x = nn.relu(self.conv(self.channels, (3, 3), name="Conv_0")(x))  # nn.Conv's parameter names
        h = nn.relu(nn.Dense(self.hidden)(x.reshape(-1)))
        self.sow("intermediates", FEATURES, h)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(h)
        aux = _aux_head(self.aux_size, self.zero_aux)(h)
        return logits, aux


AGENT_KINDS = ("auto", "tabular", "mlp", "conv")


def inactive_units(network: nn.Module, params, obs: chex.Array) -> chex.Array:
    """Share of the torso's last hidden units that are 0 on every observation of `obs` [N, ...].

    A ReLU unit that no input activates gets no gradient and stays off (a "dead" unit); with all of
    them off, π no longer depends on the state. A high learning rate can switch most of a network's
    units off within a few updates (results/minatar/README.md, session 28). nan for a table.
    """
    def features(o):
        _, variables = network.apply(params, o, mutable=["intermediates"])
        return variables.get("intermediates", {}).get(FEATURES)

    h = jax.vmap(features)(obs)
    if h is None:  # no hidden units (a table)
        return jnp.float32(jnp.nan)
    return jnp.mean(jnp.all(h[0] <= 0.0, axis=0).astype(jnp.float32))


def make_agent(env, env_params, aux_size: int, kind: str = "auto", hidden: int = 64,
               aux_init: str = "lecun") -> nn.Module:
    """Picks the agent network that fits `env`'s observation space; `aux_init` ("lecun" or "zeros")
    is how a network's aux head starts (a table's is always 0)."""
    if kind not in AGENT_KINDS:
        raise ValueError(f"agent kind {kind!r} is unknown; allowed: {AGENT_KINDS}")
    if aux_init not in AUX_INITS:
        raise ValueError(f"aux head init {aux_init!r} is unknown; allowed: {AUX_INITS}")
    zero_aux = aux_init == "zeros"
    obs_space = env.observation_space(env_params)
    num_actions = env.action_space(env_params).n
    if kind == "auto":
        if isinstance(obs_space, spaces.Discrete):
            kind = "tabular"
        elif len(obs_space.shape) == 3:
            kind = "conv"
        else:
            kind = "mlp"
    if kind == "tabular":
        if not isinstance(obs_space, spaces.Discrete):
            raise ValueError(
                f"a tabular agent needs integer (Discrete) observations; {env.name} has {obs_space}"
            )
        return TabularAgent(obs_space.n, num_actions, aux_size)
    if kind == "conv":
        if len(obs_space.shape) != 3:
            raise ValueError(f"a conv agent needs [C,H,W] or [H,W,C] maps; got shape {obs_space.shape}")
        channels_first = bool(getattr(env, "channels_first", False))
        return ConvAgent(num_actions, aux_size, hidden=hidden, channels_first=channels_first, zero_aux=zero_aux)
    return MLPAgent(num_actions, aux_size, hidden=(hidden, hidden), zero_aux=zero_aux)


def is_tabular(network: nn.Module) -> bool:
    return isinstance(network, TabularAgent)


def visit_share(obs, num_states: int):
    """share(s) = (visits of s) / (samples in the batch): [S] from integer observations of any shape."""
    obs = jnp.ravel(obs)
    return jnp.zeros((num_states,), jnp.float32).at[obs].add(1.0) / obs.size


def implicit_table_step(grad_rows, share, learning_rate, curvature):
    """Rescales the SGD gradient of a table's rows so that one SGD step is the implicit step.

    For a table x[S, k] trained on c · mean_i ‖x(s_i) − t_i‖² (c = `curvature`), plain SGD moves
    x(s) by −lr·2c·share(s)·(x(s) − t̄(s)) and diverges once a = 2·lr·c·share(s) exceeds 2:
    at lr 40, c = 0.5, any state holding over 5% of the batch. Dividing row s by (1 + a) turns
    the step into the proximal (implicit) one, x'(s) = (x(s) + a·t̄(s)) / (1 + a): the same step
    as SGD while a is small, never past the mean target t̄(s) however large lr is.
    """
    a = 2.0 * learning_rate * curvature * share
    return grad_rows / (1.0 + a)[:, None]


def implicit_aux_step(grads, obs, num_states: int, learning_rate, curvature):
    """A `TabularAgent`'s gradients with the aux table's rows rescaled by `implicit_table_step`
    for the batch of integer observations `obs` the loss was averaged over."""
    table = grads["params"]
    aux = implicit_table_step(table["aux"], visit_share(obs, num_states), learning_rate, curvature)
    return {**grads, "params": {**table, "aux": aux}}
