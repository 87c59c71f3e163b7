"""envs.check: each common mistake in a user environment gets its own one-line message.

`Walk` is a small correct environment; each broken variant overrides one method with
one classic mistake, and the test asserts the message that names it.
"""

import re
import warnings

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import envs
from envs.check import CheckReport, EnvCheckError, EnvCheckWarning

SIZE = 4
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], np.int32)  # up, right, down, left
CORNERS = np.array([[0, 0], [0, SIZE - 1], [SIZE - 1, 0], [SIZE - 1, SIZE - 1]], np.int32)


@struct.dataclass
class WalkState(environment.EnvState):
    # Declared like gymnax's own envs: `time` last, but the inherited `time` stays first,
    # so the fields are (time, pos, goal).
    pos: jax.Array  # [2] int32 (row, col)
    goal: jax.Array  # () int32, index into CORNERS
    time: jax.Array


@struct.dataclass
class WalkParams(environment.EnvParams):
    max_steps_in_episode: int = 12


class Walk(environment.Environment):
    """4x4 grid: walk to the goal corner (+1, terminates). Observation: one-hot of the cell,
    then one-hot of the goal, float32 [SIZE * SIZE + 4]."""

    @property
    def default_params(self):
        return WalkParams()

    @property
    def num_actions(self):
        return self.action_space().n

    def action_space(self, params=None):
        return spaces.Discrete(len(MOVES))

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (SIZE * SIZE + 4,), jnp.float32)

    def reset_env(self, key, params):
        k_pos, k_goal = jax.random.split(key)
        state = WalkState(
            time=jnp.int32(0),
            pos=jax.random.randint(k_pos, (2,), 1, SIZE - 1),  # an inner cell
            goal=jax.random.randint(k_goal, (), 0, len(CORNERS)),
        )
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params):
        pos = jnp.clip(state.pos + jnp.asarray(MOVES)[action], 0, SIZE - 1)
        at_goal = jnp.all(pos == jnp.asarray(CORNERS)[state.goal])
        state = self.next_state(state, pos)
        reward = self.reward(at_goal.astype(jnp.float32), state)
        return self.get_obs(state, params), state, reward, at_goal, {}

    def next_state(self, state, pos):
        return state.replace(time=state.time + 1, pos=pos)

    def reward(self, reward, state):
        return reward

    def get_obs(self, state, params=None, key=None):
        cell = jax.nn.one_hot(jnp.sum(state.pos * jnp.array([SIZE, 1])), SIZE * SIZE)
        return jnp.concatenate([cell, jax.nn.one_hot(state.goal, len(CORNERS))])


def check_error(env, *, match: str, **kw) -> str:
    """The EnvCheckError message of `envs.check(env)`, asserted to be one line matching."""
    with pytest.raises(EnvCheckError) as info:
        envs.check(env, **kw)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{type(env).__name__}: ")
    assert re.search(match, message), message
    return message


def test_correct_env_passes_without_warnings():
    report = envs.check(Walk())
    assert isinstance(report, CheckReport)
    assert report.warnings == () and report.env == "Walk" and report.num_steps == 8 * 12


# ---------------------------------------------------------------- 1. time and time limit
class FrozenClock(Walk):
    def next_state(self, state, pos):
        return state.replace(pos=pos)  # forgot time=state.time + 1


class NeverTruncated(Walk):
    def is_truncated(self, state, params):
        return jnp.bool_(False)


class StepWithoutTimeLimit(Walk):
    """A custom auto-resetting `step` (e.g. for speed) that resets on termination only."""

    def step(self, key, state, action, params=None):
        params = self.default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        obs, state_t, reward, terminated, info = self.step_env(k_step, state, action, params)
        obs_re, state_re = self.reset_env(k_reset, params)
        state = jax.tree.map(lambda r, s: jnp.where(terminated, r, s), state_re, state_t)
        obs = jnp.where(terminated, obs_re, obs)
        return obs, state, reward, terminated, jnp.bool_(False), info


@pytest.mark.parametrize("env, match", [
    (FrozenClock(), r"state\.time stays at 0 through step_env; expected \+1 per step"),
    (NeverTruncated(), r"an episode ran 12 steps without ending .* max_steps_in_episode = 12"),
    (StepWithoutTimeLimit(), r"env\.step did not end the episode .* max_steps_in_episode = 12"),
])
def test_time_that_does_not_advance_or_a_limit_that_never_fires(env, match):
    check_error(env, match=match)


