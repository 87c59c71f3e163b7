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

`train(env, env_params, agent_config, train_config, run_dir)` trains on any gymnax task
distribution (one episode = one trial) as a host loop over jitted chunks, with an optional
run directory (`lpg.runs`: config, metrics, checkpoints, resume); `load_params` restores the
agent from one. Evaluation and the belief analysis are in `lpg.rl2_analysis`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax
from flax import struct

from envs.check import check_user_env
from lpg import runs
from lpg.a2c import actor_critic_checks, lambda_returns, make_optimizer, normalise_advantages
from lpg.config import validate
from lpg.learner import Learner, TrainState, learning_curve, make_train
from lpg.rollout import Timestep, Trajectory

CELLS = ("gru", "lstm")
DETERMINISTIC_ENTROPY = 0.05  # nats: a mean policy entropy below this is reported as deterministic


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
    # None: constant; else the rate moves linearly from `learning_rate` to `learning_rate_end`
    # over `lr_anneal_updates` updates and stays there (the final policy is then an average over
    # small late steps rather than the last of many large, noisy ones)
    learning_rate_end: float | None = None
    lr_anneal_updates: int = 1
    optimizer: str = "adam"
    # entropy bonus: `entropy_cost` at the first update, moving linearly to `entropy_cost_end`
    # over `entropy_anneal_updates` updates (constant when the two are equal); the Bayes-optimal
    # policy is deterministic, so the presets anneal it to 0
    entropy_cost: float = 0.01
    entropy_cost_end: float = 0.01
    entropy_anneal_updates: int = 1
    value_cost: float = 0.5
    max_grad_norm: float | None = 1.0
    # policy-gradient advantages centred and scaled to unit variance over the batch (as PPO's
    # `normalise_advantages`), so the entropy cost is measured against advantages of size 1
    # whatever the reward scale and trial length; the value loss keeps the raw returns
    normalise_advantages: bool = False
    # the value loss divided by the batch's advantage standard deviation (held constant), so that
    # its gradient, -mean(Â ∇v) with Â = A / std(A), is in the same units as the normalised policy
    # gradient's. Raw, the value loss grows with the return's variance (the trial length): at
    # T = 100 its gradient was 21x the policy gradient's (T = 20: 1.4x) and swamped it in the shared
    # recurrent core, where Adam scales each weight's step by both
    scale_value_loss: bool = False

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
            (self.learning_rate_end is None or self.learning_rate_end >= 0,
             "learning_rate_end must be None (constant rate) or >= 0"),
            (self.lr_anneal_updates >= 1, "lr_anneal_updates must be >= 1"),
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


def rl2_stream(network: RL2Network, params, traj: Trajectory, init_carry, config: RL2Config):
    """One stream (leaves [T, ...]) after re-running the RNN over the window: (logits [T, A],
    values [T], λ-returns [T])."""
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
    return logits, v_t, lambda_returns(traj, v_tp1, config.discount, config.gae_lambda)


def rl2_loss(network: RL2Network, params, traj: Trajectory, init_carry, config: RL2Config, entropy_cost):
    """A2C loss of a batch of streams (leaves [T, B, ...]), averaged over streams."""
    logits, v_t, g_t = jax.vmap(rl2_stream, in_axes=(None, None, 1, None, None))(
        network, params, traj, init_carry, config)  # [B, T, ...]
    adv_t = g_t - v_t
    pg_adv = jax.lax.stop_gradient(adv_t)
    if config.normalise_advantages:
        pg_adv = normalise_advantages(pg_adv)
    actions = jnp.swapaxes(traj.action, 0, 1)
    pg_loss = jax.vmap(rlax.policy_gradient_loss)(logits, actions, pg_adv, jnp.ones_like(v_t)).mean()
    entropy = distrax.Categorical(logits=logits).entropy().mean()
    value_loss = 0.5 * jnp.mean(adv_t**2)
    value_term = value_loss / (advantage_scale(adv_t) if config.scale_value_loss else 1.0)
    loss = pg_loss + config.value_cost * value_term - entropy_cost * entropy
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss, "entropy": entropy}


def advantage_scale(adv_t: chex.Array) -> chex.Array:
    """The advantages' standard deviation over the batch, a constant for the gradient."""
    return jax.lax.stop_gradient(adv_t.std()) + 1e-8


@struct.dataclass
class RL2State:
    params: Any
    opt_state: Any
    step: chex.Array


def learning_rate_schedule(config: RL2Config):
    """The optimiser's step size: a constant, or an optax schedule over updates (`learning_rate_end`)."""
    if config.learning_rate_end is None:
        return config.learning_rate
    return optax.linear_schedule(config.learning_rate, config.learning_rate_end, config.lr_anneal_updates)


