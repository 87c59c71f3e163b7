"""RL² on task distributions with exact posteriors: train, evaluate, and analyse the belief state.

    python -m experiments.rl2 --preset quick                 # train + evaluate + analyse (Beta bandit, T=20)
    python -m experiments.rl2 --preset quick --mode evaluate # regret / agreement of the last checkpoint
    python -m experiments.rl2 --preset hidden_goal --set train.num_updates=4000
    python -m experiments.rl2 --preset beta --out results/rl2/beta   # the analysis somewhere else

Everything goes to RUN_DIR (default runs/rl2_<preset>): config.json, metrics.jsonl and
checkpoints (a rerun resumes), and beside them the evaluation or analysis (summary.md,
summary.json, plots), or to --out. The library does the work: `lpg.rl2.train` /
`load_params`, and `lpg.rl2_analysis` (evaluation against the exact Bayes baselines and the
belief analysis on held-out tasks from `analysis.eval_seed`, never the training seed).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path

from experiments.cli import Parser, add_common_args, apply_overrides, entry_point, pick_preset
from lpg import rl2, runs
from lpg.config import validate
from lpg.rl2_analysis import (AnalysisConfig, TaskSuite, analyse, beta_bandit_suite, evaluate, hidden_goal_suite,
                              swapped_bandit_suite, write_report)
from lpg.rl2 import TrainConfig

ENVS = ("bandit_beta", "bandit_swapped", "hidden_goal")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "bandit_beta"
    trial_len: int = 20  # T: steps (pulls) per trial = one gymnax episode
    reward_prob: float = 0.1  # bandit_swapped: arms pay Bernoulli(p) and Bernoulli(1 - p)
    grid_size: int = 5  # hidden_goal: size x size grid, goal in one of the 4 corners

    def __post_init__(self):
        validate(self, [
            (self.name in ENVS, f"name must be one of {ENVS}"),
            (self.trial_len >= 1, "trial_len must be >= 1"),
            (0.0 <= self.reward_prob <= 1.0, "reward_prob must be in [0, 1]"),
            (self.grid_size >= 3, "grid_size must be >= 3"),
            (self.name != "bandit_beta" or self.trial_len <= 100,
             "trial_len must be <= 100 for bandit_beta (its exact DP is tabled up to there)"),
        ])


@dataclasses.dataclass(frozen=True)
class Experiment:
    env: EnvConfig = EnvConfig()
    agent: rl2.RL2Config = rl2.RL2Config()
    train: TrainConfig = TrainConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    def __post_init__(self):
        validate(self, [(self.analysis.eval_seed != self.train.seed,
                         "analysis.eval_seed must differ from train.seed (held-out tasks)")])


def _beta(**kw) -> Experiment:
    return Experiment(env=EnvConfig("bandit_beta", trial_len=20), **kw)


PRESETS = {
    # Beta bandit T = 20, GRU-64, 3000 A2C updates of 128 trials: a few minutes on 2 CPU cores.
    "quick": _beta(
        agent=rl2.RL2Config(hidden=64, num_envs=128, rollout_len=20, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=2400),
        train=TrainConfig(num_updates=3000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=10_000, probe_trials=2000),
    ),
    # The committed Beta-bandit analysis: longer training, more held-out trials.
    "beta": _beta(
        agent=rl2.RL2Config(hidden=64, num_envs=256, rollout_len=20, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=6400),
        train=TrainConfig(num_updates=8000, updates_per_chunk=500),
        analysis=AnalysisConfig(num_trials=20_000, probe_trials=4000),
    ),
    # Two arms Bernoulli(p) / Bernoulli(1 - p) in unknown order, p = 0.1, T = 100. With the
    # Beta presets' lr 1e-3 / entropy 0.05 it is still at 73.6 (sampling) after 2000 updates.
    "swapped": Experiment(
        env=EnvConfig("bandit_swapped", trial_len=100, reward_prob=0.1),
        agent=rl2.RL2Config(hidden=64, num_envs=64, rollout_len=100, learning_rate=3e-3,
                            entropy_cost=0.02, entropy_cost_end=0.0, entropy_anneal_updates=4000),
        train=TrainConfig(num_updates=5000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=4000, probe_trials=1000),
    ),
    # 5x5 open grid, goal in one of the 4 corners, start in the centre, T = 50.
    "hidden_goal": Experiment(
        env=EnvConfig("hidden_goal", trial_len=50, grid_size=5),
        agent=rl2.RL2Config(hidden=128, num_envs=128, rollout_len=50, learning_rate=1e-3,
                            entropy_cost=0.05, entropy_cost_end=0.0, entropy_anneal_updates=3200),
        train=TrainConfig(num_updates=4000, updates_per_chunk=250),
        analysis=AnalysisConfig(num_trials=4000, probe_trials=1000),
    ),
}


def make_suite(config: EnvConfig) -> TaskSuite:
    """The named task family with its exact Bayes baselines."""
    if config.name == "bandit_beta":
        return beta_bandit_suite(config.trial_len)
    if config.name == "bandit_swapped":
        return swapped_bandit_suite(config.reward_prob, config.trial_len)
    return hidden_goal_suite(config.grid_size, config.trial_len)


def default_run_dir(preset: str) -> Path:
    return Path("runs") / f"rl2_{preset}"


def report_header(summary: dict, preset: str, command: str) -> list[str]:
    held_out = (f"Held-out tasks: {summary['held_out_trials']} trials from seed {summary['eval_seed']} "
                f"(training used seed {summary['config']['train']['seed']}).")
    return [f"# RL² belief-state analysis: preset `{preset}`", "", f"Command: `{command}`", "",
            f"Training: {summary['trained_updates']} updates. {held_out}", ""]


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, PRESETS, default="quick")
    parser.add_argument("--mode", default="all", choices=("all", "train", "evaluate", "analyse"),
                        help="all = train (or resume), then analyse")
    parser.add_argument("--out", default=None, help="where the evaluation / analysis goes (default: RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(pick_preset(PRESETS, args.preset), args.set)
    except ValueError as e:
        parser.error(str(e))
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.preset)
    out_dir = Path(args.out) if args.out else run_dir
    suite = make_suite(config.env)
    train_seconds = None
    if args.mode in ("all", "train"):
        t0 = time.time()
        rl2.train(suite.env, suite.params, config.agent, config.train, run_dir, resume=not args.no_resume,
                  run_config=config, tensorboard=args.tensorboard)
        train_seconds = time.time() - t0
    if args.mode == "train":
        return
    try:
        params, updates = rl2.load_params(suite.env, suite.params, config.agent, config.train, run_dir,
                                          run_config=config)
    except FileNotFoundError as e:
        parser.error(f"{e} (--mode train or all)")
    print(f"analysing the checkpoint after {updates} updates on held-out tasks", file=sys.stderr)
    if args.mode == "evaluate":
        summary, _ = evaluate(suite, config.agent, params, config.analysis)
    else:
        summary = analyse(suite, config.agent, params, config.analysis, out_dir)
    command = "python -m experiments.rl2 " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary.update(preset=args.preset, trained_updates=updates, config=runs.config_to_dict(config),
                   train_seconds_this_invocation=train_seconds, command=command)
    write_report(summary, out_dir, report_header(summary, args.preset, command))
    print(f"wrote {out_dir / 'summary.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
