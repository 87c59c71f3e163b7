"""Checks a gymnax environment before training on it: `check(env, params) -> CheckReport`.

A user environment (a `gymnax.environments.environment.Environment` whose state inherits
gymnax's `EnvState`, so `time` is its first field) goes through the checks below. The first
error raises `EnvCheckError` (a `ValueError`) with a one-line message: the env class, what is
wrong, what is expected. Warnings come back in `CheckReport.warnings` and are emitted as
`EnvCheckWarning`s; `strict=True` raises them as errors instead.

What is checked, in order (E: error, W: warning):
- Spaces (E): `action_space(params)` is `Discrete(n)`, n >= 1 (our agents pick one of n
  integer actions), equal to `env.num_actions` where the env defines it;
  `observation_space(params)` is `Box` or `Discrete` (the agents take one array).
  (W) `params.max_steps_in_episode` left at gymnax's `EnvParams` default of 1.
- Traced shapes, before compiling anything (E): every state field keeps its shape and dtype
  from `reset_env` to `step_env` (a positional `State(pos, state.time + 1)` with fields
  `(time, pos)` swaps them: the message names the fields and asks for keywords);
  `state.time` is a scalar; observations have the space's shape (and an integer dtype for
  a `Discrete` space: tabular agents index tables with them); reward and termination are
  scalars; `is_truncated` works on the state.
- Purity (E): `reset_env` and `step_env`, traced three times each, give the same program.
  Python-side randomness (numpy, `random`), globals and counters are frozen into a jitted
  program as constants, so running it twice shows nothing; tracing again shows them.
  (Host callbacks that draw at run time are not caught.)
- Time (E, where the state has `time`): `state.time` is 0 after `reset_env` and grows by
  exactly 1 per `step_env` (gymnax's time limit `is_truncated` reads it).
- Time limit (E, where params has `max_steps_in_episode`): under random actions every
  episode ends (terminated, or `is_truncated`) within `max_steps_in_episode` steps; and
  where the env overrides `step` (its own auto-reset) or `is_truncated`, `env.step` ends
  the episode on the step that takes `state.time` to `max_steps_in_episode` (tried once, so
  this holds even when the limit is longer than the rollout).
- Rewards (E): finite.
- Observations, at reset and after every step (E): finite; inside the Box's low/high, or
  in [0, n) for `Discrete(n)`; whole numbers where the Box's dtype is int or bool.
  (W) a dtype kind above the Box's (bool < int < float), e.g. float32 observations in an
  int32 Box (gymnax's Catch): it runs, but the space misdescribes the data. Bit widths
  (float32 vs float64) do not matter.
- Actions (W): two actions with identical outcomes (next state, observation, reward,
  termination, same key) from every state visited. The usual cause: `step_env` indexes a
  table shorter than `action_space(params).n`, and JAX clamps the index, so the extra
  actions silently repeat the last row. A warning, not an error: some envs have actions
  that coincide on purpose, or differ only in states the random walk did not reach (e.g.
  `tabular_sparse` with `collect_actions=True`: "stay" and "stay and collect", 0 and 9).

How: `num_envs` streams of uniformly random actions for `steps` steps each (default: the
time limit, at most 1000), with gymnax's auto-reset; at every step `step_env` runs for all
n actions from the current state with the same key (one vmap) and the stream follows the
random one. One jitted program, compiled once; on CPU with XLA's backend optimisations off
for small envs (compiling dominates their check), on for big ones (which would run too
slowly). Takes the params of one level, not a vmapped batch.

Cost, measured on this project's 2 CPU cores while they were shared (load average ~4.5),
compile included, for a check in a fresh process (in one that has compiled before):
`chain_short` 1.0-1.1 s (0.8-0.9 s), `Catch-bsuite` 2.3-2.4 s (1.7-1.9 s; 8 streams x 1000
steps x 3 actions). Nearly all of it is XLA compilation. Big envs cost more: MinAtar
Breakout 2.3 s, Seaquest ~30 s.
"""

from __future__ import annotations

import dataclasses
import time as clock
import warnings
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment, spaces

MAX_DEFAULT_STEPS = 1000  # default rollout length cap
_FAST_COMPILE = {"xla_backend_optimization_level": 0}  # about halves CPU compile time here
# Envs whose reset_env + step_env trace to more equations keep XLA's optimisations (MinAtar
# Seaquest, 1859: compiles in 4 s instead of 10 but then runs 13x slower, 70 s instead of 5).
FAST_COMPILE_MAX_EQUATIONS = 1000
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2}  # bool < int < float