# ------------------------------------------------------ 2. positional state construction
class PositionalState(Walk):
    def next_state(self, state, pos):
        return WalkState(pos, state.goal, state.time + 1)  # fields are (time, pos, goal)


class PositionalStateIndexed(PositionalState):
    def get_obs(self, state, params=None, key=None):
        cell = jax.nn.one_hot(state.pos[0] * SIZE + state.pos[1], SIZE * SIZE)  # pos is ()
        return jnp.concatenate([cell, jax.nn.one_hot(state.goal, len(CORNERS))])


class PositionalSameShapes(Walk):
    def next_state(self, state, pos):
        return WalkState(state.goal, pos, state.time + 1)  # time <- goal, goal <- time + 1


def test_positional_state_is_caught_by_field_shapes():
    message = check_error(
        PositionalState(),
        match=r"state fields change from reset_env to step_env \(state\.time int32\[\] -> "
              r"int32\[2\], state\.pos int32\[2\] -> int32\[\]\)")
    assert "build it with keywords, WalkState(time=..., pos=..., goal=...)" in message


def test_positional_state_that_breaks_step_env_is_reported_with_the_field_order():
    message = check_error(PositionalStateIndexed(),
                          match=r"step_env fails while tracing \(IndexError: Too many indices")
    assert ("if step_env builds the state positionally, note that WalkState's fields are "
            "(time, pos, goal)") in message


def test_positional_state_with_equal_shapes_is_caught_by_time():
    message = check_error(PositionalSameShapes(),
                          match=r"state\.time went \d+ -> \d+ in one step_env")
    assert "WalkState's fields are (time, pos, goal), the inherited `time` first" in message


# ----------------------------------------------------------------------- 3. observations
class SpaceWithoutGoal(Walk):
    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (SIZE * SIZE,), jnp.float32)  # forgot the goal part


class PlusMinusOne(Walk):
    def get_obs(self, state, params=None, key=None):
        return 2.0 * super().get_obs(state) - 1.0  # ±1 coding in a [0, 1] Box


class TimeFeature(Walk):
    """Appends a time feature time / divisor, in a Box of `dtype`."""

    def __init__(self, divisor: float, dtype=jnp.float32):
        super().__init__()
        self.divisor, self.dtype = divisor, dtype

    def observation_space(self, params=None):
        return spaces.Box(0, 1, (SIZE * SIZE + 5,), self.dtype)

    def get_obs(self, state, params=None, key=None):
        return jnp.concatenate([super().get_obs(state), (state.time / self.divisor)[None]])


class IntBox(Walk):
    def observation_space(self, params=None):
        return spaces.Box(0, 1, (SIZE * SIZE + 4,), jnp.int32)


def test_observation_shape_must_match_the_space():
    check_error(SpaceWithoutGoal(), match=r"reset_env returns observations of shape \(20,\) "
                r"but observation_space\(params\) is Box\(.*shape=\(16,\)")


@pytest.mark.parametrize("env, match", [
    (PlusMinusOne(), r"reset_env returns observation value -1 at index \(0,\), below low 0"),
    # Off by one: time reaches max_steps_in_episode = 12 > 11 on the last step.
    (TimeFeature(divisor=11.0), r"step_env returns observation value 1\.09091 at index "
                                r"\(20,\), above high 1"),
])
def test_observations_must_stay_inside_the_bounds(env, match):
    check_error(env, match=match)


def test_observation_dtype_kind():
    with pytest.warns(EnvCheckWarning, match=r"observations are float32 but "
                      r"observation_space\(params\) is Box\(.*dtype=int32\); the values fit"):
        envs.check(IntBox())
    check_error(TimeFeature(divisor=12.0, dtype=jnp.int32),
                match=r"observations are float32 with fractional values but "
                      r"observation_space\(params\) is Box\(.*dtype=int32\)")


# -------------------------------------------------------------------------------- 4. actions
class ClampedMoves(Walk):
    def action_space(self, params=None):
        return spaces.Discrete(5)  # one more action than rows in MOVES


class BoxActions(Walk):
    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,))


def test_actions_past_the_end_of_a_table_are_reported():
    message = ("actions 3 and 4 gave identical next states, observations, rewards and "
               "terminations from all 96 states visited; likely step_env indexes a table "
               "shorter than action_space(params).n = 5")
    with pytest.warns(EnvCheckWarning, match=re.escape(message)):
        report = envs.check(ClampedMoves())
    assert len(report.warnings) == 1
    check_error(ClampedMoves(), strict=True, match=re.escape(message))