def make_rl2(env, env_params, config: RL2Config = RL2Config()) -> Learner:
    """An RL² learner: recurrent actor-critic + A2C, the recurrent state being the engine's carry."""
    network = make_network(env, env_params, config)
    optimizer = make_optimizer(config.optimizer, learning_rate_schedule(config), config.max_grad_norm)
    entropy_schedule = optax.linear_schedule(config.entropy_cost, config.entropy_cost_end, config.entropy_anneal_updates)
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
        return rl2_loss(network, params, traj, init_carry, config, entropy_cost)

    def update(state: RL2State, traj: Trajectory):
        entropy_cost = entropy_schedule(state.step)
        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params, traj, entropy_cost)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return RL2State(params, opt_state, state.step + 1), {**metrics, "entropy_cost": entropy_cost}

    return Learner(init=init, policy_fn=policy_fn, policy_params=lambda s: s.params, update=update,
                   init_carry=init_carry)


# --------------------------------------------------------------------------------------
# Training: a host loop over jitted chunks, with an optional run directory
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_updates: int = 3000
    updates_per_chunk: int = 250  # one jitted chunk between progress lines / metrics rows
    checkpoint_every: int = 2  # chunks
    seed: int = 0

    def __post_init__(self):
        validate(self, [(min(self.num_updates, self.updates_per_chunk, self.checkpoint_every) >= 1,
                         "num_updates, updates_per_chunk and checkpoint_every must be >= 1")])

    @property
    def num_chunks(self) -> int:
        return -(-self.num_updates // self.updates_per_chunk)


def _trainer(env, env_params, agent: RL2Config):
    return make_train(env, env_params, make_rl2(env, env_params, agent), agent.num_envs, agent.rollout_len)


def train(env, env_params, agent: RL2Config, config: TrainConfig = TrainConfig(),
          run_dir: str | os.PathLike | None = None, *, resume: bool = True, run_config: Any = None,
          tensorboard: bool = False, quiet: bool = False) -> TrainState:
    """Trains RL² on the task distribution `env` (one gymnax episode = one trial) and returns
    the final `TrainState` (the agent's params: `state.learner.params`).

    With `run_dir`, metrics, checkpoints and `run_config` (what identifies the run; default
    `(agent, config)`) go there, and a rerun resumes from the last checkpoint.
    """
    check_user_env(env, env_params)  # a user's task distribution: checked before compiling
    trainer = _trainer(env, env_params, agent)
    chunk, total = config.updates_per_chunk, config.num_updates
    run_updates = jax.jit(trainer.run, static_argnums=1)

    def run_chunk(state):  # the last chunk may be shorter (a second compile)
        return run_updates(state, min(chunk, total - int(state.step)))

    state = trainer.init(jax.random.PRNGKey(config.seed))
    run = None
    if run_dir is not None:
        run = runs.RunDir(run_dir, (agent, config) if run_config is None else run_config, resume=resume,
                          tensorboard=tensorboard)
    start = 0
    restored = run.restore(state) if run is not None and resume else None
    if restored is not None:
        state, start = restored
        if not quiet:
            print(f"resuming {run.path} from chunk {start}/{config.num_chunks}", file=sys.stderr)

    def records(chunk_index, metrics):
        row = {k: float(np.mean(v)) for k, v in metrics.items()}
        row["episode_return"] = float(learning_curve(
            metrics["episode_return"][None], metrics["episodes"][None], len(metrics["episodes"]))[0, 0])
        row["step"] = chunk_index + 1
        row["updates"] = min((chunk_index + 1) * chunk, total)
        row["env_steps"] = row["updates"] * trainer.steps_per_update
        return [row]

    def describe(row):
        # A policy that has turned deterministic stops exploring: if its return is still a random
        # policy's, training has collapsed (experiments.rl2_sweep marks such runs).
        flag = f" (< {DETERMINISTIC_ENTROPY}: deterministic)" if row["entropy"] < DETERMINISTIC_ENTROPY else ""
        return (f"update {row['updates']}: trial return {row['episode_return']:.3f}, "
                f"entropy {row['entropy']:.3f}{flag}, value loss {row['value_loss']:.3f}")

    state = runs.host_loop(run, state, run_chunk, config.num_chunks, records, describe,
                           checkpoint_every=config.checkpoint_every, start_chunk=start, quiet=quiet)
    if run is not None:
        run.close()
    return state


def load_params(env, env_params, agent: RL2Config, config: TrainConfig, run_dir: str | os.PathLike,
                run_config: Any = None) -> tuple[Any, int]:
    """(agent params, updates done) of the latest checkpoint `train` wrote in `run_dir` with the
    same configs; FileNotFoundError if there is none."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise FileNotFoundError(f"no checkpoint in {run_dir}: train first")
    trainer = _trainer(env, env_params, agent)
    run = runs.RunDir(run_dir, (agent, config) if run_config is None else run_config, resume=True)
    restored = run.restore(trainer.init(jax.random.PRNGKey(config.seed)))
    run.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}: train first")
    state, chunks = restored
    return state.learner.params, min(chunks * config.updates_per_chunk, config.num_updates)
