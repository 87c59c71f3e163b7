"""Exact Bayes baselines for the RL² task distributions (envs/bandits.py, envs/hidden_goal.py).

Host side (numpy): finite-horizon dynamic programming over sufficient statistics, giving
the Bayes-optimal expected return and Q-values, and the oracle's expected return.

Device side (JAX): baseline policies in the rollout engine's form
`policy_fn(params, carry, timestep, key) -> (action, policy_out, carry)`, each packaged
with its params and initial carry as a `BaselinePolicy`. Policies update their belief
from `timestep.prev_action` / `timestep.prev_reward` unless `timestep.first` (the engine
has already reset the carry to `init_carry` then). `policy_out` is a dict whose
`"belief"` entry has the same layout as the environment's `info["posterior"]` at the
previous transition (the belief the action is based on).

Oracles need the task: they read it from the observation of the environment built with
`reveal_task=True`.

Host-side solutions (`*_bayes_optimal`) return a dataclass with the expected return
`value` and Q-value tables; `make_*_bayes_optimal(solution)` turns one into a policy.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from envs.bandits import swapped_evidence, swapped_posterior
from envs.hidden_goal import ACTION_DELTAS


class BaselinePolicy(NamedTuple):
    policy_fn: Callable  # (params, carry, timestep, key) -> (action, policy_out, carry)
    params: Any
    init_carry: Any


# --------------------------------------------------------------------------------------
# Beta-Bernoulli bandit: dynamic programming over Beta counts.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BetaBanditSolution:
    """Bayes-optimal solution of the K-armed Beta-Bernoulli bandit with horizon T.

    `value` is the expected (undiscounted) return over T pulls from the prior.
    `q_values(posterior, steps_left)` gives `[K]` Q-values (expected return of the
    remaining `steps_left` pulls if this arm is pulled now, then acting Bayes-optimally)
    for Beta counts `[alpha_1, beta_1, ...]` as in `info["posterior"]`.

    For K = 2, `q_table` / `offsets` hold all Q-values of the T-step problem: state
    (successes s_a, failures f_a) after t = n_1 + n_2 pulls sits at row
    `offsets[t, n_1] + s_1 * (n_2 + 1) + s_2` of `q_table` `[N, 2]`. There `q_values`
    needs `sum(counts) - prior + steps_left == T`. For K > 2 the Q-values come from a
    memoised recursion (any counts and steps left; practical for small T only).
    """

    value: float
    horizon: int
    num_arms: int
    prior: tuple[float, float]
    q_table: np.ndarray | None = None
    offsets: np.ndarray | None = None
    _q_fn: Callable | None = None
    # K > 2: sorted per-arm counts -> value with T - pulls left, for every reachable state
    state_values: dict | None = dataclasses.field(default=None, compare=False)

    def q_values(self, posterior, steps_left: int | None = None) -> np.ndarray:
        counts = np.rint(
            np.asarray(posterior, np.float64).reshape(-1, 2) - np.asarray(self.prior)
        ).astype(int)
        pulls = counts.sum(-1)
        if steps_left is None:
            steps_left = self.horizon - int(pulls.sum())
        if self.q_table is None:
            return np.asarray(self._q_fn(tuple(map(tuple, counts)), steps_left))
        t = int(pulls.sum())
        if t + steps_left != self.horizon or steps_left < 1:
            raise ValueError(f"table covers pulls + steps_left == {self.horizon}, steps_left >= 1")
        (s1, _), (s2, _) = counts
        return self.q_table[self.offsets[t, pulls[0]] + s1 * (pulls[1] + 1) + s2]

    def action(self, posterior, steps_left: int | None = None) -> int:
        """Bayes-optimal arm (ties go to the lowest index)."""
        return int(np.argmax(self.q_values(posterior, steps_left)))


def beta_bandit_bayes_optimal(
    T: int, num_arms: int = 2, prior: tuple[float, float] = (1.0, 1.0)
) -> BetaBanditSolution:
    """Exact finite-horizon DP over Beta counts c with k pulls left (undiscounted):
    V_k(c) = max_a [m_a (1 + V_k-1(c + success_a)) + (1 - m_a) V_k-1(c + failure_a)].

    m_a = (alpha0 + s_a) / (alpha0 + beta0 + n_a) is the posterior mean of arm a. Two arms
    are solved by backward induction over stages t = T-1..0 with numpy (T = 100 in about
    a second); other K by memoised recursion over arm-sorted counts.
    """
    prior = (float(prior[0]), float(prior[1]))
    if num_arms != 2:
        return _beta_bandit_memo(T, num_arms, prior)
    a0, b0 = prior
    # value[n1] at stage t: [n1 + 1, n2 + 1] array over (s1, s2), n2 = t - n1.
    value_next = [np.zeros((n1 + 1, T - n1 + 1)) for n1 in range(T + 1)]
    q_stages = [None] * T
    for t in range(T - 1, -1, -1):
        value_t, q_t = [], []
        for n1 in range(t + 1):
            n2 = t - n1
            m1 = ((a0 + np.arange(n1 + 1)) / (a0 + b0 + n1))[:, None]
            m2 = ((a0 + np.arange(n2 + 1)) / (a0 + b0 + n2))[None, :]
            pull1 = value_next[n1 + 1]  # [n1 + 2, n2 + 1]
            pull2 = value_next[n1]  # [n1 + 1, n2 + 2]
            q1 = m1 * (1.0 + pull1[1:, :]) + (1.0 - m1) * pull1[:-1, :]
            q2 = m2 * (1.0 + pull2[:, 1:]) + (1.0 - m2) * pull2[:, :-1]
            q = np.stack([q1, q2], -1)
            q_t.append(q.reshape(-1, 2))
            value_t.append(q.max(-1))
        value_next = value_t
        q_stages[t] = q_t
    blocks = [q for q_t in q_stages for q in q_t]
    sizes = np.array([len(b) for b in blocks])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.zeros((T, T + 1), np.int64)
    i = 0
    for t in range(T):
        for n1 in range(t + 1):
            offsets[t, n1] = starts[i]
            i += 1
    return BetaBanditSolution(
        value=float(value_next[0][0, 0]),
        horizon=T,
        num_arms=2,
        prior=prior,
        q_table=np.concatenate(blocks).astype(np.float32),
        offsets=offsets,
    )


def _beta_bandit_memo(T: int, num_arms: int, prior: tuple[float, float]) -> BetaBanditSolution:
    a0, b0 = prior
    values: dict[tuple, float] = {}  # sorted counts -> value with T - pulls left (when k == that)

    @functools.lru_cache(maxsize=None)
    def value(counts: tuple, k: int) -> float:  # counts sorted: arms are exchangeable
        v = max(q(counts, k)) if k > 0 else 0.0
        if k + sum(s + f for s, f in counts) == T:
            values[counts] = v
        return v

    def q(counts: tuple, k: int) -> list[float]:
        out = []
        for a, (s, f) in enumerate(counts):
            m = (a0 + s) / (a0 + b0 + s + f)
            win = tuple(sorted(counts[:a] + ((s + 1, f),) + counts[a + 1 :]))
            loss = tuple(sorted(counts[:a] + ((s, f + 1),) + counts[a + 1 :]))
            out.append(m * (1.0 + value(win, k - 1)) + (1.0 - m) * value(loss, k - 1))
        return out

    start = tuple(((0, 0),) * num_arms)
    v0 = value(start, T)  # fills `values`
    return BetaBanditSolution(
        value=v0, horizon=T, num_arms=num_arms, prior=prior, _q_fn=q, state_values=values
    )


# K > 2 arms on device: the value of every reachable state in one table. A state is the
# multiset of per-arm counts (arms are exchangeable); arm a's (s_a, f_a) is pair index
# n (n + 1) / 2 + s_a (n = s_a + f_a <= T), and sorted pair indices i_0 <= ... <= i_K-1 have
# rank sum_j C(i_j + j, j + 1) (the combinatorial number system), dense over all multisets.
MAX_TABLE_STATES = 5_000_000


def _pair_index(s, f):
    n = s + f
    return n * (n + 1) // 2 + s


def _multiset_rank(indices):
    """Rank of a sorted multiset of pair indices `[..., K]` (ints; numpy or jax arrays)."""
    rank = 0
    for j in range(indices.shape[-1]):
        c = indices[..., j] + j  # C(c, j + 1): a product of j + 1 consecutive integers / (j + 1)!
        term = c
        for r in range(1, j + 1):
            term = term * (c - r)
        rank = rank + term // int(np.prod(np.arange(1, j + 2)))
    return rank


def beta_value_table(solution: BetaBanditSolution) -> np.ndarray:
    """Values `[C(P + K - 1, K)]` of every K-arm count state of a memo solution, by multiset
    rank (P = (T + 1)(T + 2) / 2 pair indices; unreachable entries 0). Raises if it would hold
    more than `MAX_TABLE_STATES` entries."""
    T, K = solution.horizon, solution.num_arms
    P = (T + 1) * (T + 2) // 2
    size = int(np.prod(np.arange(P, P + K), dtype=np.float64) / np.prod(np.arange(1, K + 1)))
    if size > MAX_TABLE_STATES:
        raise ValueError(f"a {K}-arm table for T = {T} holds {size:,} states (at most {MAX_TABLE_STATES:,}): "
                         f"use fewer arms or a shorter trial")
    counts = np.array(list(solution.state_values), np.int64)  # [N, K, (s, f)]
    table = np.zeros(size, np.float32)
    ranks = _multiset_rank(np.sort(_pair_index(counts[..., 0], counts[..., 1]), axis=-1))
    table[ranks] = np.fromiter(solution.state_values.values(), np.float64, len(counts))
    return table


def beta_bandit_oracle_value(
    T: int, num_arms: int = 2, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """Oracle return T E[max_a p_a], p_a ~ Beta(prior) iid: T ∫ (1 - F(x)^K) dx.

    For the uniform prior this is T K / (K + 1).
    """
    cdf = stats.beta(*prior).cdf
    expected_max, _ = integrate.quad(lambda x: 1.0 - cdf(x) ** num_arms, 0.0, 1.0)
    return T * expected_max


# --------------------------------------------------------------------------------------
# Swapped bandit: DP over the evidence count.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SwappedBanditSolution:
    """Bayes-optimal solution of the swapped bandit (arms Bernoulli(p), Bernoulli(1 - p)).

    The posterior depends on the history only through the evidence count
    e = #(arm 0, reward 1) + #(arm 1, reward 0) - #(arm 0, reward 0) - #(arm 1, reward 1):
    P(arm 0 good) = sigmoid(e log(hi / lo)). `q_table[t, e + T]` `[T, 2T + 1, 2]` holds the
    Q-values after t pulls (steps left T - t).
    """

    value: float
    horizon: int
    reward_prob: float
    q_table: np.ndarray

    def q_values(self, evidence: int, t: int) -> np.ndarray:
        return self.q_table[t, evidence + self.horizon]


def swapped_bandit_bayes_optimal(p: float, T: int) -> SwappedBanditSolution:
    """Exact DP: V_k(e) = max_a [P(r=1 | a, e) (1 + V_k-1(e')) + P(r=0 | a, e) V_k-1(e'')]."""
    hi, lo = max(p, 1.0 - p), min(p, 1.0 - p)
    evidence = np.arange(-T, T + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = 1.0 / (1.0 + (lo / hi) ** evidence)  # P(arm 0 good | e)
    b = np.nan_to_num(b, nan=0.5)  # p = 0.5: no information
    success = np.stack([b * hi + (1 - b) * lo, b * lo + (1 - b) * hi], -1)  # [2T + 1, 2]
    # Evidence steps: arm 0 success +1 / failure -1; arm 1 success -1 / failure +1.
    step_on_success = np.array([1, -1])
    value = np.zeros(2 * T + 3)  # padded by one at each end; never reached from e=0 at t
    q_table = np.zeros((T, 2 * T + 1, 2))
    for t in range(T - 1, -1, -1):
        v = value[1:-1]  # v[i] = V(e = i - T)
        up, down = np.append(v[1:], 0.0), np.insert(v[:-1], 0, 0.0)
        v_success = np.where(step_on_success == 1, up[:, None], down[:, None])
        v_failure = np.where(step_on_success == 1, down[:, None], up[:, None])
        q = success * (1.0 + v_success) + (1.0 - success) * v_failure
        q_table[t] = q
        value = np.pad(q.max(-1), 1)
    return SwappedBanditSolution(
        value=float(q_table[0, T].max()), horizon=T, reward_prob=p, q_table=q_table
    )


def swapped_bandit_oracle_value(p: float, T: int) -> float:
    return T * max(p, 1.0 - p)


# --------------------------------------------------------------------------------------
# Bandit policies (JAX).
# --------------------------------------------------------------------------------------


def beta_counts_init_carry(num_arms: int = 2, prior: tuple[float, float] = (1.0, 1.0)):
    """Prior Beta counts `[2K]`, the carry of the Beta-bandit policies."""
    return jnp.tile(jnp.asarray(prior, jnp.float32), num_arms)


def update_beta_counts(counts: jax.Array, timestep) -> jax.Array:
    """Add the previous pull's outcome to the Beta counts (nothing on a trial's first step)."""
    failure = (timestep.prev_reward < 0.5).astype(jnp.int32)
    increment = jax.nn.one_hot(2 * timestep.prev_action + failure, counts.shape[-1])
    return jnp.where(timestep.first, counts, counts + increment)


def _argmax_random_ties(key: jax.Array, x: jax.Array) -> jax.Array:
    ties = x >= x.max() - 1e-6
    return jax.random.categorical(key, jnp.where(ties, 0.0, -jnp.inf))


def thompson_policy(params, carry, timestep, key):
    """Thompson sampling: pull the arm whose sample p_a ~ Beta(alpha_a, beta_a) is largest."""
    counts = update_beta_counts(carry, timestep)
    pairs = counts.reshape(-1, 2)
    sample = jax.random.beta(key, pairs[:, 0], pairs[:, 1])
    return jnp.argmax(sample), {"belief": counts}, counts


def greedy_policy(params, carry, timestep, key):
    """Greedy on the posterior mean, ties broken uniformly at random."""
    counts = update_beta_counts(carry, timestep)
    pairs = counts.reshape(-1, 2)
    action = _argmax_random_ties(key, pairs[:, 0] / pairs.sum(-1))
    return action, {"belief": counts}, counts


class BetaTableParams(NamedTuple):
    q_table: jax.Array  # [N, 2] from BetaBanditSolution
    offsets: jax.Array  # [T, T + 1]
    prior: jax.Array  # [2]


def beta_bayes_optimal_policy(params: BetaTableParams, carry, timestep, key):
    """Bayes-optimal arm by table lookup (ties go to arm 0, as in `BetaBanditSolution.action`)."""
    counts = update_beta_counts(carry, timestep)
    sf = jnp.rint(counts.reshape(2, 2) - params.prior).astype(jnp.int32)  # [(s1, f1), (s2, f2)]
    pulls = sf.sum(-1)
    t = jnp.minimum(pulls.sum(), params.offsets.shape[0] - 1)  # past T: any valid row
    row = params.offsets[t, pulls[0]] + sf[0, 0] * (pulls[1] + 1) + sf[1, 0]
    q = params.q_table[row]
    return jnp.argmax(q), {"belief": counts, "q_values": q}, counts


def make_beta_thompson(num_arms: int = 2, prior=(1.0, 1.0)) -> BaselinePolicy:
    return BaselinePolicy(thompson_policy, None, beta_counts_init_carry(num_arms, prior))


def make_beta_greedy(num_arms: int = 2, prior=(1.0, 1.0)) -> BaselinePolicy:
    return BaselinePolicy(greedy_policy, None, beta_counts_init_carry(num_arms, prior))


class BetaValueTableParams(NamedTuple):
    values: jax.Array  # [C(P + K - 1, K)] from `beta_value_table`
    prior: jax.Array  # [2]


def beta_bayes_optimal_k_policy(params: BetaValueTableParams, carry, timestep, key):
    """Bayes-optimal arm of K arms: Q_a = m_a (1 + V(win_a)) + (1 - m_a) V(loss_a), V looked up by
    the multiset rank of the counts after the pull (ties go to the lowest arm)."""
    counts = update_beta_counts(carry, timestep)
    sf = jnp.rint(counts.reshape(-1, 2) - params.prior).astype(jnp.int32)  # [K, (s, f)]
    K = sf.shape[0]
    pair = _pair_index(sf[:, 0], sf[:, 1])  # [K]
    eye = jnp.eye(K, dtype=jnp.int32)

    def value_after(outcome):  # [K]: V after pulling arm a with this outcome (0 success, 1 failure)
        moved = sf[None] + eye[:, :, None] * jnp.array([1 - outcome, outcome])[None, None]  # [K, K, 2]
        indices = jnp.sort(jnp.where(eye == 1, _pair_index(moved[..., 0], moved[..., 1]), pair[None]), axis=-1)
        return params.values[jnp.clip(_multiset_rank(indices), 0, params.values.shape[0] - 1)]

    pairs = counts.reshape(-1, 2)
    m = pairs[:, 0] / pairs.sum(-1)
    q = m * (1.0 + value_after(0)) + (1.0 - m) * value_after(1)
    return jnp.argmax(q), {"belief": counts, "q_values": q}, counts


def make_beta_bayes_optimal(solution: BetaBanditSolution) -> BaselinePolicy:
    """Table-lookup Bayes-optimal policy (`solution.horizon` must equal the env's T): the Q-table
    for two arms, the value table over count multisets (`beta_value_table`) for more."""
    if solution.q_table is None:
        params = BetaValueTableParams(jnp.asarray(beta_value_table(solution)),
                                      jnp.asarray(solution.prior, jnp.float32))
        return BaselinePolicy(beta_bayes_optimal_k_policy, params,
                              beta_counts_init_carry(solution.num_arms, solution.prior))
    params = BetaTableParams(
        q_table=jnp.asarray(solution.q_table),
        offsets=jnp.asarray(solution.offsets, jnp.int32),
        prior=jnp.asarray(solution.prior, jnp.float32),
    )
    return BaselinePolicy(
        beta_bayes_optimal_policy, params, beta_counts_init_carry(2, solution.prior)
    )


def task_oracle_policy(params, carry, timestep, key):
    """Bandit oracle for `reveal_task=True` envs: obs = [t/T, task...] -> argmax of the task part.

    Beta bandit: the task part is the arms' p, so this pulls the best arm. Swapped bandit:
    it is [1 if arm 0 is good else 0], so argmax([x, 1 - x]) is the good arm.
    """
    task = timestep.obs[1:]
    scores = jnp.concatenate([task, 1.0 - task]) if task.shape[0] == 1 else task
    return jnp.argmax(scores), {}, carry


def make_task_oracle() -> BaselinePolicy:
    return BaselinePolicy(task_oracle_policy, None, jnp.zeros(()))


def random_policy(params, carry, timestep, key):
    """Uniform over `carry.shape[0]` actions (the carry is a dummy of that length)."""
    return jax.random.randint(key, (), 0, carry.shape[0]), {}, carry


def make_random(num_actions: int) -> BaselinePolicy:
    return BaselinePolicy(random_policy, None, jnp.zeros((num_actions,)))


class SwappedTableParams(NamedTuple):
    q_table: jax.Array  # [T, 2T + 1, 2]
    reward_prob: jax.Array  # () p


def swapped_bayes_optimal_policy(params: SwappedTableParams, carry, timestep, key):
    """Carry `[2]` int: (evidence e, pulls t). Action = argmax of the DP's Q(t, e)."""
    step = swapped_evidence(timestep.prev_action, timestep.prev_reward)
    evidence = carry[0] + jnp.where(timestep.first, 0, step)
    t = jnp.where(timestep.first, 0, carry[1] + 1)
    horizon = params.q_table.shape[0]
    q = params.q_table[jnp.minimum(t, horizon - 1), jnp.clip(evidence + horizon, 0, 2 * horizon)]
    belief = swapped_posterior(evidence, params.reward_prob)
    return jnp.argmax(q), {"belief": belief, "q_values": q}, jnp.stack([evidence, t])


def make_swapped_bayes_optimal(solution: SwappedBanditSolution) -> BaselinePolicy:
    params = SwappedTableParams(
        q_table=jnp.asarray(solution.q_table, jnp.float32),
        reward_prob=jnp.asarray(solution.reward_prob, jnp.float32),
    )
    return BaselinePolicy(swapped_bayes_optimal_policy, params, jnp.zeros((2,), jnp.int32))


# --------------------------------------------------------------------------------------
# Hidden-goal grid: DP over (steps, cell, candidates alive).
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HiddenGoalSolution:
    """Bayes-optimal solution of the hidden-goal grid for one layout and horizon T.

    `q_table[t, cell, mask]` `[T, size², 2^G, 5]` holds the Q-values after t steps in cell
    `row * size + col` with candidate g alive iff bit g of `mask` is set (empty masks unused).
    """

    value: float
    horizon: int
    size: int
    candidates: np.ndarray  # [G, 2], the layout the table was solved for
    q_table: np.ndarray


def hidden_goal_bayes_optimal(env, params, T: int) -> HiddenGoalSolution:
    """Exact finite-horizon DP for the hidden-goal grid over (t, cell, candidates alive).

    The posterior is uniform over the alive candidates, so the belief is (cell, alive mask):
    entering an alive candidate finds the goal with probability 1 / |alive| (+1, back to the
    start, alive = {it}), else rules it out (mask minus it, stay in that cell).
    """
    size, num_candidates = env.size, env.num_candidates
    candidates = np.asarray(params.candidates)
    start = np.asarray(params.start)
    deltas = np.asarray(ACTION_DELTAS)
    cells = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(-1, 2)
    entered = np.clip(cells[:, None, :] + deltas[None], 0, size - 1)  # [S, A, 2]
    entered_index = entered[..., 0] * size + entered[..., 1]
    # which candidate (if any) each (cell, action) enters: [S, A], -1 for none
    hits = (entered[:, :, None, :] == candidates[None, None]).all(-1)
    hit = np.where(hits.any(-1), hits.argmax(-1), -1)
    masks = np.arange(2**num_candidates)
    alive = (masks[:, None] >> np.arange(num_candidates)) & 1  # [M, G]
    count = alive.sum(-1)
    start_index = start[0] * size + start[1]
    value = np.zeros((size * size, len(masks)))  # V_T = 0
    q_table = np.zeros((T, size * size, len(masks), len(deltas)))
    for t in range(T - 1, -1, -1):
        q = np.moveaxis(value[entered_index], 1, 2)  # [S, M, A]: nothing found, mask unchanged
        for g in range(num_candidates):
            s_idx, a_idx = np.nonzero(hit == g)
            for m in masks[alive[:, g] == 1]:
                p_found = 1.0 / count[m]
                found = 1.0 + value[start_index, 1 << g]
                ruled_out = value[entered_index[s_idx, a_idx], m & ~(1 << g)] if count[m] > 1 else 0.0
                q[s_idx, m, a_idx] = p_found * found + (1.0 - p_found) * ruled_out
        q_table[t] = q
        value = q.max(-1)
    return HiddenGoalSolution(
        value=float(value[start_index, len(masks) - 1]),
        horizon=T,
        size=size,
        candidates=candidates,
        q_table=q_table.astype(np.float32),
    )


# --------------------------------------------------------------------------------------
# Hidden-goal grid policies (JAX). They track the belief themselves: the cell entered at
# the last step is `prev cell + move(prev_action)`; a reward there reveals the goal, no
# reward rules it out.
# --------------------------------------------------------------------------------------


def _decode_cell(obs: jax.Array, size: int) -> jax.Array:
    index = jnp.argmax(obs[: size * size])
    return jnp.stack([index // size, index % size]).astype(jnp.int32)


def _step_towards(pos: jax.Array, target: jax.Array) -> jax.Array:
    """A shortest-path move on the open grid: rows first, then columns, stay when there."""
    d_row, d_col = target[0] - pos[0], target[1] - pos[1]
    return jnp.select(
        [d_row < 0, d_row > 0, d_col > 0, d_col < 0], [0, 2, 1, 3], default=4
    ).astype(jnp.int32)


def make_hidden_goal_oracle(env) -> BaselinePolicy:
    """Walks the shortest path to the true goal, read from the `reveal_task=True` observation."""
    if not env.reveal_task:
        raise ValueError("the oracle needs HiddenGoalGrid(reveal_task=True)")
    size, num_candidates = env.size, env.num_candidates

    def policy_fn(params, carry, timestep, key):
        goal = jnp.argmax(timestep.obs[-num_candidates:])
        action = _step_towards(_decode_cell(timestep.obs, size), params.candidates[goal])
        return action, {}, carry

    return BaselinePolicy(policy_fn, env.default_params, jnp.zeros(()))


def _update_alive(candidates, alive, pos, timestep, size: int) -> jax.Array:
    """Candidates `[G]` still possible after the previous step (unchanged on a trial's first)."""
    entered = jnp.clip(pos + ACTION_DELTAS[timestep.prev_action], 0, size - 1)
    at_candidate = (candidates == entered).all(-1) & ~timestep.first
    found = (timestep.prev_reward > 0.5) & ~timestep.first
    return jnp.where(found, at_candidate, alive & ~at_candidate)


class HiddenGoalTableParams(NamedTuple):
    q_table: jax.Array  # [T, size², 2^G, 5] from HiddenGoalSolution
    candidates: jax.Array  # [G, 2]


class HiddenGoalBeliefCarry(NamedTuple):
    alive: jax.Array  # [G] bool, candidates not ruled out
    pos: jax.Array  # [2] cell at the previous step
    t: jax.Array  # () steps taken in the trial before this one


def make_hidden_goal_bayes_optimal(solution: HiddenGoalSolution) -> BaselinePolicy:
    """Table-lookup Bayes-optimal policy (ties go to the lowest action index); the env's T
    and layout must be the solution's."""
    size, horizon = solution.size, solution.horizon
    num_candidates = len(solution.candidates)
    bits = 2 ** jnp.arange(num_candidates)

    def policy_fn(params: HiddenGoalTableParams, carry: HiddenGoalBeliefCarry, timestep, key):
        alive = _update_alive(params.candidates, carry.alive, carry.pos, timestep, size)
        t = jnp.where(timestep.first, 0, carry.t + 1)
        pos = _decode_cell(timestep.obs, size)
        mask = (alive * bits).sum()
        q = params.q_table[jnp.minimum(t, horizon - 1), pos[0] * size + pos[1], mask]
        out = {"belief": alive / alive.sum(), "q_values": q}
        return jnp.argmax(q), out, HiddenGoalBeliefCarry(alive, pos, t)

    params = HiddenGoalTableParams(
        jnp.asarray(solution.q_table), jnp.asarray(solution.candidates, jnp.int32)
    )
    init_carry = HiddenGoalBeliefCarry(
        alive=jnp.ones((num_candidates,), bool),
        pos=jnp.zeros((2,), jnp.int32),  # unused: overwritten before the first move is read
        t=jnp.zeros((), jnp.int32),
    )
    return BaselinePolicy(policy_fn, params, init_carry)


class PosteriorSamplingCarry(NamedTuple):
    alive: jax.Array  # [G] bool, candidates not ruled out
    target: jax.Array  # () candidate index currently sampled
    pos: jax.Array  # [2] cell at the previous step


def make_hidden_goal_posterior_sampling(env) -> BaselinePolicy:
    """Posterior sampling: sample a goal from the posterior (uniform over the candidates
    not ruled out), walk to it, resample only when it is ruled out."""
    size, num_candidates = env.size, env.num_candidates

    def policy_fn(params, carry: PosteriorSamplingCarry, timestep, key):
        alive = _update_alive(params.candidates, carry.alive, carry.pos, timestep, size)
        resample = timestep.first | ~alive[carry.target]
        sampled = jax.random.categorical(key, jnp.where(alive, 0.0, -jnp.inf))
        target = jnp.where(resample, sampled, carry.target)
        pos = _decode_cell(timestep.obs, size)
        action = _step_towards(pos, params.candidates[target])
        belief = alive / alive.sum()
        return action, {"belief": belief}, PosteriorSamplingCarry(alive, target, pos)

    init_carry = PosteriorSamplingCarry(
        alive=jnp.ones((num_candidates,), bool),
        target=jnp.zeros((), jnp.int32),
        pos=jnp.asarray(env.start, jnp.int32),
    )
    return BaselinePolicy(policy_fn, env.default_params, init_carry)