class MisreportedNumActions(Walk):
    @property
    def num_actions(self):
        return 3


def test_actions_must_be_discrete_and_agree_with_num_actions():
    check_error(BoxActions(), match=r"action_space\(params\) is Box\(.*\); expected "
                r"spaces\.Discrete\(n\)")
    check_error(MisreportedNumActions(), match=r"env\.num_actions is 3 but "
                r"action_space\(params\) is Discrete\(4\)")


# ------------------------------------------------------------------------ 5. non-finite
class AverageReward(Walk):
    def reward(self, reward, state):
        # A step cost, averaged over the steps taken; meant state.time, not state.time - 1.
        return (reward - 0.01) / (state.time - 1)


class LogTime(TimeFeature):
    def get_obs(self, state, params=None, key=None):
        return super().get_obs(state).at[-1].set(jnp.log(state.time))


def test_non_finite_rewards_and_observations():
    check_error(AverageReward(), match=r"step_env returns reward -inf \(step 0 of stream 0\); "
                                       r"expected finite rewards")
    check_error(LogTime(divisor=1.0), match=r"reset_env returns observations with NaN or inf")


# -------------------------------------------------------------------------------- 6. purity
class NumpyGoal(Walk):
    def reset_env(self, key, params):
        obs, state = super().reset_env(key, params)
        state = state.replace(goal=jnp.int32(np.random.randint(1_000_000)))
        return self.get_obs(state), state


class AnnealedStepCost(Walk):
    calls = 0

    def reward(self, reward, state):
        AnnealedStepCost.calls += 1  # a global counter: each trace freezes another value
        return reward - 0.1 / AnnealedStepCost.calls


@pytest.mark.parametrize("env, where",
                         [(NumpyGoal(), "reset_env"), (AnnealedStepCost(), "step_env")])
def test_reset_and_step_must_be_pure(env, where):
    check_error(env, match=rf"{where} is not a function of its inputs: two traces gave "
                           "different programs")


# ------------------------------------------------------------------ correct environments
@pytest.mark.parametrize("name", ["chain_short", "tabular_dense"])
def test_project_envs_pass_without_warnings(name):
    env, params = envs.make(name)
    assert envs.check(env, params).warnings == ()


def test_gymnax_envs_pass():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvCheckWarning)
        found = {name: envs.check(*gymnax.make(name)).warnings
                 for name in ("Catch-bsuite", "DeepSea-bsuite", "CartPole-v1")}
    assert found["DeepSea-bsuite"] == found["CartPole-v1"] == ()
    # Catch's observations are float32 in an int32 Box: worth a warning, not an error.
    (catch,) = found["Catch-bsuite"]
    assert "observations are float32 but observation_space(params) is Box(" in catch


@pytest.mark.slow
@pytest.mark.parametrize("name", envs.names() + ["Breakout-MinAtar", "SpaceInvaders-MinAtar"])
def test_every_project_env_and_minatar_passes_without_warnings(name):
    assert envs.check(*envs.make(name)).warnings == ()


def test_the_trainers_check_a_user_environment_before_compiling(monkeypatch, capsys):
    """`run_lifetimes` (the Python API) and the `train` command (a registered name) refuse the
    positional-state bug in one line, before anything is compiled; project envs are not re-checked."""
    from experiments import train
    from lpg import evaluate
    from lpg.a2c import A2CConfig, make_a2c

    def no_training(*args, **kwargs):
        raise AssertionError("built a training program for a broken environment")

    env = PositionalState()
    learner = make_a2c(env, env.default_params, A2CConfig(num_envs=2, rollout_len=4))
    monkeypatch.setattr(evaluate, "make_lifetimes", no_training)
    monkeypatch.setattr(train, "make_train", no_training)
    lifetime = evaluate.LifetimeConfig(num_updates=2, num_envs=2, rollout_len=4, num_seeds=1)
    with pytest.raises(EnvCheckError, match="keywords"):
        evaluate.run_lifetimes(env, env.default_params, learner, lifetime, jax.random.PRNGKey(0))
    from envs import registry

    monkeypatch.setitem(registry._REGISTRY, "broken_walk", lambda: (PositionalState(), WalkParams()))  # for this test only
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--env", "broken_walk", "--updates", "2", "--no-resume", "--run-dir", "/tmp/lpg-broken-walk"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "PositionalState" in err and "keywords" in err
    from envs.check import check_user_env

    assert check_user_env(*envs.make("chain_short")) is None  # tested project env: skipped
