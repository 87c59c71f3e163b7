"""Exact finite MDPs of tabular grids and delayed chains, and exact planning on them (host side).

The MDP is indexed by the env's tabular observation (grids: `cell * 2**max_objects +
presence bits`; chains: `position * 2 + branch`), so its values line up with what a
tabular agent sees. Termination is kept apart from the transition matrices:
`P[a][s, s']` is the probability of moving to s' *and continuing*, `terminate[s, a]` the
probability that the step ends the episode, so `P[a].sum(1) + terminate[:, a] == 1`.
Rewards `R[s, a]` are expected rewards of the step (paid whether or not it terminates).
Time limits are not part of the MDP: values are the discounted values of the episodic task;
`episode_return` applies a finite horizon explicitly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from envs.chain import ChainParams, DelayedChain
from envs.gridworld import MOVES, NUM_MOVES, GridParams, GridWorld


@dataclasses.dataclass(frozen=True)
class TabularMDP:
    """P: tuple of A csr [S, S] (continue-and-move probabilities); R, terminate: [S, A];
    d0: [S] reset distribution."""

    P: tuple
    R: np.ndarray
    terminate: np.ndarray
    d0: np.ndarray

    @property
    def num_states(self) -> int:
        return self.R.shape[0]

    @property
    def num_actions(self) -> int:
        return self.R.shape[1]

    def policy_matrix(self, pi: np.ndarray) -> sp.csr_matrix:
        """P_pi[s, s'] = sum_a pi[s, a] P[a][s, s'] for pi [S, A]."""
        return sum(sp.diags(pi[:, a]) @ self.P[a] for a in range(self.num_actions)).tocsr()


def tabular_mdp(env, params) -> TabularMDP:
    """Exact MDP of a fixed-placement GridWorld level or a DelayedChain."""
    if isinstance(env, GridWorld):
        return _grid_mdp(env, params)
    if isinstance(env, DelayedChain):
        return _chain_mdp(env, params)
    raise ValueError(f"tabular_mdp supports GridWorld and DelayedChain, got {type(env).__name__}")


def _grid_mdp(env: GridWorld, params: GridParams) -> TabularMDP:
    if bool(np.asarray(params.random_placement)):
        raise ValueError(
            "tabular_mdp needs fixed object placement; with random placement the tabular "
            "index does not hold the object positions (the process is not Markov in it)"
        )
    H, W, N = env.max_height, env.max_width, env.max_objects
    C, B = env.num_cells, 2**N
    S = C * B
    walls = np.asarray(params.walls).reshape(-1)
    active = np.asarray(params.obj_active, bool)
    obj_cell = np.asarray(params.obj_pos[:, 0] * W + params.obj_pos[:, 1], np.int64)
    reward = np.asarray(params.obj_reward, np.float64)
    p_term = np.asarray(params.obj_p_terminate, np.float64)
    p_resp = np.asarray(params.obj_p_respawn, np.float64)
    bit = 2 ** np.arange(N, dtype=np.int64)

    state = np.arange(S, dtype=np.int64)
    cell, bits = state // B, state % B
    present = (bits[:, None] & bit[None, :]) > 0  # [S, N]
    absent = active[None, :] & ~present
    row, col = np.divmod(np.arange(C), W)

    Ps, R, T = [], np.zeros((S, env.num_actions)), np.zeros((S, env.num_actions))
    for a in range(env.num_actions):
        move, collect = a % NUM_MOVES, (a >= NUM_MOVES) or not env.collect_actions
        r2, c2 = row + MOVES[move][0], col + MOVES[move][1]
        inside = (r2 >= 0) & (r2 < H) & (c2 >= 0) & (c2 < W)
        target = np.clip(r2, 0, H - 1) * W + np.clip(c2, 0, W - 1)
        moved = np.where(inside & ~walls[target], target, np.arange(C))[cell]  # [S]
        hit = present & (obj_cell[None, :] == moved[:, None]) & active[None, :] & collect
        R[:, a] = hit @ reward + float(params.step_reward)
        T[:, a] = hit @ p_term
        after = bits & ~(hit @ bit)
        q = p_resp[None, :] * absent * (obj_cell[None, :] != moved[:, None])  # [S, N]
        # Enumerate independent respawns object by object: entries (from, bits, prob).
        src, nxt, prob = state, after, 1.0 - T[:, a]
        for i in range(N):
            qi = q[src, i]
            split = qi > 0
            src = np.concatenate([src, src[split]])
            nxt = np.concatenate([nxt, nxt[split] | bit[i]])
            prob = np.concatenate([prob * (1.0 - qi), prob[split] * qi[split]])
            keep = prob > 0
            src, nxt, prob = src[keep], nxt[keep], prob[keep]
        dest = moved[src] * B + nxt
        Ps.append(sp.csr_matrix((prob, (src, dest)), shape=(S, S)))

    start = ~walls & ~np.isin(np.arange(C), obj_cell[active])
    start_bits = int(np.sum(bit[active]))
    d0 = np.zeros(S)
    d0[np.flatnonzero(start) * B + start_bits] = 1.0 / start.sum()
    return TabularMDP(P=tuple(Ps), R=R, terminate=T, d0=d0)


def _chain_mdp(env: DelayedChain, params: ChainParams) -> TabularMDP:
    S, L = env.num_states, int(params.length)
    good = int(params.good_action)
    rows, cols, R, T = [[], []], [[], []], np.zeros((S, 2)), np.zeros((S, 2))
    for position in range(env.max_length + 1):
        for branch in (0, 1):
            s = position * 2 + branch
            for a in (0, 1):
                b2 = a if position == 0 else branch
                if position + 1 >= L:  # the last step (or beyond): pay and stop
                    R[s, a] = 1.0 if b2 == good else -1.0
                    T[s, a] = 1.0
                else:  # noisy intermediate rewards have zero mean
                    rows[a].append(s)
                    cols[a].append((position + 1) * 2 + b2)
    P = tuple(
        sp.csr_matrix((np.ones(len(rows[a])), (rows[a], cols[a])), shape=(S, S)) for a in (0, 1)
    )
    d0 = np.zeros(S)
    d0[0] = 1.0
    return TabularMDP(P=P, R=R, terminate=T, d0=d0)


# ------------------------------------------------------------------------------ planning
def _q_from_v(mdp: TabularMDP, V: np.ndarray, gamma: float) -> np.ndarray:
    """Q[s, a] = R[s, a] + gamma * sum_s' P[a][s, s'] V[s']."""
    return mdp.R + gamma * np.stack([P @ V for P in mdp.P], axis=1)


def policy_evaluation(mdp: TabularMDP, pi: np.ndarray, gamma: float) -> np.ndarray:
    """V^pi solving V = r_pi + gamma P_pi V exactly (sparse LU); pi is [S, A]."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    pi = np.asarray(pi, np.float64)
    r_pi = np.sum(pi * mdp.R, axis=1)
    A = sp.identity(mdp.num_states, format="csc") - gamma * mdp.policy_matrix(pi).tocsc()
    return spla.spsolve(A, r_pi)


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """One-hot [S, A] of argmax_a Q[s, a] (lowest index on ties)."""
    return np.eye(Q.shape[1])[np.argmax(Q, axis=1)]


def value_iteration(
    mdp: TabularMDP, gamma: float, sweeps: int = 50, max_iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal (V*, Q*) at discount gamma: `sweeps` value-iteration sweeps to warm-start,
    then policy iteration with exact evaluation until the greedy policy is stable."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    V = np.zeros(mdp.num_states)
    for _ in range(sweeps):
        V = _q_from_v(mdp, V, gamma).max(axis=1)
    action = np.argmax(_q_from_v(mdp, V, gamma), axis=1)
    states = np.arange(mdp.num_states)
    for _ in range(max_iterations):
        V = policy_evaluation(mdp, np.eye(mdp.num_actions)[action], gamma)
        Q = _q_from_v(mdp, V, gamma)
        best = np.argmax(Q, axis=1)
        # Switch only on a strict improvement, so ties cannot make the policy cycle.
        improve = Q[states, best] > Q[states, action] + 1e-10 * (1.0 + np.abs(V))
        if not improve.any():
            return V, Q
        action = np.where(improve, best, action)
    raise RuntimeError(f"policy iteration did not converge in {max_iterations} iterations")


def episode_return(mdp: TabularMDP, pi: np.ndarray, horizon: int) -> float:
    """Expected undiscounted return of one episode of at most `horizon` steps from d0:
    sum_{t<horizon} d_t . r_pi, with d_{t+1} = P_pi^T d_t (terminated mass leaves)."""
    pi = np.asarray(pi, np.float64)
    r_pi = np.sum(pi * mdp.R, axis=1)
    P_T = mdp.policy_matrix(pi).T.tocsr()
    d, total = mdp.d0.copy(), 0.0
    for _ in range(int(horizon)):
        total += d @ r_pi
        d = P_T @ d
    return float(total)


def optimal_episode_return(env, params, gamma: float, horizon: int | None = None) -> float:
    """Expected episode return of the greedy policy of Q* at `gamma` (horizon defaults to the
    level's max steps per episode): the "optimal return" bar for a tabular level."""
    mdp = tabular_mdp(env, params)
    _, Q = value_iteration(mdp, gamma)
    horizon = int(params.max_steps_in_episode) if horizon is None else horizon
    return episode_return(mdp, greedy_policy(Q), horizon)
