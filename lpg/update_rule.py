"""The meta-learned update rule of LPG: a backward LSTM over one trajectory.

Per step it reads x_t = [r_t, d_t, γ, π(a_t|s_t), φ(y(s_t)), φ(y(s_t+1))], where φ is
one small embedding (Dense(16) -> ReLU -> Dense(1)) shared by both y inputs (a rule with
`lifetime_inputs` also reads the lifetime's progress n/N and log N, as in temporally-aware
LPG, Jackson et al. 2023), and
emits a scalar π̂_t and a target ŷ_t ∈ [0,1]^m (sigmoid; MSE target) or a softmax
target (KL mode). The LSTM runs from the last step to the first, and its state is
reset where an episode ends, so π̂_t depends on steps t, t+1, ... up to the end of
t's episode and on nothing before t. A rule with a `context` of c > 0 also resets it
every c steps (windows [0, c), [c, 2c), ... of the trajectory), so it sees at most c
steps ahead and must pass value further back through y alone. A rule with a
`bootstrap_gate` blends its target with the next state's prediction, per component:
ŷ_t = g_t ⊙ ȳ(s_t+1) + (1 − g_t) ⊙ σ(W h_t), with g_t = σ(W_g h_t) learned and ȳ the
next prediction as a target (clipped to [0, 1]; softmax in KL mode), so carrying y's value
back across a rollout's end without shrinking it is one setting of g, not a map through φ
that the meta-gradient must make exact. By default nothing shuts the gate where an episode
terminated (d_t = 1); the rule reads d_t and could learn to, but the gated rules meta-trained without
the option below keep it 0.55-0.87 open at a delayed chain's terminal step (0.84-0.93 at its other steps;
results/lpg/gateshut/gate_open_44.txt), so their target there leans on the prediction at the
terminal observation, which a table agent never trains; `bootstrap_gate_terminal_shut` shuts it
there (g_t times 1 − d_t). With `bootstrap_gate_carry` the gate blends with the next step's target
instead, ŷ_t = g_t ⊙ ŷ_t+1 + (1 − g_t) ⊙ σ(W h_t), and with ȳ(s_t+1) only where the LSTM's state is
reset (an episode's or a window's end) and at the trajectory's last step: a learned λ-return over
targets, so an open gate carries the bootstrap (or a reward's target) back across the whole
rollout in one update. The LSTM alone cannot do that: it reads y only through the scalar φ, so a
one-step gate moves y's vector back one step per update at most.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import serialization

from lpg.agents import AUX_INITS

Y_LOSSES = ("mse", "kl")
PI_HAT_BASELINES = ("batch_mean", "adam_batch_mean", "step_mean", "adam_step_mean", "none")


@dataclasses.dataclass(frozen=True)
class RuleConfig:
    hidden: int = 256  # LSTM units
    y_size: int = 30  # m
    embed: int = 16  # width of φ's hidden layer
    y_loss: str = "mse"  # "mse": ŷ ∈ [0,1]^m, squared error; "kl": softmax y, KL(y || ŷ) (the paper's eq. 2)
    # How the agent update uses π̂ (lpg.inner.LPGAgent.update): "batch_mean" subtracts the mean π̂ of
    # the update's batch, a baseline (it leaves the expected policy gradient unchanged and removes
    # a constant push on every sampled action, which under Adam only inflates the second moment);
    # "adam_batch_mean" subtracts it for agents trained by Adam only (SGD tables take π̂ as emitted);
    # "step_mean" subtracts, at each step t of the rollout, the mean π̂ over the batch's streams at t
    # (a baseline too: it also removes what π̂ owes to the step's place in the rollout, which the
    # backward LSTM adds and no action causes); "adam_step_mean" does so for Adam agents only;
    # "none" is the paper's (and every rule saved before this field existed).
    pi_hat_baseline: str = "batch_mean"
    # Lifetime conditioning: the rule also reads n/N (agent updates done / lifetime length) and
    # log N at every step, so it can act differently early and late in a lifetime and for short
    # and long lifetimes. Off for every rule saved before this field existed.
    lifetime_inputs: bool = False
    # How far ahead the backward LSTM may read: 0 = to the end of the trajectory (the paper's);
    # c > 0 resets its state every c steps, so anything further than c steps back from a reward
    # reaches π̂ and ŷ only through φ(y(s_t+1)), the rule's bootstrap. 0 for every rule saved
    # before this field existed.
    context: int = 0
    # Learned bootstrap gate (module docstring): ŷ_t = g_t ⊙ ȳ(s_t+1) + (1 − g_t) ⊙ σ(W h_t). Off for
    # every rule saved before this field existed.
    bootstrap_gate: bool = False
    # The gate's initial bias: 0 starts it half open; negative starts the rule close to one without it.
    bootstrap_gate_bias: float = 0.0
    # Shut the gate where s_t+1 is terminal (g_t times 1 − d_t, as TD's bootstrap), so no target leans on
    # the prediction at a terminal observation. Off: the rule must learn that from d_t (module docstring).
    bootstrap_gate_terminal_shut: bool = False
    # Blend with the next step's target ŷ_t+1 within an episode and window, with ȳ(s_t+1) only at their
    # ends and the trajectory's last step (module docstring). Off: ȳ(s_t+1) at every step.
    bootstrap_gate_carry: bool = False
    # How a network agent's y head starts (lpg.agents.AUX_INITS): "lecun", at random, y(s) differing
    # from state to state; "zeros", y(s) = 0 everywhere, as a table's starts. "lecun" for every rule
    # saved before this field existed.
    y_init: str = "lecun"

    def __post_init__(self):
        if self.y_loss not in Y_LOSSES:
            raise ValueError(f"RuleConfig.y_loss={self.y_loss!r} is unknown; allowed: {Y_LOSSES}")
        if self.pi_hat_baseline not in PI_HAT_BASELINES:
            raise ValueError(
                f"RuleConfig.pi_hat_baseline={self.pi_hat_baseline!r} is unknown; allowed: {PI_HAT_BASELINES}")
        if self.y_init not in AUX_INITS:
            raise ValueError(f"RuleConfig.y_init={self.y_init!r} is unknown; allowed: {AUX_INITS}")
        if self.hidden < 1 or self.y_size < 1 or self.embed < 1:
            raise ValueError(f"RuleConfig sizes must be >= 1 (got {self})")
        if self.context < 0:
            raise ValueError(f"RuleConfig.context={self.context} must be >= 0 (0: the whole trajectory)")
        if (self.bootstrap_gate_terminal_shut or self.bootstrap_gate_carry) and not self.bootstrap_gate:
            raise ValueError("RuleConfig.bootstrap_gate_terminal_shut and bootstrap_gate_carry shape the bootstrap "
                             "gate: they need bootstrap_gate=True (for a rule without the gate set all three false; "
                             "`--preset cpu_nogate` is the cpu100 preset without it)")


class RuleInputs(NamedTuple):
    """One trajectory's inputs to the rule, every field [T] or [T, m]."""

    r_t: chex.Array  # reward after a_t
    d_t: chex.Array  # 1 if s_t+1 is terminal (no bootstrap)
    done_t: chex.Array  # 1 if the episode ended at t (terminal or truncated): LSTM reset
    discount: chex.Array  # γ of this lifetime, broadcast to [T]
    pi_a_t: chex.Array  # π(a_t|s_t)
    y_t: chex.Array  # y(s_t) [T, m]
    y_tp1: chex.Array  # y(s_t+1), pre-reset observation [T, m]
    # Read only by rules with RuleConfig.lifetime_inputs (None otherwise):
    progress: chex.Array | None = None  # n/N: agent updates done before this one / lifetime length
    log_lifetime: chex.Array | None = None  # log N


