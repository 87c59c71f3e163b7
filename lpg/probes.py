"""Belief-state analysis of recurrent agents (Alver & Precup 2021): probes and state machines.

Generic maths on arrays (numpy in, numpy out; fitting runs in JAX):
  * `ridge_fit` / `mlp_fit`: linear (ridge) and small-MLP regressors, with `r2_score`
    (1 - SSE/SST per output, averaged over outputs that vary);
  * `probe`: fit on some trials, score R² on *other* trials (`split_by_group`), used both
    for hidden state -> posterior (decoding) and belief -> hidden state (the reverse map
    of the state-machine simulation);
  * `dissimilarity`: normalised state dissimilarity mean||s - s_hat||² / mean||s||²;
  * `equal_belief_distances`: mean distance between hidden states whose histories have
    equal beliefs vs different beliefs.

And the on-policy data collection through the rollout engine: `WithPosterior` wraps a
task-distribution environment so that each observation also carries the exact posterior
*before acting* (`state.posterior`), which pairs every hidden state with the posterior
of the same history.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

# --------------------------------------------------------------------------------------
# Regressors and scores
# --------------------------------------------------------------------------------------


def r2_score(y: np.ndarray, y_hat: np.ndarray) -> float:
    """R² = 1 - SSE/SST per output column, averaged over the columns that vary. y: [N, k]."""
    y, y_hat = np.asarray(y, np.float64).reshape(len(y), -1), np.asarray(y_hat, np.float64).reshape(len(y), -1)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    sse = ((y - y_hat) ** 2).sum(0)
    varies = sst > 1e-12 * len(y)
    if not varies.any():
        raise ValueError("r2_score: no target column varies")
    return float(np.mean(1.0 - sse[varies] / sst[varies]))


class Standardiser(NamedTuple):
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        std = x.std(0)
        return cls(x.mean(0), np.where(std > 1e-8, std, 1.0))

    def __call__(self, x):
        return (x - self.mean) / self.scale


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """y = standardise(x) @ w + b."""

    x_norm: Standardiser
    w: np.ndarray
    b: np.ndarray

    def __call__(self, x):
        return self.x_norm(x) @ self.w + self.b


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = 1e-3) -> LinearMap:
    """Ridge regression on standardised inputs (penalty alpha * N * ||w||²), closed form."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).reshape(len(x), -1)
    norm = Standardiser.fit(x)
    z = norm(x)
    y_mean = y.mean(0)
    gram = z.T @ z + alpha * len(z) * np.eye(z.shape[1])
    w = np.linalg.solve(gram, z.T @ (y - y_mean))
    return LinearMap(norm, w, y_mean)


class _MLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.out)(x)


@dataclasses.dataclass(frozen=True)
class MLPMap:
    """Two-layer ReLU MLP on standardised inputs predicting standardised targets."""

    x_norm: Standardiser
    y_norm: Standardiser
    module: _MLP
    params: Any

    def __call__(self, x):
        z = jnp.asarray(self.x_norm(x), jnp.float32)
        return self.module.apply(self.params, z) * self.y_norm.scale + self.y_norm.mean


def mlp_fit(
    x: np.ndarray, y: np.ndarray, key: chex.PRNGKey, hidden: int = 64, steps: int = 2000,
    batch_size: int = 512, learning_rate: float = 3e-3, weight_decay: float = 1e-4,
) -> MLPMap:
    """Fits a 2-layer MLP by AdamW on minibatches of the squared error of standardised targets."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32).reshape(len(x), -1)
    x_norm, y_norm = Standardiser.fit(x), Standardiser.fit(y)
    zx, zy = jnp.asarray(x_norm(x), jnp.float32), jnp.asarray(y_norm(y), jnp.float32)
    module = _MLP(hidden, y.shape[1])
    key_init, key_batches = jax.random.split(key)
    params = module.init(key_init, zx[:1])
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    optimizer = optax.adamw(schedule, weight_decay=weight_decay)

    def step(carry, key):
        params, opt_state = carry
        idx = jax.random.randint(key, (min(batch_size, len(zx)),), 0, len(zx))

        def loss(p):
            return jnp.mean((module.apply(p, zx[idx]) - zy[idx]) ** 2)

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
        (params, optimizer.init(params)), jax.random.split(key_batches, steps)
    )
    return MLPMap(x_norm, y_norm, module, params)


def split_by_group(groups: np.ndarray, key: chex.PRNGKey, test_fraction: float = 0.3):
    """Boolean train/test masks that keep every group (trial) on one side."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = np.unique(groups)
    if len(ids) < 2:
        raise ValueError("split_by_group needs at least two groups")
    perm = np.asarray(jax.random.permutation(key, len(ids)))
    num_test = max(1, int(round(test_fraction * len(ids))))
    test_ids = ids[perm[:num_test]]
    test = np.isin(groups, test_ids)
    return ~test, test