class EnvCheckError(ValueError):
    """An environment breaks the contract our trainers rely on (one-line message)."""


class EnvCheckWarning(UserWarning):
    """Something in an environment that is probably, not certainly, a mistake."""


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What `check` ran and the warnings it found (errors raise instead)."""

    env: str  # the env's class name
    warnings: tuple[str, ...]
    num_steps: int  # num_envs x steps; every action is tried at each of them
    seconds: float  # wall time of the whole check, compile included


class _Traced(NamedTuple):
    """What tracing `reset_env` shows (shapes from `jax.eval_shape`)."""

    obs: jax.ShapeDtypeStruct
    state: Any  # pytree of ShapeDtypeStruct
    fields: tuple[str, ...] | None  # the state's dataclass fields, in order
    has_time: bool


class _ObsStats(NamedTuple):
    """Observations seen, reduced elementwise: low/high [*obs_shape] over finite values
    (int32 for bool and int observations, so the bounds compare exactly)."""

    low: jax.Array
    high: jax.Array
    nonfinite: jax.Array  # () bool: a NaN or inf
    fractional: jax.Array  # () bool: a finite value that is not a whole number


class _Steps(NamedTuple):
    """Per step and stream; leaves [T, B]."""

    reset_time: jax.Array  # state.time right after a reset, 0 on other steps
    time_tm1: jax.Array  # state.time before step_env (0 without `time`)
    time_t: jax.Array  # state.time after step_env
    episode_len: jax.Array  # steps of the current episode, this one included
    done: jax.Array  # terminated or truncated
    reward: jax.Array  # float32


class _Summary(NamedTuple):
    reset_obs: _ObsStats  # over every reset_env observation of the rollout
    step_obs: _ObsStats  # over every step_env observation of the rollout
    steps: _Steps
    same_outcome: jax.Array  # [n, n] bool: actions a and b agreed from every state visited
    limit_done: jax.Array  # () bool: env.step ended the episode at the time limit


def check(
    env: environment.Environment,
    params: Any = None,
    *,
    key: jax.Array | None = None,
    steps: int | None = None,
    num_envs: int = 8,
    strict: bool = False,
) -> CheckReport:
    """Checks `env` under `params` (default `env.default_params`); see the module docstring.

    steps: random steps per stream (default `max_steps_in_episode`, at most 1000; 100 without
    a time limit); num_envs: parallel streams; strict: raise warnings as errors.
    Raises `EnvCheckError` at the first error; returns a `CheckReport` with the warnings.
    """
    start = clock.perf_counter()
    name = type(env).__name__
    params = env.default_params if params is None else params
    key = jax.random.PRNGKey(0) if key is None else key
    found: list[str] = []

    def fail(message: str):
        raise EnvCheckError(f"{name}: {message}")

    def warn(message: str):
        if strict:
            fail(message)
        found.append(f"{name}: {message}")

    num_actions, obs_space = _check_spaces(env, params, fail)
    max_steps = _max_steps(params, fail, warn)
    k_trace, k_run = jax.random.split(key)
    traced = _check_traced_shapes(env, params, k_trace, obs_space, max_steps, fail)
    size = _check_purity(env, params, k_trace, traced, fail)

    if steps is None:
        steps = min(max_steps, MAX_DEFAULT_STEPS) if max_steps is not None else 100
    if steps < 1 or num_envs < 1:
        raise ValueError(f"steps and num_envs must be >= 1, got {steps} and {num_envs}")
    run = _make_run(env, num_actions, traced, max_steps, steps)
    # Compiling dominates the check of a small env; a big one runs too slowly unoptimised.
    fast = jax.default_backend() == "cpu" and size <= FAST_COMPILE_MAX_EQUATIONS
    options = _FAST_COMPILE if fast else None
    summary = jax.device_get(
        jax.jit(run, compiler_options=options)(jax.random.split(k_run, num_envs), params))

    _check_time(summary, traced, fail)
    _check_episodes(summary, max_steps, fail)
    _check_rewards(summary, fail)
    _check_observations(summary, obs_space, traced.obs.dtype, fail, warn)
    _check_actions(summary, num_actions, num_envs * steps, warn)

    for message in found:
        warnings.warn(message, EnvCheckWarning, stacklevel=2)
    _PASSED.add(env)
    return CheckReport(name, tuple(found), num_envs * steps, clock.perf_counter() - start)


_PASSED: "weakref.WeakSet" = weakref.WeakSet()  # environments `check` has passed in this process
_TRUSTED_MODULES = ("envs.", "gymnax.")  # this project's and gymnax's own environments (tested)


def check_user_env(env: environment.Environment, params: Any = None) -> CheckReport | None:
    """What the trainers run before compiling: `check` for an environment that is neither this
    project's nor gymnax's, once per environment object (None when skipped)."""
    if type(env).__module__.startswith(_TRUSTED_MODULES) or env in _PASSED:
        return None
    return check(env, params)


# ---------------------------------------------------------------------------- before tracing
def _check_spaces(env, params, fail) -> tuple[int, Any]:
    action_space = env.action_space(params)
    if not isinstance(action_space, spaces.Discrete):
        fail(f"action_space(params) is {action_space!r}; expected spaces.Discrete(n) "
             "(our agents pick one of n integer actions)")
    n = int(action_space.n)
    if n < 1:
        fail(f"action_space(params) is Discrete({n}); expected at least one action")
    try:
        declared = env.num_actions
    except NotImplementedError:
        declared = None
    if declared is not None and int(declared) != n:
        fail(f"env.num_actions is {declared} but action_space(params) is Discrete({n}); "
             "expected them equal (agents size their policy from either)")
    obs_space = env.observation_space(params)
    if not isinstance(obs_space, (spaces.Box, spaces.Discrete)):
        fail(f"observation_space(params) is {obs_space!r}; expected spaces.Box or "
             "spaces.Discrete (our agents take one array)")
    return n, obs_space


def _max_steps(params, fail, warn) -> int | None:
    if not hasattr(params, "max_steps_in_episode"):
        return None
    value = np.asarray(params.max_steps_in_episode)
    if value.ndim != 0:
        fail(f"params.max_steps_in_episode has shape {value.shape}; expected the params of "
             "one level (check one level, not a vmapped batch)")
    if int(value) < 1:
        fail(f"params.max_steps_in_episode is {int(value)}; expected at least 1")
    declared = any("max_steps_in_episode" in vars(c).get("__annotations__", {})
                   for c in type(params).__mro__ if c is not environment.EnvParams)
    if int(value) == 1 and not declared:
        warn("params.max_steps_in_episode is 1, gymnax's EnvParams default, so every episode "
             "is cut after one step; expected your EnvParams to set the episode length")
    return int(value)


# ------------------------------------------------------------------------------- by tracing
def _aval(x) -> str:
    return f"{jnp.dtype(x.dtype).name}{list(x.shape)}"


def _path_name(prefix: str, path) -> str:
    parts = [prefix]
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(f".{k.name}")
        elif isinstance(k, jax.tree_util.DictKey):
            parts.append(f"[{k.key!r}]")
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(f"[{k.idx}]")
        else:
            parts.append(str(k))
    return "".join(parts)


def _named_leaves(prefix: str, tree) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(_path_name(prefix, path), leaf) for path, leaf in leaves]


def _keyword_hint(traced: _Traced, lead: str = "") -> str:
    if traced.fields is None or len(traced.fields) < 2:
        return ""
    state_type = type(traced.state).__name__
    keywords = ", ".join(f"{f}=..." for f in traced.fields)
    return (f"; {lead}{state_type}'s fields are ({', '.join(traced.fields)}), the inherited "
            f"`time` first: build it with keywords, {state_type}({keywords})")


def _trace(fn, args, name: str, on: str, hint: str, fail):
    """jax.eval_shape(fn, *args); a failure becomes one line (with the cause chained)."""
    try:
        return jax.eval_shape(fn, *args)
    except Exception as e:  # noqa: BLE001 - any failure of user code while tracing
        first_line = (str(e).strip().splitlines() or [""])[0]
        try:
            fail(f"{name} fails while tracing ({type(e).__name__}: {first_line}); expected it "
                 f"to run on {on}{hint}")
        except EnvCheckError as error:
            raise error from e


def _check_traced_shapes(env, params, key, obs_space, max_steps, fail) -> _Traced:
    """Shapes and dtypes by tracing only (`jax.eval_shape`: nothing is compiled)."""
    obs, state = _trace(env.reset_env, (key, params), "reset_env", "a key and params", "", fail)
    fields = (tuple(f.name for f in dataclasses.fields(state))
              if dataclasses.is_dataclass(state) else None)
    traced = _Traced(obs, state, fields, hasattr(state, "time"))
    action = jax.ShapeDtypeStruct((), env.action_space(params).dtype)
    hint = _keyword_hint(traced, "if step_env builds the state positionally, note that ")
    obs_t, state_t, reward, terminated, _ = _trace(
        env.step_env, (key, state, action, params), "step_env", "reset_env's state", hint, fail)

    before, after = _named_leaves("state", state), _named_leaves("state", state_t)
    if jax.tree.structure(state) != jax.tree.structure(state_t):
        fail(f"step_env returns a state with leaves {[n for n, _ in after]} from one with "
             f"{[n for n, _ in before]}; expected the state's structure to stay the same")
    changed = [f"{n} {_aval(a)} -> {_aval(b)}" for (n, a), (_, b) in zip(before, after)
               if a.shape != b.shape or a.dtype != b.dtype]
    if changed:
        fail(f"state fields change from reset_env to step_env ({', '.join(changed)}); "
             f"expected each field to keep its shape and dtype{_keyword_hint(traced)}")
    if traced.has_time and np.shape(state.time) != ():
        fail(f"state.time is {_aval(state.time)}; expected a scalar step counter"
             f"{_keyword_hint(traced)}")

    for where, o in (("reset_env", obs), ("step_env", obs_t)):
        if not isinstance(o, jax.ShapeDtypeStruct):
            fail(f"{where} returns an observation of type {type(o).__name__}; expected one "
                 f"array matching observation_space(params) = {obs_space!r}")
        if tuple(o.shape) != tuple(obs_space.shape):
            fail(f"{where} returns observations of shape {tuple(o.shape)} but "
                 f"observation_space(params) is {obs_space!r}; expected the space's shape")
    if isinstance(obs_space, spaces.Discrete) and obs.dtype.kind not in "iu":
        fail(f"observations are {obs.dtype.name} but observation_space(params) is "
             f"{obs_space!r}; expected an integer dtype (tabular agents index with them)")
    for what, x in (("reward", reward), ("terminated", terminated)):
        if np.shape(x) != ():
            fail(f"step_env returns {what} of shape {np.shape(x)}; expected a scalar "
                 "(one stream; batch with jax.vmap)")

    if max_steps is not None:
        try:
            jax.eval_shape(env.is_truncated, state_t, params)
        except (AttributeError, NotImplementedError) as e:
            fail(f"is_truncated(state, params) fails ({type(e).__name__}: {e}); expected "
                 "the state to inherit gymnax's EnvState (`time`) or is_truncated overridden")
    return traced


def _comparable(x):
    """Typed PRNG keys as their raw bits, anything else as it is."""
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _same_values(x, y) -> bool:
    x, y = np.asarray(_comparable(x)), np.asarray(_comparable(y))
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    same = x == y
    if x.dtype.kind in "fc":
        same |= np.isnan(x) & np.isnan(y)
    return bool(np.all(same))


def _check_purity(env, params, key, traced: _Traced, fail) -> int:
    """reset_env and step_env traced three times each: programs and constants must agree.

    Returns the number of equations in the two programs (nested ones included).
    """
    action = jax.ShapeDtypeStruct((), env.action_space(params).dtype)
    size = 0
    for name, fn, args in (
        ("reset_env", env.reset_env, (key, params)),
        ("step_env", env.step_env, (key, traced.state, action, params)),
    ):
        # A fresh wrapper per trace: jax caches traces by function object.
        first, *others = [jax.make_jaxpr(lambda *a, fn=fn: fn(*a))(*args) for _ in range(3)]
        for other in others:
            if (str(other.jaxpr) != str(first.jaxpr) or len(other.consts) != len(first.consts)
                    or not all(map(_same_values, other.consts, first.consts))):
                fail(f"{name} is not a function of its inputs: two traces gave different "
                     "programs; expected randomness drawn only from `key` (no numpy or "
                     "Python random, globals or counters)")
        size += _num_equations(first.jaxpr)
    return size


def _num_equations(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    count += _num_equations(sub)
    return count


# --------------------------------------------------------------------------- the jitted run
def _obs_stats(obs) -> _ObsStats:
    x = jnp.asarray(obs)
    if x.dtype.kind != "f":
        x = x.astype(jnp.int32)  # bool and int: exact bounds, nothing non-finite
        return _ObsStats(x, x, jnp.bool_(False), jnp.bool_(False))
    finite = jnp.isfinite(x)
    return _ObsStats(
        low=jnp.where(finite, x, jnp.inf).astype(x.dtype),
        high=jnp.where(finite, x, -jnp.inf).astype(x.dtype),
        nonfinite=~jnp.all(finite),
        fractional=jnp.any(finite & (x != jnp.round(x))),
    )


def _reduce(stats: _ObsStats, axis: int) -> _ObsStats:
    """The union of stats stacked along `axis`."""
    return _ObsStats(stats.low.min(axis), stats.high.max(axis), stats.nonfinite.any(axis),
                     stats.fractional.any(axis))


def _merge(a: _ObsStats, b: _ObsStats) -> _ObsStats:
    """The union of two stats."""
    return _ObsStats(jnp.minimum(a.low, b.low), jnp.maximum(a.high, b.high),
                     a.nonfinite | b.nonfinite, a.fractional | b.fractional)


def _as_bits(x) -> jax.Array:
    """The raw bits of `x` as uint32, flattened: equal bits <=> identical values."""
    x = jnp.asarray(_comparable(x))
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    elif x.dtype.itemsize >= 4:  # 64-bit types become pairs of words
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    else:
        unsigned = jnp.uint8 if x.dtype.itemsize == 1 else jnp.uint16
        bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    return bits.reshape(-1)


def _fingerprint(tree) -> jax.Array:
    """[2] uint32: two sums (mod 2**32) of the tree's bits with odd pseudo-random weights.

    A difference in one element always changes both (odd weights are invertible mod 2**32);
    differences in several cancel out only by a coincidence of about 2**-64.
    """
    bits = jnp.concatenate([_as_bits(x) for x in jax.tree.leaves(tree)])
    i = np.arange(bits.size, dtype=np.uint64)
    weights = np.stack([(i * 0x9E3779B1 + 0x7F4A7C15) % 2**32,
                        ((i ^ 0x5BD1E995) * 0x85EBCA6B) % 2**32]) | 1
    return jnp.sum(bits[None] * jnp.asarray(weights.astype(np.uint32)), axis=1)


def _make_run(env, num_actions: int, traced: _Traced, max_steps: int | None, steps: int):
    """run(keys [B], params) -> _Summary.

    Each stream takes `steps` uniformly random actions, resetting (gymnax-style) at the start
    and after every episode. Every step runs step_env for all n actions from the current
    state with the same key (one vmap, so one copy of step_env to compile) and follows the
    random one; fingerprints of the n outcomes track which actions have agreed so far.
    reset_env runs once per step, for the (auto-)reset: one copy of it to compile, too.
    """
    limit = max_steps is not None
    has_time = traced.has_time

    def time_of(state):
        return jnp.asarray(state.time) if has_time else jnp.int32(0)

    def run(keys, params):
        action_dtype = env.action_space(params).dtype
        all_actions = jnp.arange(num_actions, dtype=action_dtype)
        empty = _empty_stats(traced.obs)

        def env_step(carry, step_keys):
            state, first, episode_len, reset_stats, step_stats, same = carry
            k_reset, k_step, k_action = step_keys
            obs_reset, state_reset = env.reset_env(k_reset, params)
            state = jax.tree.map(lambda r, s: jax.lax.select(first, r, s), state_reset, state)
            reset_stats = _merge(reset_stats, jax.tree.map(
                lambda x, e: jnp.where(first, x, e), _obs_stats(obs_reset), empty))
            # A uniform action from the key's bits (no randint to compile).
            action = (_raw_bits(k_action)[0] % num_actions).astype(action_dtype)

            outcomes = jax.vmap(
                lambda a: env.step_env(k_step, state, a, params)[:4])(all_actions)
            prints = jax.vmap(_fingerprint)(outcomes)  # [n, 2]
            same = same & jnp.all(prints[:, None] == prints[None, :], axis=-1)
            obs, state_t, reward, terminated = jax.tree.map(lambda x: x[action], outcomes)
            truncated = env.is_truncated(state_t, params) if limit else jnp.bool_(False)
            done = jnp.logical_or(terminated, truncated)
            episode_len = jnp.where(first, 0, episode_len) + 1
            record = _Steps(
                reset_time=jnp.where(first, time_of(state_reset), 0),
                time_tm1=time_of(state), time_t=time_of(state_t), episode_len=episode_len,
                done=done, reward=jnp.asarray(reward).astype(jnp.float32))
            carry = (state_t, done, episode_len, reset_stats,
                     _merge(step_stats, _obs_stats(obs)), same)
            return carry, record

        def stream(key):
            # Keys drawn up front: no key splitting inside the loop to compile.
            carry = (_placeholder(traced.state), jnp.bool_(True), jnp.int32(0), empty, empty,
                     jnp.ones((num_actions, num_actions), bool))
            (state, _, _, reset_stats, step_stats, same), records = jax.lax.scan(
                env_step, carry, jax.random.split(key, (steps, 3)))
            return state, reset_stats, step_stats, records, same

        def limit_done(state, key) -> jax.Array:
            """Whether env.step ends the episode on the step that takes time to max_steps."""
            state = state.replace(time=jnp.asarray(max_steps - 1, jnp.asarray(state.time).dtype))
            out = env.step(key, state, jnp.zeros((), action_dtype), params)
            done = jnp.logical_or(out[3], out[4]) if len(out) == 6 else out[3]
            return jnp.asarray(done, bool)

        last_state, reset_stats, step_stats, records, same = jax.vmap(stream)(keys)
        # gymnax's own step and is_truncated stop at the limit once time counts (checked);
        # an override of either is tried once, at the limit.
        overrides = (type(env).step is not environment.Environment.step
                     or type(env).is_truncated is not environment.Environment.is_truncated)
        if overrides and has_time and limit and hasattr(last_state, "replace"):
            at_limit = limit_done(jax.tree.map(lambda x: x[0], last_state), keys[0])
        else:
            at_limit = jnp.bool_(True)
        return _Summary(
            reset_obs=_reduce(reset_stats, axis=0),
            step_obs=_reduce(step_stats, axis=0),
            steps=jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), records),
            same_outcome=same.all(0),
            limit_done=at_limit,
        )

    return run


def _raw_bits(key) -> jax.Array:
    """A PRNG key's words, uint32 [k], whether a typed key or a raw uint32 array."""
    return jnp.ravel(_comparable(key))


