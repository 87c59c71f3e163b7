"""The LPG inner loop: an agent (π, y) updated only by what the update rule emits.

    Δθ ∝ E[ ∇θ log π_θ(a|s) π̂  -  α_y ∇θ L(y_θ(s), ŷ) ]

A y *table* trained by SGD takes the implicit (proximal) step of its MSE term instead of the
explicit one: at the paper's tabular rates (20-80) the explicit step overshoots ŷ and
diverges for any state holding more than 1/(lr·α_y) of the batch.

A lifetime-conditioned rule (RuleConfig.lifetime_inputs) also reads n/N and log N: n is the
count of updates the agent's optimiser has applied (its state's `count`), N the lifetime length
in `Hypers.lifetime_updates`.

The rule's outputs are constants for the agent's gradient, but they stay functions
of the rule's parameters η (and of θ through the rule's inputs), so the meta-trainer
can differentiate θ' = θ + Δθ with respect to η. Per-lifetime hyperparameters
(γ, learning rate, α_y, β0) are pytree leaves, so lifetimes are a vmap.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from lpg import agents
from lpg.a2c import OPTIMIZERS as _OPTIMIZERS
from lpg.learner import Learner
from lpg.rollout import Timestep, Trajectory
from lpg.update_rule import RuleConfig, RuleInputs, UpdateRule, y_loss


# Meta-gradients flow through the agent's optimiser: Adam needs eps_root > 0, or d√v/dv is
# infinite for every parameter whose gradient is exactly 0 (a dead ReLU, an unused input) and
# the whole meta-gradient turns NaN.
OPTIMIZERS = {**_OPTIMIZERS, "adam": lambda learning_rate: optax.adam(learning_rate, eps_root=1e-8)}


class Hypers(NamedTuple):
    """One lifetime's hyperparameters (scalars; a leading axis when batched)."""

    discount: chex.Array
    learning_rate: chex.Array
    alpha_y: chex.Array
    entropy_cost: chex.Array  # β0 of the meta-objective
    # N, agent updates in this lifetime: needed by lifetime-conditioned rules only (None: unknown).
    lifetime_updates: chex.Array | None = None


@struct.dataclass
class AgentState:
    params: Any
    opt_state: Any