PROBE_KINDS = ("linear", "mlp")


def fit_map(kind: str, x, y, key, **kwargs) -> Callable:
    if kind == "linear":
        return ridge_fit(x, y, **kwargs)
    if kind == "mlp":
        return mlp_fit(x, y, key, **kwargs)
    raise ValueError(f"probe kind {kind!r} is unknown; allowed: {PROBE_KINDS}")


def probe(kind: str, x, y, groups, key, test_fraction: float = 0.3, **kwargs) -> dict:
    """Fits `kind` x -> y on some groups (trials); held-out R² and predictions on the rest."""
    key_split, key_fit = jax.random.split(key)
    train, test = split_by_group(np.asarray(groups), key_split, test_fraction)
    fitted = fit_map(kind, x[train], y[train], key_fit, **kwargs)
    y_hat = np.asarray(fitted(x[test]))
    return {"r2": r2_score(y[test], y_hat), "r2_train": r2_score(y[train], np.asarray(fitted(x[train]))),
            "map": fitted, "test": test, "y_hat": y_hat}


def dissimilarity(s: np.ndarray, s_hat: np.ndarray) -> float:
    """Normalised state dissimilarity mean_i ||s_i - s_hat_i||² / mean_i ||s_i||². s: [N, d]."""
    s, s_hat = np.asarray(s, np.float64), np.asarray(s_hat, np.float64)
    return float(((s - s_hat) ** 2).sum(-1).mean() / (s**2).sum(-1).mean())


def belief_groups(beliefs: np.ndarray, decimals: int = 5) -> np.ndarray:
    """Integer id per row; rows with equal beliefs (to `decimals`) share an id."""
    _, ids = np.unique(np.round(np.asarray(beliefs, np.float64), decimals), axis=0, return_inverse=True)
    return ids.reshape(-1)


def equal_belief_distances(
    hidden: np.ndarray, beliefs: np.ndarray, seed: int = 0, num_pairs: int = 20000, decimals: int = 5
) -> dict:
    """Mean Euclidean distance between hidden states of histories with equal vs different beliefs.

    Pairs are sampled uniformly: an equal pair picks a random point whose belief is shared by
    another point and a random partner among those; a different pair is two random points
    with different beliefs. Ratio = equal / different (small: the state is a function of the belief).
    """
    hidden = np.asarray(hidden, np.float64)
    ids = belief_groups(beliefs, decimals)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.searchsorted(sorted_ids, ids)  # start of each point's group in `order`
    sizes = np.bincount(ids)[ids]
    rng = np.random.default_rng(seed)
    shared = np.flatnonzero(sizes >= 2)
    if len(shared) == 0:
        raise ValueError("equal_belief_distances: no two histories share a belief")
    i = rng.choice(shared, num_pairs)
    offset = rng.integers(0, sizes[i] - 1)  # partner among the other size - 1 members
    position_of = np.empty_like(order)
    position_of[order] = np.arange(len(order))
    within = position_of[i] - starts[i]
    partner_rank = offset + (offset >= within)
    j = order[starts[i] + partner_rank]
    equal = np.linalg.norm(hidden[i] - hidden[j], axis=-1)
    a, b = rng.integers(0, len(ids), (2, 4 * num_pairs))
    keep = ids[a] != ids[b]
    a, b = a[keep][:num_pairs], b[keep][:num_pairs]
    different = np.linalg.norm(hidden[a] - hidden[b], axis=-1)
    return {
        "equal": float(equal.mean()),
        "different": float(different.mean()),
        "ratio": float(equal.mean() / different.mean()),
        "distinct_beliefs": int(ids.max() + 1),
    }


# --------------------------------------------------------------------------------------
# On-policy data through the rollout engine
# --------------------------------------------------------------------------------------


class WithPosterior:
    """Wraps a task-distribution environment: observations become
    `{"obs": o_t, "posterior": state.posterior}`, the exact posterior given the history
    up to o_t, i.e. the belief the agent holds when it acts at t."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def _wrap(self, obs, state):
        return {"obs": obs, "posterior": state.posterior.astype(jnp.float32)}

    def reset(self, key, params=None):
        obs, state = self.env.reset(key, params)
        return self._wrap(obs, state), state

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        # info["posterior"] is the posterior after the transition, i.e. of the pre-reset state
        final = {"obs": info["final_observation"], "posterior": info["posterior"].astype(jnp.float32)}
        return self._wrap(obs, state), state, reward, terminated, truncated, {**info, "final_observation": final}
