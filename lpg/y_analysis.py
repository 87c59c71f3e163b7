"""What does the agent's prediction vector y(s) encode? (Oh et al. 2020, the y analysis.)

An agent is trained by a learned rule on a tabular grid; its final policy π is evaluated
exactly (`envs.planning.policy_evaluation`) at several discounts, and a 1-hidden-layer MLP
is fitted from y(s) to V^π_γ(s) on a train split of states; the held-out R² says how much of
V_γ is recoverable from y. The baseline is a scalar TD(λ) value table trained alongside on the
same experience at the training discount, regressed the same way: it can match y at its own
discount, but a single number per state cannot encode values at other discounts.

Pure functions: `with_td_value` wraps any tabular learner so that a TD(λ) table and state
visit counts ride along on its experience; `true_values`, `fit_mlp`, `r2_score` and
`regression_r2` do the maths on host arrays.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from flax import struct
from scipy.sparse.csgraph import breadth_first_order

from envs.planning import TabularMDP, policy_evaluation
from lpg.a2c import lambda_returns
from lpg.learner import Learner
from lpg.rollout import Trajectory


# ------------------------------------------------------------------------------ TD(λ) alongside
@struct.dataclass
class WithValue:
    """A learner's state plus a TD(λ) value table v [S] and visit counts [S] of the same experience."""

    learner: Any
    v: chex.Array
    visits: chex.Array


def td_lambda_update(v: chex.Array, traj: Trajectory, discount: float, lambda_: float, step_size: float):
    """One batch of tabular TD(λ) (forward view, truncated at the rollout's end):

        v(s) <- v(s) + α · mean_{t: s_t = s} (G^λ_t - v(s_t)),  G^λ_t from `lpg.a2c.lambda_returns`

    traj leaves are [T, B] with integer observations. Returns (v', visits [S] in this batch).
    """
    v_t, v_tp1 = v[traj.obs], v[traj.next_obs]
    g_t = jax.vmap(lambda tr, vt: lambda_returns(tr, vt, discount, lambda_), in_axes=(1, 1), out_axes=1)(
        traj, v_tp1
    )
    num_states = v.shape[0]
    delta_sum = jax.ops.segment_sum((g_t - v_t).reshape(-1), traj.obs.reshape(-1), num_states)
    count = jax.ops.segment_sum(jnp.ones(traj.obs.size, v.dtype), traj.obs.reshape(-1), num_states)
    return v + step_size * delta_sum / jnp.maximum(count, 1.0), count


def with_td_value(learner: Learner, num_states: int, discount: float, lambda_: float = 0.95,
                  step_size: float = 0.2) -> Learner:
    """`learner` unchanged, with a TD(λ) table and visit counts trained on its own rollouts."""

    def init(key):
        return WithValue(learner.init(key), jnp.zeros((num_states,)), jnp.zeros((num_states,)))

    def update(state: WithValue, traj: Trajectory):
        inner, metrics = learner.update(state.learner, traj)
        v, count = td_lambda_update(state.v, traj, discount, lambda_, step_size)
        return WithValue(inner, v, state.visits + count), metrics

    return Learner(init, learner.policy_fn, lambda s: learner.policy_params(s.learner), update, learner.init_carry)


# ------------------------------------------------------------------------------ exact values
def reachable_states(mdp: TabularMDP) -> np.ndarray:
    """bool [S]: states reachable from the reset distribution under some sequence of actions."""
    graph = sum((abs(P) for P in mdp.P), sp.csr_matrix((mdp.num_states, mdp.num_states))).tocsr()
    seen = np.zeros(mdp.num_states, bool)
    for s in np.flatnonzero(mdp.d0 > 0):
        if not seen[s]:
            seen[breadth_first_order(graph, s, directed=True, return_predecessors=False)] = True
    return seen


def true_values(mdp: TabularMDP, pi: np.ndarray, discounts: Sequence[float]) -> np.ndarray:
    """V^π_γ [len(discounts), S] by exact policy evaluation of π [S, A] at every γ."""
    return np.stack([policy_evaluation(mdp, pi, g) for g in discounts])


# ------------------------------------------------------------------------------ regression
class ValueMLP(nn.Module):
    """The probe: x [k] -> one hidden layer -> scalar. The output layer starts at zero, so an
    untrained (or early-stopped at step 0) probe predicts the training mean."""

    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[..., 0]


@jax.jit(static_argnames=("hidden", "steps"))
def _train_mlps(keys, x_fit, y_fit, x_val, y_val, learning_rate, weight_decay, hidden: int, steps: int):
    """One MLP per row of y_fit [D, N] from x_fit [N, k] (vmapped over D); early-stopped: returns
    the parameters of the step with the lowest squared error on (x_val, y_val [D, M])."""
    model = ValueMLP(hidden)
    optimiser = optax.adamw(learning_rate, weight_decay=weight_decay)

    def train(key, y, y_v):
        params = model.init(key, x_fit[0])
        loss = lambda p, x, t: jnp.mean((model.apply(p, x) - t) ** 2)  # noqa: E731

        def step(carry, _):
            params, opt_state, best, best_loss = carry
            updates, opt_state = optimiser.update(jax.grad(loss)(params, x_fit, y), opt_state, params)
            params = optax.apply_updates(params, updates)
            val = loss(params, x_val, y_v)
            better = val < best_loss
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
            return (params, opt_state, best, jnp.minimum(val, best_loss)), None

        init = (params, optimiser.init(params), params, loss(params, x_val, y_v))
        (_, _, best, _), _ = jax.lax.scan(step, init, None, length=steps)
        return best

    return jax.vmap(train)(keys, y_fit, y_val)