def _placeholder(state):
    """Zeros shaped like `state` (ShapeDtypeStructs): a carry that the first step replaces."""
    def zeros(s):
        if jnp.issubdtype(s.dtype, jax.dtypes.prng_key):
            impl = s.dtype._impl  # noqa: SLF001 - the key's implementation, for its data shape
            data = jnp.zeros(s.shape + tuple(impl.key_shape), jnp.uint32)
            return jax.random.wrap_key_data(data, impl=impl.name)
        return jnp.zeros(s.shape, s.dtype)

    return jax.tree.map(zeros, state)


def _empty_stats(obs) -> _ObsStats:
    """The identity of _merge for observations shaped like `obs` (a ShapeDtypeStruct)."""
    dtype = obs.dtype if obs.dtype.kind == "f" else jnp.dtype(jnp.int32)
    return _ObsStats(jnp.full(obs.shape, _extreme(dtype, +1), dtype),
                     jnp.full(obs.shape, _extreme(dtype, -1), dtype),
                     jnp.bool_(False), jnp.bool_(False))


def _extreme(dtype, sign: int):
    if jnp.issubdtype(dtype, jnp.floating):
        return sign * np.inf
    info = jnp.iinfo(dtype)
    return info.max if sign > 0 else info.min


# ------------------------------------------------------------------------ host-side verdicts
def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_time(summary: _Summary, traced: _Traced, fail):
    if not traced.has_time:
        return
    reset_time = np.asarray(summary.steps.reset_time)
    if np.any(reset_time != 0):
        fail(f"reset_env returns state.time = {reset_time[reset_time != 0][0]}; expected 0 "
             f"(a step counter){_keyword_hint(traced)}")
    s = summary.steps
    wrong = np.asarray(s.time_t) != np.asarray(s.time_tm1) + 1
    if np.any(wrong):
        t, b = _first(wrong)
        before, after = s.time_tm1[t, b], s.time_t[t, b]
        if before == after:
            fail(f"state.time stays at {before} through step_env; expected +1 per step, or "
                 "gymnax's time limit (is_truncated: time >= max_steps_in_episode) never fires")
        fail(f"state.time went {before} -> {after} in one step_env (step {t} of stream {b}); "
             f"expected +1 per step{_keyword_hint(traced)}")


