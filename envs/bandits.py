"""Bandit task distributions for RL² with exact posteriors.

One gymnax episode is one trial: a task (the arms' reward probabilities) is drawn in
`reset`, the agent pulls `params.max_steps_in_episode` arms, and the episode truncates.
The engine gives the agent its previous action and reward, so the observation only
carries the elapsed time `[t / T]` (plus the task itself when `reveal_task=True`,
which is how the oracle baselines in `lpg.bayes` see it).

Both environments keep the exact Bayesian posterior over the task in
`state.posterior` and return the posterior after each transition in `info["posterior"]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces
from gymnax.environments.misc import bernoulli_bandit


# --------------------------------------------------------------------------------------
# Independent arms with Beta priors.
# --------------------------------------------------------------------------------------


@struct.dataclass
class BetaBanditState(environment.EnvState):
    probs: jax.Array  # [K] each arm's success probability (the task)
    posterior: jax.Array  # [2K] Beta counts [alpha_1, beta_1, alpha_2, beta_2, ...]


@struct.dataclass
class BetaBanditParams(environment.EnvParams):
    max_steps_in_episode: int = 100  # T, pulls per trial


def posterior_mean(posterior: jax.Array) -> jax.Array:
    """Posterior mean success probability of each arm, `[..., 2K] -> [..., K]`."""
    counts = posterior.reshape(posterior.shape[:-1] + (-1, 2))
    return counts[..., 0] / counts.sum(-1)


class BetaBernoulliBandit(environment.Environment[BetaBanditState, BetaBanditParams]):
    """K-armed Bernoulli bandit, each arm's p ~ Beta(prior) independently per trial.

    Reward 1 with probability p_a of the pulled arm, else 0. The trial lasts
    `params.max_steps_in_episode` pulls (truncation; never terminated).

    Observation (float32): `[t / T]`, the fraction of the trial already elapsed
    (0 on the first pull); with `reveal_task=True` the K true success probabilities follow.

    Posterior: the Beta counts `[alpha_1, beta_1, ..., alpha_K, beta_K]`, alpha = prior[0]
    + successes, beta = prior[1] + failures of that arm (see `posterior_mean`).

    The prior is a constructor argument (not a param) because the uniform prior is
    sampled with `jax.random.uniform`: `jax.random.beta` costs seconds of compile time
    and runs in every `step` through the auto-reset.
    """

    def __init__(
        self,
        num_arms: int = 2,
        prior: tuple[float, float] = (1.0, 1.0),
        reveal_task: bool = False,
    ):
        super().__init__()
        self.num_arms = num_arms
        self.prior = (float(prior[0]), float(prior[1]))
        self.reveal_task = reveal_task

    @property
    def default_params(self) -> BetaBanditParams:
        return BetaBanditParams()

    @property
    def name(self) -> str:
        return f"BetaBernoulliBandit-{self.num_arms}"

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def prior_counts(self) -> jax.Array:
        return jnp.tile(jnp.asarray(self.prior, jnp.float32), self.num_arms)

    def get_obs(self, state: BetaBanditState, params: BetaBanditParams, key=None) -> jax.Array:
        t_frac = jnp.asarray(state.time / params.max_steps_in_episode, jnp.float32)[None]
        if self.reveal_task:
            return jnp.concatenate([t_frac, state.probs.astype(jnp.float32)])
        return t_frac

    def reset_env(self, key: jax.Array, params: BetaBanditParams):
        if self.prior == (1.0, 1.0):
            probs = jax.random.uniform(key, (self.num_arms,))
        else:
            probs = jax.random.beta(key, *self.prior, (self.num_arms,))
        state = BetaBanditState(
            time=jnp.zeros((), jnp.int32), probs=probs, posterior=self.prior_counts()
        )
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: BetaBanditState, action, params: BetaBanditParams):
        success = jax.random.bernoulli(key, state.probs[action])
        # Count index 2a holds alpha_a (successes), 2a + 1 holds beta_a (failures).
        posterior = state.posterior.at[2 * action + 1 - success.astype(jnp.int32)].add(1.0)
        state = state.replace(time=state.time + 1, posterior=posterior)
        reward = success.astype(jnp.float32)
        obs = self.get_obs(state, params)
        return obs, state, reward, jnp.array(False), {"posterior": posterior}

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.array(False)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms)

    def observation_space(self, params) -> spaces.Box:
        size = 1 + (self.num_arms if self.reveal_task else 0)
        return spaces.Box(0.0, 1.0, (size,), jnp.float32)


# --------------------------------------------------------------------------------------
# Two arms Bernoulli(p) and Bernoulli(1 - p) in unknown order.
# --------------------------------------------------------------------------------------


@struct.dataclass
class SwappedBanditState(bernoulli_bandit.EnvState):
    evidence: jax.Array  # () int, see `swapped_evidence`
    posterior: jax.Array  # [1] P(arm 0 is the good arm | history)


def swapped_evidence(action: jax.Array, reward: jax.Array) -> jax.Array:
    """+1 if a pull supports H0 = "arm 0 is good" (arm 0 paid, or arm 1 did not), else -1."""
    return jnp.where((action == 0) == (reward > 0.5), 1, -1)


def swapped_posterior(evidence: jax.Array, reward_prob: jax.Array) -> jax.Array:
    """Bayes rule from a fair prior: P(H0 | history) = sigmoid(e log(hi / lo)).

    Under H0 the arms pay with probabilities [hi, lo], under H1 with [lo, hi]
    (hi = max(p, 1 - p)); every pull multiplies the odds of H0 by (hi / lo)^(±1), so the
    history enters only through the evidence count e (sum of `swapped_evidence`).
    Computed from e rather than by repeated float32 Bayes updates, which drift.
    """
    hi = jnp.maximum(reward_prob, 1.0 - reward_prob)
    log_ratio = jnp.log(hi) - jnp.log1p(-hi)
    log_ratio = jnp.where(hi > 0.5, log_ratio, 0.0)  # p = 1/2: pulls carry no information
    return jax.nn.sigmoid(evidence * log_ratio).astype(jnp.float32)[None]


class SwappedBandit(bernoulli_bandit.BernoulliBandit):
    """Two arms paying Bernoulli(p) and Bernoulli(1 - p); which one is which is a fair coin.

    This *is* the task of gymnax's "BernoulliBandit-misc" (Wang et al. 2017's
    "independent" bandit with p = `params.reward_prob`): its `reset_env` draws the arm-0
    probability from {p, 1 - p} uniformly and its `step_env` pays Bernoulli(probs[a]);
    both are reused here. What differs:
      * the observation is `[t / T]` only (gymnax's also holds the last reward, the
        last action one-hot and a time code; the engine already feeds the agent the
        previous action and reward), so `normalize_time`, `min_lim`, `max_lim` and
        `t_max` in the params are unused;
      * with `reveal_task=True` the observation appends 1.0 if arm 0 is the good arm
        (the better-paying one, probability max(p, 1 - p)) else 0.0;
      * rewards are float32, and the exact posterior P(arm 0 is good) is kept as a
        1-vector in `state.posterior` / `info["posterior"]`.
    The trial lasts `params.max_steps_in_episode` pulls (truncation; never terminated).
    """

    def __init__(self, reveal_task: bool = False):
        super().__init__()
        self.reveal_task = reveal_task

    @property
    def name(self) -> str:
        return "SwappedBandit"

    def get_obs(self, state, params, key=None) -> jax.Array:
        t_frac = jnp.asarray(state.time / params.max_steps_in_episode, jnp.float32)[None]
        if self.reveal_task:
            arm0_good = (state.reward_probs[0] >= state.reward_probs[1]).astype(jnp.float32)
            return jnp.concatenate([t_frac, arm0_good[None]])
        return t_frac

    @staticmethod
    def _with_evidence(state, evidence: jax.Array, params) -> SwappedBanditState:
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        fields.pop("evidence", None)
        fields.pop("posterior", None)
        posterior = swapped_posterior(evidence, params.reward_prob)
        return SwappedBanditState(**fields, evidence=evidence, posterior=posterior)

    def reset_env(self, key: jax.Array, params):
        _, state = super().reset_env(key, params)
        state = self._with_evidence(state, jnp.zeros((), jnp.int32), params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: SwappedBanditState, action, params):
        _, next_state, reward, terminated, info = super().step_env(key, state, action, params)
        reward = reward.astype(jnp.float32)
        evidence = state.evidence + swapped_evidence(action, reward)
        next_state = self._with_evidence(next_state, evidence, params)
        obs = self.get_obs(next_state, params)
        return obs, next_state, reward, terminated, {**info, "posterior": next_state.posterior}

    def observation_space(self, params) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2 if self.reveal_task else 1,), jnp.float32)

    def state_space(self, params) -> Any:
        raise NotImplementedError


def make_beta_bandit(
    num_arms: int = 2,
    prior: tuple[float, float] = (1.0, 1.0),
    reveal_task: bool = False,
    **param_overrides,
):
    """Factory: `(BetaBernoulliBandit, params)`; `param_overrides` set `BetaBanditParams` fields."""
    env = BetaBernoulliBandit(num_arms=num_arms, prior=prior, reveal_task=reveal_task)
    return env, env.default_params.replace(**param_overrides)


def make_swapped_bandit(reveal_task: bool = False, **param_overrides):
    """Factory: `(SwappedBandit, params)`; e.g. `reward_prob=0.25, max_steps_in_episode=100`."""
    env = SwappedBandit(reveal_task=reveal_task)
    return env, env.default_params.replace(**param_overrides)


ENVIRONMENTS = {
    "bandit_beta": make_beta_bandit,
    "bandit_swapped": make_swapped_bandit,
}