def fit_mlps(x: np.ndarray, y: np.ndarray, key: chex.PRNGKey, hidden: int = 64, steps: int = 2000,
             learning_rate: float = 3e-3, weight_decay: float = 1e-4, validation_fraction: float = 0.2):
    """Fits one `ValueMLP` per row of y [D, N] from x [N, k] by full-batch AdamW on squared error,
    early-stopped on a random `validation_fraction` of the N samples (so a target the features
    cannot explain ends near the mean prediction instead of a memorised one).

    Inputs and each target are standardised with the training data's statistics. Returns
    `predict(x [M, k]) -> [D, M]` (numpy, in the original target units).
    """
    x, y = np.asarray(x, np.float32).reshape(len(x), -1), np.atleast_2d(np.asarray(y, np.float32))
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    y_mean, y_std = y.mean(1, keepdims=True), y.std(1, keepdims=True) + 1e-6
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    key_split, key_init = jax.random.split(key)
    seed = int(jax.random.randint(key_split, (), 0, 2**31 - 1))
    fit, val = train_test_split(len(x), 1.0 - validation_fraction, np.random.default_rng(seed))
    params = _train_mlps(jax.random.split(key_init, len(y)), jnp.asarray(xs[fit]), jnp.asarray(ys[:, fit]),
                         jnp.asarray(xs[val]), jnp.asarray(ys[:, val]), learning_rate, weight_decay,
                         hidden=hidden, steps=steps)
    model = ValueMLP(hidden)

    def predict(x_new):
        z = jnp.asarray((np.asarray(x_new, np.float32).reshape(len(x_new), -1) - x_mean) / x_std)
        return np.asarray(jax.vmap(lambda p: model.apply(p, z))(params)) * y_std + y_mean

    return predict


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination 1 - Σ(y - ŷ)² / Σ(y - ȳ)² (ȳ: mean of y_true)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    total = np.sum((y_true - y_true.mean()) ** 2)
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / total) if total > 0 else float("nan")


def train_test_split(n: int, train_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = rng.permutation(n)
    cut = int(round(train_fraction * n))
    if cut < 2 or n - cut < 2:
        raise ValueError(f"{n} samples are too few for a train/test split at {train_fraction}")
    return order[:cut], order[cut:]


def regression_r2(features: np.ndarray, targets: np.ndarray, key: chex.PRNGKey, train_fraction: float = 0.75,
                  **fit_kwargs) -> dict[str, Any]:
    """Held-out R² of an MLP from features [N, k] to each row of targets [D, N] (one split for all D).

    Returns {"r2": [D], "test": test indices [n_test], "predictions": [D, n_test]}.
    """
    features = np.asarray(features).reshape(len(features), -1)
    targets = np.atleast_2d(targets)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    train, test = train_test_split(len(features), train_fraction, np.random.default_rng(seed))
    predict = fit_mlps(features[train], targets[:, train], key, **fit_kwargs)
    predictions = predict(features[test])
    r2 = np.array([r2_score(t[test], p) for t, p in zip(targets, predictions)])
    return {"r2": r2, "test": test, "predictions": predictions}


# ------------------------------------------------------------------------------ agreement
def with_random_y(learner: Learner) -> Learner:
    """`learner` (an LPG table agent) with its y table drawn uniformly from [0, 1] at init, so
    that two agents start from different predictions (the paper's agreement check)."""

    def init(key):
        k_learner, k_y = jax.random.split(key)
        state = learner.init(k_learner)
        inner = state.params["params"]
        aux = jax.random.uniform(k_y, inner["aux"].shape, inner["aux"].dtype)
        return state.replace(params={**state.params, "params": {**inner, "aux": aux}})

    return learner._replace(init=init)


def y_disagreement(y_a: np.ndarray, y_b: np.ndarray) -> float:
    """Mean squared distance between two agents' predictions over the same states [N, m], relative
    to the spread of predictions across states:

        D = mean_s ‖y_a(s) − y_b(s)‖² / ½ (mean_s ‖y_a(s) − ȳ_a‖² + mean_s ‖y_b(s) − ȳ_b‖²).

    0: the same prediction in every state; 2: unrelated predictions of the same spread.
    """
    y_a, y_b = np.asarray(y_a, np.float64), np.asarray(y_b, np.float64)
    spread = 0.5 * (((y_a - y_a.mean(0)) ** 2).sum(1).mean() + ((y_b - y_b.mean(0)) ** 2).sum(1).mean())
    return float(((y_a - y_b) ** 2).sum(1).mean() / max(spread, 1e-12))
