"""RL² (Duan et al. 2016): a recurrent actor-critic trained with A2C over a task distribution.

The agent reads (o_t, one-hot a_t-1, r_t, first_t) at every step; its recurrent state is
the rollout engine's carry, so it is kept across the inner episodes of one task (one
gymnax episode = one trial) and reset to `init_carry` only when the engine starts a new
trial. Experience is collected by `lpg.rollout` through `lpg.learner.make_train`.

The loss re-runs the RNN over each window from the carry the engine held at the window's
start (stored per step in `policy_out["carry"]`), resetting it wherever `first` is set,
so windows need not be aligned with trials. The end of a trial is the end of the
meta-RL problem (nothing follows it), so it never bootstraps there, even when the
environment reports the end as a time-limit truncation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import rlax
from flax import struct

from lpg.a2c import actor_critic_checks, lambda_returns, make_optimizer
from lpg.learner import Learner
from lpg.rollout import Timestep, Trajectory
from lpg.config import validate

CELLS = ("gru", "lstm")


@dataclasses.dataclass(frozen=True)
class RL2Config:
    cell: str = "gru"
    hidden: int = 64  # recurrent units
    torso: int = 0  # width of a dense ReLU layer before the cell (0: inputs go straight in)
    num_envs: int = 128
    rollout_len: int = 20  # window length; = trial length makes every window start at a reset
    discount: float = 1.0
    gae_lambda: float = 0.9
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    # entropy bonus: `entropy_cost` at the first update, moving linearly to `entropy_cost_end`
    # over `entropy_anneal_updates` updates (constant when the two are equal); the Bayes-optimal
    # policy is deterministic, so the presets anneal it to 0
    entropy_cost: float = 0.01
    entropy_cost_end: float = 0.01
    entropy_anneal_updates: int = 1
    value_cost: float = 0.5
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        checks = [
            (self.cell in CELLS, f"cell must be one of {CELLS}"),
            (self.hidden >= 1, "hidden must be >= 1"),
            (self.torso >= 0, "torso must be >= 0"),
            *actor_critic_checks(self),
            (
                min(self.entropy_cost, self.entropy_cost_end, self.value_cost) >= 0,
                "entropy and value costs must be >= 0",
            ),
            (self.entropy_anneal_updates >= 1, "entropy_anneal_updates must be >= 1"),
        ]
        validate(self, checks)


def _flat_obs(obs) -> chex.Array:
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(obs)])


class RL2Network(nn.Module):
    """One step of the recurrent actor-critic: (carry, timestep) -> (carry, logits [A], v)."""

    num_actions: int
    hidden: int = 64
    cell: str = "gru"
    torso: int = 0

    def setup(self):
        if self.cell == "gru":
            self.core = nn.GRUCell(features=self.hidden)
        else:
            self.core = nn.OptimizedLSTMCell(features=self.hidden)
        if self.torso:
            self.embed = nn.Dense(self.torso)
        self.pi = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.v = nn.Dense(1)

    def __call__(self, carry, timestep: Timestep):
        x = jnp.concatenate([
            _flat_obs(timestep.obs),
            jax.nn.one_hot(timestep.prev_action, self.num_actions),
            jnp.reshape(timestep.prev_reward, (1,)).astype(jnp.float32),
            jnp.reshape(timestep.first, (1,)).astype(jnp.float32),
        ])
        if self.torso:
            x = nn.relu(self.embed(x))
        carry, h = self.core(carry, x)
        logits, value = self.heads(h)
        return carry, logits, value

    def heads(self, h):
        """Policy logits and value from the cell's output h (used to act from a mapped state)."""
        return self.pi(h), self.v(h)[0]

    def initial_carry(self):
        zeros = jnp.zeros((self.hidden,), jnp.float32)
        return zeros if self.cell == "gru" else (zeros, zeros)


def hidden_features(carry) -> chex.Array:
    """The recurrent state as one vector: h for a GRU, [c, h] for an LSTM."""
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(carry)])


def carry_from_features(features: chex.Array, init_carry) -> Any:
    """Inverse of `hidden_features` for a carry shaped like `init_carry`."""
    leaves, treedef = jax.tree.flatten(init_carry)
    sizes = [leaf.size for leaf in leaves]
    parts = jnp.split(features, list(jnp.cumsum(jnp.array(sizes))[:-1]))
    return jax.tree.unflatten(treedef, [p.reshape(l.shape) for p, l in zip(parts, leaves)])


def output_of(carry) -> chex.Array:
    """What the heads read: the carry itself for a GRU, h for an LSTM (carry = (c, h))."""
    return carry if not isinstance(carry, tuple) else carry[1]


def make_network(env, env_params, config: RL2Config) -> RL2Network:
    num_actions = env.action_space(env_params).n
    return RL2Network(num_actions, hidden=config.hidden, cell=config.cell, torso=config.torso)