class UpdateRule(nn.Module):
    """(RuleInputs [T]) -> (π̂ [T], ŷ [T, m]); the backward LSTM."""

    config: RuleConfig

    @nn.compact
    def __call__(self, inputs: RuleInputs):
        cfg = self.config
        phi = nn.Sequential([nn.Dense(cfg.embed), nn.relu, nn.Dense(1)], name="phi")
        y_in = inputs.y_t if cfg.y_loss == "mse" else jax.nn.softmax(inputs.y_t)
        y_next_in = inputs.y_tp1 if cfg.y_loss == "mse" else jax.nn.softmax(inputs.y_tp1)
        columns = [inputs.r_t, inputs.d_t, inputs.discount, inputs.pi_a_t, phi(y_in)[:, 0], phi(y_next_in)[:, 0]]
        if cfg.lifetime_inputs:
            if inputs.progress is None or inputs.log_lifetime is None:
                raise ValueError("a rule with lifetime_inputs=True needs RuleInputs.progress and log_lifetime")
            columns += [inputs.progress, inputs.log_lifetime]
        x = jnp.stack(columns, axis=-1)

        cell = nn.OptimizedLSTMCell(cfg.hidden, name="lstm")
        # Default float dtype (float64 under x64), so the carry matches the cell's output.
        zeros = (jnp.zeros((cfg.hidden,), jnp.result_type(float)),) * 2

        def step(cell, carry, xs):
            x_t, reset_t = xs
            # Reading backwards: the state arriving from t+1 belongs to the next episode if t ended
            # one (or to the next window of a rule with a context).
            carry = jax.tree.map(lambda c, z: jnp.where(reset_t, z, c), carry, zeros)
            carry, h = cell(carry, x_t)
            return carry, h

        scan = nn.scan(
            step, variable_broadcast="params", split_rngs={"params": False}, reverse=True
        )
        reset = inputs.done_t.astype(bool)
        if cfg.context:
            reset |= (jnp.arange(reset.shape[0]) + 1) % cfg.context == 0
        _, h = scan(cell, zeros, (x, reset))
        h = nn.relu(h)
        pi_hat = nn.Dense(1, name="pi_hat")(h)[:, 0]
        y_logits = nn.Dense(cfg.y_size, name="y_hat")(h)
        y_hat = jax.nn.sigmoid(y_logits) if cfg.y_loss == "mse" else jax.nn.softmax(y_logits)
        if cfg.bootstrap_gate:
            gate_bias = nn.initializers.constant(cfg.bootstrap_gate_bias)
            gate = jax.nn.sigmoid(nn.Dense(cfg.y_size, bias_init=gate_bias, name="gate")(h))
            if cfg.bootstrap_gate_terminal_shut:
                gate = gate * (1.0 - inputs.d_t)[:, None]
            # The next prediction as a target: in ŷ's range ([0, 1] in MSE mode, a distribution in KL's).
            y_next = jnp.clip(y_next_in, 0.0, 1.0) if cfg.y_loss == "mse" else y_next_in
            if cfg.bootstrap_gate_carry:
                # Backwards over the trajectory: the target arriving from t+1, or ȳ(s_t+1) where the
                # LSTM's state is reset (episode or window end) and at the last step.
                ends = reset.at[-1].set(True)

                def carry_back(y_after, xs):
                    g_t, own_t, y_next_t, end_t = xs
                    y_t = g_t * jnp.where(end_t, y_next_t, y_after) + (1.0 - g_t) * own_t
                    return y_t, y_t

                _, y_hat = jax.lax.scan(carry_back, y_hat[-1], (gate, y_hat, y_next, ends), reverse=True)
            else:
                y_hat = gate * y_next + (1.0 - gate) * y_hat
        return pi_hat, y_hat


