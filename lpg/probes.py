"""Belief-state analysis of recurrent agents (Alver & Precup 2021): probes and state machines.

Generic maths on arrays (numpy in, numpy out; fitting runs in JAX):
  * `ridge_fit` / `mlp_fit`: linear (ridge) and small-MLP regressors, with `r2_score`
    (1 - SSE/SST per output, averaged over outputs that vary);
  * `probe`: fit on some trials, score R² on *other* trials (`split_by_group`), used both
    for hidden state -> posterior (decoding) and belief -> hidden state (the reverse map
    of the state-machine simulation);
  * `dissimilarity`: normalised state dissimilarity mean||s - s_hat||² / mean||s||²;
  * `equal_belief_distances`: mean distance between hidden states whose histories have
    equal beliefs vs different beliefs, per network on the same pairs, with bootstrap
    intervals over trials and a paired interval for the difference between networks.

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


class BeliefPairs(NamedTuple):
    """Index pairs [num_pairs, 2] of histories: `equal` share a belief, `different` do not."""

    equal: np.ndarray
    different: np.ndarray
    distinct_beliefs: int


def belief_pairs(beliefs: np.ndarray, seed: int = 0, num_pairs: int = 20000, decimals: int = 5) -> BeliefPairs:
    """Pairs sampled uniformly: an equal pair picks a random point whose belief is shared by
    another point and a random partner among those; a different pair is two random points with
    different beliefs. They depend on the beliefs and the seed only, so every network watching
    the same histories is measured on the same pairs (a paired comparison)."""
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
    a, b = rng.integers(0, len(ids), (2, 4 * num_pairs))
    keep = ids[a] != ids[b]
    a, b = a[keep][:num_pairs], b[keep][:num_pairs]
    return BeliefPairs(np.stack([i, j], -1), np.stack([a, b], -1), int(ids.max() + 1))


def _pair_distances(hidden: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    hidden = np.asarray(hidden, np.float64)
    return np.linalg.norm(hidden[pairs[:, 0]] - hidden[pairs[:, 1]], axis=-1)


def _trial_bootstrap_ratios(distances: dict, pairs: BeliefPairs, groups: np.ndarray, num_resamples: int,
                            seed: int) -> dict:
    """Equal / different mean-distance ratio per network [num_resamples], trials resampled with
    replacement: a pair counts as often as both its ends' trials were drawn (product of counts)."""
    _, trial = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.random.default_rng(seed).multinomial(trial.max() + 1, np.full(trial.max() + 1, 1.0 / (trial.max() + 1)),
                                                     num_resamples).astype(np.float32)
    weights = {kind: counts[:, trial[p[:, 0]]] * counts[:, trial[p[:, 1]]]
               for kind, p in (("equal", pairs.equal), ("different", pairs.different))}
    means = lambda w, d: (w @ d) / np.maximum(w.sum(-1), 1e-12)  # noqa: E731
    return {net: means(weights["equal"], d["equal"]) / means(weights["different"], d["different"])
            for net, d in distances.items()}


def equal_belief_distances(hidden: dict[str, np.ndarray], beliefs: np.ndarray, groups: np.ndarray | None = None,
                           seed: int = 0, num_pairs: int = 20000, decimals: int = 5, num_resamples: int = 1000,
                           level: float = 0.95) -> dict:
    """Mean Euclidean distance between hidden states of histories with equal vs different beliefs,
    for each network in `hidden` ({name: [N, d]}, all watching the same N histories).

    Ratio = equal / different (small: the state is a function of the belief; about 1: it ignores
    the belief). With `groups` (the trial of each history), the ratio gets a `level` confidence
    interval from a bootstrap over trials, and every pair of networks the difference of their
    ratios with a paired interval (same pairs, same resampled trials): the measure that still
    separates a trained network from an untrained one where probes of both reach R² ≈ 1.
    Returns {"networks": {name: {equal, different, ratio[, ratio_ci]}}, "distinct_beliefs",
    and with groups "differences": {"a - b": {difference, ci}}}.
    """
    pairs = belief_pairs(beliefs, seed, num_pairs, decimals)
    distances = {net: {"equal": _pair_distances(h, pairs.equal), "different": _pair_distances(h, pairs.different)}
                 for net, h in hidden.items()}
    networks = {net: {"equal": float(d["equal"].mean()), "different": float(d["different"].mean()),
                      "ratio": float(d["equal"].mean() / d["different"].mean())} for net, d in distances.items()}
    out = {"networks": networks, "distinct_beliefs": pairs.distinct_beliefs}
    if groups is None:
        return out
    tail = 100 * (1 - level) / 2
    ci = lambda x: [float(v) for v in np.percentile(x, [tail, 100 - tail])]  # noqa: E731
    ratios = _trial_bootstrap_ratios(distances, pairs, groups, num_resamples, seed)
    for net, r in ratios.items():
        networks[net]["ratio_ci"] = ci(r)
    names = list(hidden)
    out["differences"] = {f"{a} - {b}": {"difference": networks[a]["ratio"] - networks[b]["ratio"],
                                         "ci": ci(ratios[a] - ratios[b])}
                          for k, a in enumerate(names) for b in names[k + 1:]}
    return out


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


