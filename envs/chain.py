"""Delayed chain MDPs of LPG (Oh et al. 2020, Appendix A) as a gymnax environment.

An episode lasts exactly `length` steps. The first action (0 or 1) picks a branch; the
remaining actions do nothing; the last step pays +1 if the branch is `good_action` and -1
otherwise, and terminates. With `noisy`, every step before the last pays a fair random ±1.
Observations: "tabular" -> int32 `position * 2 + branch` (position = steps taken, branch 0
before the choice), `env.num_states = 2 * (max_length + 1)`; "distraction" -> float32
{0,1}^22: one-hot of the branch (zeros before the choice) then 20 fresh random bits per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

CHAIN_KINDS = {
    # kind: (min length, max length, noisy, obs_mode)
    "short": (5, 30, False, "tabular"),
    "long": (5, 50, False, "tabular"),
    "short_noisy": (5, 30, True, "tabular"),
    "long_noisy": (5, 50, True, "tabular"),
    "distraction": (5, 30, False, "distraction"),
    # The short range's chains longer than a 20-step rollout, whose branch credit y must carry across
    # rollouts, as a training source of their own (in `short` they are 10 of 26 lengths). Tried as a
    # fifth source of the `cpu` preset, not adopted: results/lpg/README.md, section 4, session 5.
    "medium": (21, 30, False, "tabular"),
    # For evaluation only: longer than any chain a training source draws except the long kinds
    # (experiments.evaluate warns when a rule was meta-trained on those).
    "heldout": (31, 50, False, "tabular"),
}
NUM_NOISE_BITS = 20


@struct.dataclass(kw_only=True)
class ChainParams(environment.EnvParams):
    length: jax.Array
    good_action: jax.Array
    noisy: jax.Array
    max_steps_in_episode: jax.Array = 51


@struct.dataclass
class ChainState(environment.EnvState):
    position: jax.Array  # steps taken this episode
    branch: jax.Array  # 0/1, 0 before the choice
    time: jax.Array


class DelayedChain(environment.Environment[ChainState, ChainParams]):
    """Delayed chain with `max_length` as the static cap on `params.length`."""

    def __init__(self, max_length: int = 50, obs_mode: str = "tabular"):
        super().__init__()
        if obs_mode not in ("tabular", "distraction"):
            raise ValueError(f"unknown obs_mode {obs_mode!r}; allowed: 'tabular', 'distraction'")
        if int(max_length) < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self.obs_mode = obs_mode
        self.num_states = 2 * (self.max_length + 1)

    def __eq__(self, other):
        return isinstance(other, DelayedChain) and (self.max_length, self.obs_mode) == (
            other.max_length, other.obs_mode)

    def __hash__(self):
        return hash(("DelayedChain", self.max_length, self.obs_mode))

    def __repr__(self):
        return f"DelayedChain(max_length={self.max_length}, obs_mode={self.obs_mode!r})"

    @property
    def name(self) -> str:
        return "DelayedChain"

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def default_params(self) -> ChainParams:
        return make_chain(self, length=min(10, self.max_length), good_action=0)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        if self.obs_mode == "tabular":
            return spaces.Discrete(self.num_states)
        return spaces.Box(0.0, 1.0, (2 + NUM_NOISE_BITS,), jnp.float32)

    def step_env(self, key, state: ChainState, action, params: ChainParams):
        k_noise, k_obs = jax.random.split(key)
        action = jnp.asarray(action, jnp.int32)
        branch = jnp.where(state.position == 0, action, state.branch)
        position = state.position + 1
        terminated = position >= params.length
        final = jnp.where(branch == params.good_action, 1.0, -1.0)
        noise = jnp.where(jax.random.bernoulli(k_noise), 1.0, -1.0)
        reward = jnp.where(terminated, final, jnp.where(params.noisy, noise, 0.0))
        state = ChainState(position=position, branch=branch, time=state.time + 1)
        return self.get_obs(state, params, k_obs), state, reward.astype(jnp.float32), terminated, {}

    def reset_env(self, key, params: ChainParams):
        state = ChainState(position=jnp.int32(0), branch=jnp.int32(0), time=jnp.int32(0))
        return self.get_obs(state, params, key), state

    def get_obs(self, state: ChainState, params: ChainParams = None, key=None):
        if self.obs_mode == "tabular":
            return (state.position * 2 + state.branch).astype(jnp.int32)
        chosen = state.position > 0
        relevant = jax.nn.one_hot(state.branch, 2) * chosen
        noise = jax.random.bernoulli(key, 0.5, (NUM_NOISE_BITS,)).astype(jnp.float32)
        return jnp.concatenate([relevant, noise])

    def is_terminated(self, state, params):
        return state.position >= params.length


def make_chain(env: DelayedChain, length: int, good_action: int = 0, noisy: bool = False):
    """Validated ChainParams (host side)."""
    if not 1 <= int(length) <= env.max_length:
        raise ValueError(f"chain length {length} must be in [1, max_length={env.max_length}]")
    if int(good_action) not in (0, 1):
        raise ValueError(f"good_action must be 0 or 1, got {good_action}")
    return ChainParams(
        length=jnp.int32(length),
        good_action=jnp.int32(good_action),
        noisy=jnp.bool_(noisy),
        max_steps_in_episode=jnp.int32(env.max_length + 1),
    )


def sample_chain(key: jax.Array, kind: str, max_length: int = 50) -> ChainParams:
    """Per-lifetime ChainParams of `kind` (short, long, short_noisy, long_noisy, distraction, heldout):
    length uniform in the kind's range, good branch a fair coin. Jittable with static kind."""
    if kind not in CHAIN_KINDS:
        raise ValueError(f"unknown chain kind {kind!r}; allowed: {sorted(CHAIN_KINDS)}")
    low, high, noisy, _ = CHAIN_KINDS[kind]
    if high > max_length:
        raise ValueError(f"chain kind {kind!r} needs max_length >= {high}, got {max_length}")
    k_len, k_good = jax.random.split(key)
    return ChainParams(
        length=jax.random.randint(k_len, (), low, high + 1).astype(jnp.int32),
        good_action=jax.random.randint(k_good, (), 0, 2).astype(jnp.int32),
        noisy=jnp.bool_(noisy),
        max_steps_in_episode=jnp.int32(max_length + 1),
    )