def y_loss(y: chex.Array, y_hat: chex.Array, kind: str) -> chex.Array:
    """Per-step loss of the agent's prediction y [.., m] towards the rule's target ŷ [.., m].

    mse: ‖y − ŷ‖²;  kl: KL(softmax y ‖ ŷ) = Σ_k p_k (log p_k − log ŷ_k), p = softmax(y) (paper, eq. 2).
    """
    if kind == "mse":
        return jnp.sum((y - y_hat) ** 2, axis=-1)
    log_p = jax.nn.log_softmax(y)
    return jnp.sum(jnp.exp(log_p) * (log_p - jnp.log(jnp.clip(y_hat, 1e-8))), axis=-1)


def init_rule(rule_config: RuleConfig, key: chex.PRNGKey, horizon: int = 2):
    """Initial rule parameters (shapes do not depend on the trajectory length)."""
    m = rule_config.y_size
    zeros = jnp.zeros((horizon,))
    lifetime = (zeros, zeros) if rule_config.lifetime_inputs else (None, None)
    dummy = RuleInputs(*(zeros for _ in range(5)), jnp.zeros((horizon, m)), jnp.zeros((horizon, m)), *lifetime)
    return UpdateRule(rule_config).init(key, dummy)


def save_rule(path: str | Path, params: Any, config: RuleConfig) -> Path:
    """Writes a learned rule to `path` (a .msgpack of parameters) and its config beside it (.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialization.to_bytes(jax.device_get(params)))
    path.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return path


def load_rule(path: str | Path) -> tuple[Any, RuleConfig]:
    """Reads a rule written by `save_rule`: returns (params, config)."""
    path = Path(path)
    if not path.exists() or not path.with_suffix(".json").exists():
        raise FileNotFoundError(f"no saved rule at {path} (expected {path.name} and {path.with_suffix('.json').name})")
    fields = json.loads(path.with_suffix(".json").read_text())
    fields.setdefault("pi_hat_baseline", "none")  # saved before the field existed: trained without one
    config = RuleConfig(**fields)
    template = init_rule(config, jax.random.PRNGKey(0))
    return serialization.from_bytes(template, path.read_bytes()), config