def _check_episodes(summary: _Summary, max_steps: int | None, fail):
    if max_steps is None:
        return
    s = summary.steps
    overdue = (np.asarray(s.episode_len) >= max_steps) & ~np.asarray(s.done)
    if np.any(overdue):
        t, b = _first(overdue)
        fail(f"an episode ran {s.episode_len[t, b]} steps without ending (stream {b}); expected "
             f"every episode to end within max_steps_in_episode = {max_steps} steps "
             "(terminated, or is_truncated: state.time >= max_steps_in_episode)")
    if not bool(summary.limit_done):
        fail("env.step did not end the episode on the step that took state.time to "
             f"max_steps_in_episode = {max_steps}; expected truncated there (does a custom "
             "`step` leave out is_truncated?)")


def _check_rewards(summary: _Summary, fail):
    reward = np.asarray(summary.steps.reward)
    bad = ~np.isfinite(reward)
    if np.any(bad):
        t, b = _first(bad)
        fail(f"step_env returns reward {reward[t, b]} (step {t} of stream {b}); "
             "expected finite rewards")


def _bounds(obs_space) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise low and high, float64, broadcast to the observation shape."""
    shape = tuple(obs_space.shape)
    if isinstance(obs_space, spaces.Discrete):
        return np.zeros(shape), np.full(shape, obs_space.n - 1, np.float64)
    return (np.broadcast_to(np.asarray(obs_space.low, np.float64), shape),
            np.broadcast_to(np.asarray(obs_space.high, np.float64), shape))


def _check_observations(summary: _Summary, obs_space, obs_dtype, fail, warn):
    low, high = _bounds(obs_space)
    if obs_dtype.kind == "f":  # compare at the observations' precision: no 1-ulp false alarms
        low, high = low.astype(obs_dtype), high.astype(obs_dtype)
    for where, stats in (("reset_env", summary.reset_obs), ("step_env", summary.step_obs)):
        if bool(stats.nonfinite):
            fail(f"{where} returns observations with NaN or inf values; expected finite ones")
        for side, seen, bound, outside in (("below low", stats.low, low, np.less),
                                           ("above high", stats.high, high, np.greater)):
            seen = np.asarray(seen, bound.dtype)
            out = outside(seen, bound)
            if np.any(out):
                index = _first(out)
                at = f" at index {index}" if index else ""
                fail(f"{where} returns observation value {seen[index]:g}{at}, {side} "
                     f"{bound[index]:g} of observation_space(params) = {obs_space!r}; "
                     "expected observations inside the space")

    if isinstance(obs_space, spaces.Discrete):  # integer dtype checked while tracing
        return
    space_dtype = np.dtype(obs_space.dtype)
    if _KIND_RANK.get(obs_dtype.kind, 2) <= _KIND_RANK.get(space_dtype.kind, 2):
        return
    if bool(summary.reset_obs.fractional) or bool(summary.step_obs.fractional):
        fail(f"observations are {obs_dtype.name} with fractional values but "
             f"observation_space(params) is {obs_space!r}; expected values of the space's "
             "dtype (declare a float Box, or round and cast)")
    warn(f"observations are {obs_dtype.name} but observation_space(params) is {obs_space!r}; "
         "the values fit, so this runs, but expected the Box dtype to describe them")


def _check_actions(summary: _Summary, num_actions: int, num_states: int, warn):
    same = np.asarray(summary.same_outcome)
    groups, seen = [], set()
    for a in range(num_actions):
        if a not in seen:
            group = [b for b in range(a, num_actions) if same[a, b]]
            seen.update(group)
            if len(group) > 1:
                groups.append(group)
    if not groups:
        return
    listed = "; ".join(" and ".join(map(str, g)) for g in groups)
    if any(g[-1] == num_actions - 1 for g in groups):
        cause = (f"likely step_env indexes a table shorter than action_space(params).n = "
                 f"{num_actions} and JAX clamps the out-of-range index to the last row")
    else:
        cause = "check that they are meant to coincide"
    warn(f"actions {listed} gave identical next states, observations, rewards and "
         f"terminations from all {num_states} states visited; {cause}; expected every "
         "action to matter somewhere")