class Actor(NamedTuple):
    """A policy in the engine's form with its params and initial carry (like `lpg.bayes.BaselinePolicy`)."""

    policy_fn: Callable
    params: Any
    init_carry: Any
    reads_posterior: bool = False  # gets the wrapped observation {"obs", "posterior"}


def _with_obs(timestep, obs):
    return timestep._replace(obs=obs)


def watched_policy(actor: Actor, watchers: dict[str, Actor]) -> Actor:
    """`actor` acts on the wrapped env's plain observation; each watcher reads the same
    history (its own action is discarded) and its policy_out is reported under its name.
    policy_out also holds the posterior before acting (`"posterior"`) and the observation."""

    def policy_fn(params, carry, timestep, key):
        keys = jax.random.split(key, len(watchers) + 1)
        plain = _with_obs(timestep, timestep.obs["obs"])
        seen = timestep if actor.reads_posterior else plain
        action, out, actor_carry = actor.policy_fn(params[0], carry[0], seen, keys[0])
        outs, carries = {"actor": out}, [actor_carry]
        for (name, watcher), k, p, c in zip(watchers.items(), keys[1:], params[1:], carry[1:]):
            _, watcher_out, c = watcher.policy_fn(p, c, timestep if watcher.reads_posterior else plain, k)
            outs[name] = watcher_out
            carries.append(c)
        outs["posterior"] = timestep.obs["posterior"]
        outs["obs"] = timestep.obs["obs"]
        return action, outs, tuple(carries)

    params = (actor.params,) + tuple(w.params for w in watchers.values())
    init_carry = (actor.init_carry,) + tuple(w.init_carry for w in watchers.values())
    return Actor(policy_fn, params, init_carry)


def run_trials(env, env_params, actor: Actor, key: chex.PRNGKey, num_trials: int, trial_len: int,
               watchers: dict[str, Actor] | None = None) -> dict:
    """One trial in each of `num_trials` streams (fresh tasks from `key`), on-policy for `actor`.

    The same `key` gives the same tasks and the same environment randomness to every actor
    (common random numbers), so returns of different policies are compared pairwise.
    Returns numpy arrays shaped [N, T, ...]: "reward", "action", "first", "posterior"
    (before acting), "obs", and the policy_out of the actor ("actor") and of each watcher.
    """
    from lpg import rollout as engine  # local: probes' maths does not need the engine

    wrapped = WithPosterior(env)
    policy = watched_policy(actor, watchers or {})
    key_reset, key_run = jax.random.split(key)

    @jax.jit
    def go(params):
        state = engine.reset(wrapped, env_params, key_reset, num_trials, policy.init_carry)
        _, traj = engine.rollout(wrapped, env_params, policy.policy_fn, params, state, key_run,
                                 trial_len, policy.init_carry)
        return traj

    traj = jax.device_get(go(policy.params))
    done = np.asarray(traj.terminated | traj.truncated)
    if not done[-1].all() or done[:-1].any():
        raise ValueError(f"trial_len={trial_len} does not match the environment's trial length")
    swap = lambda x: np.swapaxes(np.asarray(x), 0, 1)  # [T, N, ...] -> [N, T, ...]
    out = {name: jax.tree.map(swap, value) for name, value in traj.policy_out.items()}
    out.update(reward=swap(traj.reward), action=swap(traj.action), first=swap(traj.first))
    return out


def agreement(actions: np.ndarray, q_values: np.ndarray, tol: float = 1e-5, unique_only: bool = False) -> float:
    """Fraction of steps whose action is among the argmax actions of `q_values` [..., A];
    `unique_only`: only over the steps where one action is strictly best (ties say little)."""
    q = np.asarray(q_values)
    chosen = np.take_along_axis(q, np.asarray(actions)[..., None].astype(int), -1)[..., 0]
    best = chosen >= q.max(-1) - tol
    if unique_only:
        unique = (q >= q.max(-1, keepdims=True) - tol).sum(-1) == 1
        return float(best[unique].mean()) if unique.any() else float("nan")
    return float(best.mean())


def paired_gap(returns_a: np.ndarray, returns_b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b over trials (same tasks) and its standard error."""
    diff = np.asarray(returns_a, np.float64) - np.asarray(returns_b, np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