def example_timestep(env, env_params) -> Timestep:
    obs, _ = env.reset(jax.random.PRNGKey(0), env_params)
    return Timestep(obs, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.ones((), bool))


def make_policy(network: RL2Network, greedy: bool = False, with_hidden: bool = False):
    """The engine policy: samples a ~ π(·|h_t) (argmax if `greedy`). policy_out keeps the carry
    it was given (the loss re-runs the RNN from a window's first one), or, `with_hidden`, the
    hidden features after reading this step's input instead (what the analysis probes)."""

    def policy_fn(params, carry, timestep: Timestep, key):
        carry_in = carry
        carry, logits, value = network.apply(params, carry, timestep)
        if greedy:
            action = jnp.argmax(logits)
        else:
            action = distrax.Categorical(logits=logits).sample(seed=key)
        if with_hidden:
            out = {"logits": logits, "value": value, "hidden": hidden_features(carry)}
        else:
            out = {"logits": logits, "value": value, "carry": carry_in}
        return action, out, carry

    return policy_fn


def unroll(network: RL2Network, params, carry, timesteps: Timestep, init_carry):
    """Runs the RNN over one stream [T] from `carry`, resetting to `init_carry` where first.

    Returns (final carry, logits [T, A], values [T]).
    """

    def step(carry, timestep):
        carry = jax.tree.map(lambda i, c: jnp.where(timestep.first, i, c), init_carry, carry)
        carry, logits, value = network.apply(params, carry, timestep)
        return carry, (logits, value)

    carry, (logits, values) = jax.lax.scan(step, carry, timesteps)
    return carry, logits, values


def rl2_loss(network: RL2Network, params, traj: Trajectory, init_carry, config: RL2Config, entropy_cost):
    """A2C loss of one stream (leaves [T, ...]) after re-running the RNN over the window."""
    carry0 = jax.tree.map(lambda x: x[0], traj.policy_out["carry"])
    timesteps = Timestep(traj.obs, traj.policy_out["prev_action"], traj.policy_out["prev_reward"], traj.first)
    carry_T, logits, v_t = unroll(network, params, carry0, timesteps, init_carry)
    # value of the step after the window (used only if the window does not end a trial)
    last = Timestep(jax.tree.map(lambda x: x[-1], traj.next_obs), traj.action[-1], traj.reward[-1],
                    jnp.zeros((), bool))
    _, _, v_boot = network.apply(params, carry_T, last)
    v_tp1 = jax.lax.stop_gradient(jnp.concatenate([v_t[1:], v_boot[None]]))
    # a trial's end is the end of the problem: no bootstrap even at a time-limit truncation
    traj = traj._replace(terminated=traj.done, truncated=jnp.zeros_like(traj.truncated))
    g_t = lambda_returns(traj, v_tp1, config.discount, config.gae_lambda)
    adv_t = g_t - v_t
    pg_loss = rlax.policy_gradient_loss(logits, traj.action, adv_t, jnp.ones_like(v_t))
    entropy = distrax.Categorical(logits=logits).entropy().mean()
    value_loss = 0.5 * jnp.mean(adv_t**2)
    loss = pg_loss + config.value_cost * value_loss - entropy_cost * entropy
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss, "entropy": entropy}


@struct.dataclass
class RL2State:
    params: Any
    opt_state: Any
    step: chex.Array


def make_rl2(env, env_params, config: RL2Config = RL2Config()) -> Learner:
    """An RL² learner: recurrent actor-critic + A2C, the recurrent state being the engine's carry."""
    network = make_network(env, env_params, config)
    optimizer = make_optimizer(config.optimizer, config.learning_rate, config.max_grad_norm)
    init_carry = network.initial_carry()
    timestep0 = example_timestep(env, env_params)
    act = make_policy(network)

    def init(key):
        params = network.init(key, init_carry, timestep0)
        return RL2State(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def policy_fn(params, carry, timestep: Timestep, key):
        action, out, carry = act(params, carry, timestep, key)
        # the loss re-reads exactly what the agent read
        return action, {**out, "prev_action": timestep.prev_action, "prev_reward": timestep.prev_reward}, carry

    def batch_loss(params, traj, entropy_cost):
        losses, metrics = jax.vmap(rl2_loss, in_axes=(None, None, 1, None, None, None))(
            network, params, traj, init_carry, config, entropy_cost
        )
        return losses.mean(), jax.tree.map(jnp.mean, metrics)

    def update(state: RL2State, traj: Trajectory):
        frac = jnp.minimum(state.step / config.entropy_anneal_updates, 1.0)
        entropy_cost = config.entropy_cost + frac * (config.entropy_cost_end - config.entropy_cost)
        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params, traj, entropy_cost)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return RL2State(params, opt_state, state.step + 1), {**metrics, "entropy_cost": entropy_cost}

    return Learner(init=init, policy_fn=policy_fn, policy_params=lambda s: s.params, update=update,
                   init_carry=init_carry)