class LPGAgent(NamedTuple):
    """The pieces of an LPG agent, built once per environment (static)."""

    network: Any  # flax module: obs -> (logits [A], y [m])
    rule: UpdateRule
    optimizer_name: str
    obs0: Any

    @property
    def implicit_y_step(self) -> bool:
        """SGD on a y table: take the implicit step (plain SGD on y diverges at the paper's rates)."""
        return agents.is_tabular(self.network) and self.optimizer_name == "sgd"

    @property
    def subtracts_pi_hat_mean(self) -> bool:
        """Whether the policy is pushed by π̂ less a mean of it (RuleConfig.pi_hat_baseline)."""
        baseline = self.rule.config.pi_hat_baseline
        return baseline != "none" and (not baseline.startswith("adam_") or self.optimizer_name == "adam")

    def pi_hat_used(self, pi_hat: chex.Array) -> chex.Array:
        """π̂ [B, T] as it pushes the policy: as emitted, less its batch mean, or less its mean over
        the batch's streams at each step (RuleConfig.pi_hat_baseline)."""
        if not self.subtracts_pi_hat_mean:
            return pi_hat
        per_step = self.rule.config.pi_hat_baseline.endswith("step_mean")
        return pi_hat - jnp.mean(pi_hat, axis=0 if per_step else None, keepdims=True)

    def init(self, key: chex.PRNGKey, learning_rate: chex.Array) -> AgentState:
        params = self.network.init(key, self.obs0)
        # An array (never a Python/numpy scalar, which inject_hyperparams would treat as static).
        learning_rate = jnp.asarray(learning_rate, jnp.float32)
        optimizer = optax.inject_hyperparams(OPTIMIZERS[self.optimizer_name])(learning_rate=learning_rate)
        return AgentState(params, optimizer.init(params))

    def policy_fn(self, params, carry, timestep: Timestep, key):
        logits, y = self.network.apply(params, timestep.obs)
        action = distrax.Categorical(logits=logits).sample(seed=key)
        return action, {}, carry

    def rule_inputs(self, params, traj: Trajectory, hypers: Hypers, updates_done: chex.Array) -> RuleInputs:
        """The rule's inputs for one stream (traj leaves [T, ...]) before update `updates_done` + 1."""
        apply = jax.vmap(lambda o: self.network.apply(params, o))
        logits, y_t = apply(traj.obs)
        _, y_tp1 = apply(traj.next_obs)
        pi_a = jnp.exp(distrax.Categorical(logits=logits).log_prob(traj.action))
        per_step = lambda x: jnp.broadcast_to(x, traj.reward.shape)  # noqa: E731
        lifetime = (None, None)
        if self.rule.config.lifetime_inputs:
            if hypers.lifetime_updates is None:
                raise ValueError("this rule reads the lifetime's progress (RuleConfig.lifetime_inputs): give "
                                 "Hypers.lifetime_updates, the number of agent updates in the lifetime")
            n_total = jnp.asarray(hypers.lifetime_updates, pi_a.dtype)
            lifetime = (per_step(updates_done / n_total), per_step(jnp.log(n_total)))
        return RuleInputs(
            r_t=traj.reward,
            d_t=traj.terminated.astype(jnp.float32),
            done_t=traj.done.astype(jnp.float32),
            discount=per_step(hypers.discount),
            pi_a_t=pi_a,
            y_t=y_t,
            y_tp1=y_tp1,
            progress=lifetime[0],
            log_lifetime=lifetime[1],
        )

    def update(self, rule_params, state: AgentState, traj: Trajectory, hypers: Hypers):
        """One inner update from a [T, B] trajectory; returns the new state and the rule's outputs."""
        updates_done = state.opt_state.count  # inject_hyperparams counts the updates applied
        inputs = jax.vmap(self.rule_inputs, in_axes=(None, 1, None, None))(state.params, traj, hypers, updates_done)
        pi_hat, y_hat = jax.vmap(lambda x: self.rule.apply(rule_params, x))(inputs)  # [B, T], [B, T, m]
        kind = self.rule.config.y_loss
        # The policy is pushed by π̂ less a baseline (RuleConfig.pi_hat_baseline); the rule's own
        # output is what is returned (and what the meta-objective's L2 term sees).
        pi_hat_used = self.pi_hat_used(pi_hat)

        def surrogate(params):
            # π̂ and ŷ were computed from the outer `state.params`: constants for this gradient.
            def stream(traj_b, pi_hat_b, y_hat_b):
                logits, y = jax.vmap(lambda o: self.network.apply(params, o))(traj_b.obs)
                log_pi = distrax.Categorical(logits=logits).log_prob(traj_b.action)
                return jnp.mean(log_pi * pi_hat_b - hypers.alpha_y * y_loss(y, y_hat_b, kind))

            return -jnp.mean(jax.vmap(stream, in_axes=(1, 0, 0))(traj, pi_hat_used, y_hat))

        grads = jax.grad(surrogate)(state.params)
        if self.implicit_y_step:
            # y's table takes the implicit step (see agents.implicit_table_step): stable at any rate.
            curvature = hypers.alpha_y * (1.0 if kind == "mse" else 0.5)
            grads = agents.implicit_aux_step(grads, traj.obs, self.network.num_states,
                                             state.opt_state.hyperparams["learning_rate"], curvature)
        optimizer = optax.inject_hyperparams(OPTIMIZERS[self.optimizer_name])(learning_rate=0.0)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return AgentState(optax.apply_updates(state.params, updates), opt_state), (pi_hat, y_hat)


def make_lpg_agent(env, env_params, rule_config: RuleConfig, agent: str = "auto",
                   optimizer: str = "sgd", hidden: int = 64) -> LPGAgent:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"agent optimizer {optimizer!r} is unknown; allowed: {tuple(OPTIMIZERS)}")
    network = agents.make_agent(env, env_params, aux_size=rule_config.y_size, kind=agent, hidden=hidden,
                                aux_init=rule_config.y_init)
    obs0, _ = env.reset(jax.random.PRNGKey(0), env_params)
    return LPGAgent(network, UpdateRule(rule_config), optimizer, obs0)


def make_lpg_learner(lpg_agent: LPGAgent, rule_params, hypers: Hypers) -> Learner:
    """An agent trained by a fixed (learned) rule, in the common `Learner` form."""

    def update(state: AgentState, traj: Trajectory):
        state, (pi_hat, y_hat) = lpg_agent.update(rule_params, state, traj, hypers)
        return state, {"pi_hat": jnp.mean(pi_hat), "y_hat": jnp.mean(y_hat)}

    return Learner(
        init=lambda key: lpg_agent.init(key, hypers.learning_rate),
        policy_fn=lpg_agent.policy_fn,
        policy_params=lambda s: s.params,
        update=update,
    )
