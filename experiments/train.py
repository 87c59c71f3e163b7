"""Train the A2C baseline on one environment and plot its learning curve.

    python -m experiments.train --preset quick                 # tabular A2C on the dense grid
    python -m experiments.train --env chain_short --updates 300
    python -m experiments.train --env CartPole-v1 --set optimizer=adam --set learning_rate=3e-3

Writes RUN_DIR/metrics.jsonl (one row per agent update), RUN_DIR/curve.png and
checkpoints (a killed run resumes where it stopped).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

import envs
from envs.check import check_user_env
from experiments.cli import Parser, add_common_args, apply_overrides, entry_point, fail, pick_preset
from experiments.presets import A2C_PRESETS
from lpg.a2c import A2CConfig, make_a2c
from lpg.learner import learning_curve, make_train
from lpg.runs import RunDir, host_loop


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    env: str
    a2c: A2CConfig
    updates: int
    updates_per_chunk: int = 50
    seed: int = 0

    def __post_init__(self):
        if self.updates < 1 or self.updates_per_chunk < 1:
            raise ValueError(f"updates and updates_per_chunk must be >= 1 (got {self.updates}, {self.updates_per_chunk})")


def train_a2c(config: TrainConfig, run_dir: str | None, resume: bool = True, quiet: bool = False,
              tensorboard: bool = False):
    """Trains A2C; returns (per-update returns, episode counts) as numpy arrays."""
    env, env_params = envs.make(config.env)
    check_user_env(env, env_params)  # a registered user environment: checked before compiling
    train = make_train(env, env_params, make_a2c(env, env_params, config.a2c), config.a2c.num_envs,
                       config.a2c.rollout_len)
    chunk = min(config.updates_per_chunk, config.updates)
    num_chunks = -(-config.updates // chunk)
    run_chunk = jax.jit(lambda s: train.run(s, chunk))
    state = train.init(jax.random.PRNGKey(config.seed))
    run = RunDir(run_dir, config, resume=resume, tensorboard=tensorboard) if run_dir else None
    start = 0
    if run is not None and resume:
        restored = run.restore(state)
        if restored is not None:
            state, start = restored

    def records(c, metrics):
        return [
            {"step": c * chunk + i + 1, "env_steps": (c * chunk + i + 1) * train.steps_per_update,
             **{k: np.asarray(v)[i] for k, v in metrics.items()}}
            for i in range(chunk)
        ]

    def describe(row):
        return (f"update {row['step']} | return {row['episode_return']:.2f} over {row['episodes']:.0f} episodes"
                f" | entropy {row['entropy']:.2f}")

    host_loop(run, state, run_chunk, num_chunks, records, describe, start_chunk=start, quiet=quiet)
    if run is None:
        return None
    rows = run.read_metrics()
    run.close()
    return np.array([r["episode_return"] for r in rows]), np.array([r["episodes"] for r in rows])


def plot_curve(returns, episodes, path: Path, title: str, steps_per_update: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(len(returns) // 50, 1)
    curve = learning_curve(returns, episodes, window)
    x = (np.arange(len(curve)) + 1) * window * steps_per_update
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, curve)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, A2C_PRESETS, default="quick", config_of=lambda preset: preset[1])
    parser.add_argument("--env", default=None, help="environment name (envs.names() or any gymnax name)")
    parser.add_argument("--updates", type=int, default=None, help="agent updates (each num_envs x rollout_len steps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    env_name, a2c, updates = pick_preset(A2C_PRESETS, args.preset)
    try:
        config = TrainConfig(env=args.env or env_name, a2c=apply_overrides(a2c, args.set),
                             updates=args.updates or updates, seed=args.seed)
        envs.make(config.env)
    except ValueError as e:
        fail(str(e))
    run_dir = Path(args.run_dir or f"runs/a2c_{config.env}")
    print(f"A2C on {config.env}: {config.updates} updates x {config.a2c.num_envs * config.a2c.rollout_len} steps "
          f"-> {run_dir} (the first chunk includes compiling: 10-60 s on a 2-core CPU)", file=sys.stderr)
    returns, episodes = train_a2c(config, str(run_dir), resume=not args.no_resume, tensorboard=args.tensorboard)
    plot_curve(returns, episodes, run_dir / "curve.png", f"A2C on {config.env}",
               config.a2c.num_envs * config.a2c.rollout_len)
    final = learning_curve(returns[-max(len(returns) // 10, 1):], episodes[-max(len(returns) // 10, 1):],
                           max(len(returns) // 10, 1))
    print(f"final return (last 10% of updates): {float(final[0]):.3f}; curve: {run_dir / 'curve.png'}")


if __name__ == "__main__":
    main()
