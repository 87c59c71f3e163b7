"""RL² over a grid of settings of one task family: one recipe, several training seeds, and the
regret ratio to the exact Bayes-optimal agent at every setting (a table and a plot).

    python -m experiments.rl2_sweep --preset swapped              # p x T grid of the swapped bandit, 3 seeds
    python -m experiments.rl2_sweep --preset beta --set seeds=0,1
    python -m experiments.rl2_sweep --preset swapped --set x_values=0.3,0.45 --set line_values=100

A sweep is a base `experiments.rl2.Experiment` (the family's recipe), an x axis (a field of its
`EnvConfig`) and optionally one line per value of a second field. With `train_on="each"` every
(setting, seed) trains with the same recipe on that setting alone, except that the agent's window
is the trial (`rollout_len = trial_len`); with `train_on="once"` one agent per seed trains as the
base experiment says (for the swapped family: on a mixture of its settings, `train_envs`, each
trial drawing one) and is scored at every setting of the grid, trained on or not. Either way each
agent is evaluated on held-out tasks (`lpg.rl2_analysis.evaluate`). Each run keeps its own run
directory under RUN_DIR (so a rerun resumes and skips finished runs); RUN_DIR/sweep.json holds
one row per run, RUN_DIR/summary.md the table (per setting: each seed's ratio, mean, range, the
final training entropy) and RUN_DIR/regret_ratio.png the plot. A run whose policy entropy
ended near 0 while its regret is about the random policy's is marked "collapsed".
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments.cli import Parser, add_common_args, apply_overrides, entry_point, fail, pick_preset
from experiments.rl2 import PRESETS as RL2_PRESETS
from experiments.rl2 import EnvConfig, Experiment, make_suite, make_train_env, training_tasks
from lpg import rl2, runs
from lpg.config import validate
from lpg.rl2_analysis import evaluate

ENV_FIELDS = tuple(f.name for f in dataclasses.fields(EnvConfig) if f.name != "name")
TRAIN_ON = ("each", "once")
COLLAPSE_ENTROPY = rl2.DETERMINISTIC_ENTROPY  # a final training entropy below this ...
COLLAPSE_OF_RANDOM = 0.9  # ... with a regret above this fraction of the random policy's marks a collapsed run


@dataclasses.dataclass(frozen=True)
class Sweep:
    base: Experiment
    x_field: str  # an EnvConfig field, on the plot's x axis
    x_values: tuple[float, ...]
    line_field: str = ""  # an EnvConfig field with one line per value ("": one line)
    line_values: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_trials: int = 2000
    target_ratio: float = 1.5
    # "each": an agent per setting and seed, trained on that setting; "once": an agent per seed,
    # trained as `base` says (its env, or the mixture of its train_envs), scored at every setting
    train_on: str = "each"

    def __post_init__(self):
        validate(self, [
            (self.x_field in ENV_FIELDS, f"x_field must be one of {ENV_FIELDS}"),
            (len(self.x_values) >= 1, "x_values must name at least one value"),
            (self.line_field in ENV_FIELDS + ("",), f"line_field must be '' or one of {ENV_FIELDS}"),
            (bool(self.line_field) == bool(self.line_values), "line_field and line_values go together"),
            (self.line_field != self.x_field, "line_field must differ from x_field"),
            (len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds must be distinct, at least one"),
            (all(s != self.base.analysis.eval_seed for s in self.seeds), "a training seed equals analysis.eval_seed"),
            (self.eval_trials >= 10, "eval_trials must be >= 10"),
            (self.train_on in TRAIN_ON, f"train_on must be one of {TRAIN_ON}"),
        ])
        for setting in self.settings():  # every setting must be a valid EnvConfig
            self.env(setting)

    def settings(self) -> list[dict]:
        lines = self.line_values if self.line_field else (None,)
        return [{self.x_field: x, **({self.line_field: w} if self.line_field else {})}
                for w in lines for x in self.x_values]

    def trained_on(self, setting: dict) -> bool:
        """Whether the agent scored at `setting` trained on it."""
        if self.train_on == "each":
            return True
        return self.env(setting) in (self.base.train_envs or (self.base.env,))

    def env(self, setting: dict) -> EnvConfig:
        typed = {k: type(getattr(self.base.env, k))(v) for k, v in setting.items()}
        return dataclasses.replace(self.base.env, **typed)

    def experiment(self, setting: dict | None, seed: int) -> Experiment:
        """What trains the agent scored at `setting` ("each"), or the one agent of a seed ("once",
        setting None: the base experiment with this seed)."""
        train = dataclasses.replace(self.base.train, seed=seed)
        if setting is None:
            return dataclasses.replace(self.base, train=train)
        env = self.env(setting)
        agent = dataclasses.replace(self.base.agent, rollout_len=env.trial_len)  # the window is the trial
        return dataclasses.replace(self.base, env=env, agent=agent, train=train, train_envs=())


def label(setting: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in setting.items())


PRESETS = {
    # The swapped bandit: arms Bernoulli(p) / Bernoulli(1 - p), the `swapped` recipe: one agent per
    # seed trained on the family's mixture, scored at every setting (p = 0.4 and T = 70 are not in
    # the mixture).
    "swapped": Sweep(RL2_PRESETS["swapped"], "reward_prob", (0.05, 0.1, 0.2, 0.3, 0.4, 0.45),
                     "trial_len", (20, 50, 70, 100), train_on="once"),
    # The Beta(1, 1) bandit with 2 arms, the `beta` recipe.
    "beta": Sweep(RL2_PRESETS["beta"], "trial_len", (5, 10, 20, 50, 100)),
    # The Beta(1, 1) bandit with 3 arms (the exact policy is tabled up to T = 20), the same recipe.
    "beta3": Sweep(dataclasses.replace(RL2_PRESETS["beta"], env=EnvConfig("bandit_beta", trial_len=20, num_arms=3)),
                   "trial_len", (5, 10, 20)),
    # Hidden-goal grids of several sizes, the `hidden_goal` recipe.
    "hidden_goal": Sweep(RL2_PRESETS["hidden_goal"], "grid_size", (3, 5, 7)),
    # Seconds: the machinery end to end (tests).
    "tiny": Sweep(dataclasses.replace(
        RL2_PRESETS["swapped"], agent=rl2.RL2Config(hidden=8, num_envs=8),
        train=rl2.TrainConfig(num_updates=20, updates_per_chunk=10)),
        "reward_prob", (0.1, 0.3), "trial_len", (10,), seeds=(0, 1), eval_trials=50),
}


def collapsed(final_entropy: float, regret: float, random_regret: float) -> bool:
    """A deterministic policy that is no better than about random: it stopped exploring before it
    learned to use the evidence."""
    return bool(final_entropy < COLLAPSE_ENTROPY and regret > COLLAPSE_OF_RANDOM * random_regret)


def train(config: Experiment, run_dir: Path, resume: bool, tensorboard: bool = False) -> tuple[object, float]:
    """Trains (or resumes) one agent as `config` says: (its params, seconds)."""
    env, params = make_train_env(config)
    t0 = time.time()
    state = rl2.train(env, params, config.agent, config.train, run_dir, resume=resume, run_config=config,
                      tensorboard=tensorboard)
    return state.learner.params, time.time() - t0


def score(sweep: Sweep, setting: dict, seed: int, agent: rl2.RL2Config, params, run_dir: Path,
          train_seconds: float) -> dict:
    """One row of sweep.json: a trained agent evaluated at one setting on held-out tasks."""
    suite = make_suite(sweep.env(setting))
    analysis = dataclasses.replace(sweep.base.analysis, num_trials=sweep.eval_trials,
                                   probe_trials=min(sweep.base.analysis.probe_trials, sweep.eval_trials))
    summary, _ = evaluate(suite, agent, params, analysis, quiet=True)
    metrics = runs.read_metrics(run_dir)
    versus, me = summary["agent_vs_reference"], summary["policies"]["agent"]
    entropy = metrics[-1]["entropy"] if metrics else float("nan")
    random_regret = summary["policies"]["random"]["regret"]
    return {"setting": setting, "label": label(setting), "seed": seed, "regret_ratio": versus["regret_ratio_to_exact"],
            "regret": me["regret"], "exact_bayes_regret": versus["exact_bayes_regret"],
            "agreement": me.get("agreement"), "final_entropy": entropy, "random_regret": random_regret,
            "collapsed": collapsed(entropy, me["regret"], random_regret),
            "trained_on": sweep.trained_on(setting),
            "train_seconds": train_seconds}


def run_one(sweep: Sweep, setting: dict, seed: int, run_dir: Path, resume: bool, tensorboard: bool = False) -> dict:
    """Trains (or resumes) one setting's agent and scores it there (train_on="each")."""
    config = sweep.experiment(setting, seed)
    params, seconds = train(config, run_dir, resume, tensorboard)
    return score(sweep, setting, seed, config.agent, params, run_dir, seconds)


def table(sweep: Sweep, rows: list[dict]) -> list[str]:
    seeds = list(sweep.seeds)
    head = (["setting"] + [f"seed {s}" for s in seeds]
            + ["mean", "range", f"seeds ≤ {sweep.target_ratio:g}", "agreement (mean)", "final entropy (min)"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for setting in sweep.settings():
        mine = {r["seed"]: r for r in rows if r["label"] == label(setting)}
        ratios = np.array([mine[s]["regret_ratio"] for s in seeds if s in mine])
        cells = [f"{mine[s]['regret_ratio']:.2f}" + (" (collapsed)" if mine[s]["collapsed"] else "") if s in mine
                 else "–" for s in seeds]
        name = label(setting) + ("" if sweep.trained_on(setting) else " (not trained on)")
        if len(ratios):
            agree = [mine[s]["agreement"] for s in seeds if s in mine and mine[s]["agreement"] is not None]
            cells += [f"{ratios.mean():.2f}", f"{ratios.min():.2f}-{ratios.max():.2f}",
                      f"{int((ratios <= sweep.target_ratio).sum())}/{len(ratios)}",
                      f"{np.mean(agree):.3f}" if agree else "–",
                      f"{min(mine[s]['final_entropy'] for s in seeds if s in mine):.3f}"]
        else:
            cells += ["–"] * 5
        lines.append("| " + " | ".join([name] + cells) + " |")
    return lines


def plot(sweep: Sweep, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines = sweep.line_values if sweep.line_field else (None,)
    for i, w in enumerate(lines):
        colour = f"C{i}"
        xs, means = [], []
        for x in sweep.x_values:
            setting = {sweep.x_field: x, **({sweep.line_field: w} if sweep.line_field else {})}
            ratios = [r["regret_ratio"] for r in rows if r["label"] == label(setting)]
            ax.scatter([x] * len(ratios), ratios, color=colour, s=14, alpha=0.6)
            if ratios:
                xs.append(x)
                means.append(np.mean(ratios))
        name = f"{sweep.line_field} = {w:g}" if w is not None else "mean over seeds"
        ax.plot(xs, means, color=colour, marker="o", label=name)
    ax.axhline(sweep.target_ratio, color="grey", ls="--", lw=1, label=f"target {sweep.target_ratio:g}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    low, high = ax.get_ylim()  # labelled ticks wherever the data lie (a log axis labels decades only)
    ax.set_yticks([t for t in (0.5, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.5, 1.7, 2, 3, 5, 10, 20, 50, 100) if low <= t <= high])
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(sweep.x_field)
    ax.set_ylabel("regret / exact Bayes-optimal regret")
    ax.set_title(f"RL² regret ratio, {len(sweep.seeds)} training seeds (dots), mean (line)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(sweep: Sweep, rows: list[dict], out: Path, command: str) -> None:
    (out / "sweep.json").write_text(json.dumps({"sweep": runs.config_to_dict(sweep), "command": command,
                                                "rows": rows}, indent=1) + "\n")
    recipe = runs.config_to_dict(sweep.base)
    text = [f"# RL² sweep: {sweep.base.env.name} over {sweep.x_field}"
            + (f" x {sweep.line_field}" if sweep.line_field else ""), "", f"Command: `{command}`", "",
            ("Recipe (every setting and seed, each trained on its setting; the agent's window, rollout_len, "
             "is set to the trial): " if sweep.train_on == "each" else
             f"Recipe: one agent per seed, trained on {training_tasks(runs.config_to_dict(sweep.base))}, "
             "scored at every setting below; ")
            + f"agent {json.dumps(recipe['agent'])}, train {json.dumps(recipe['train'])}. Regret ratio = the agent's regret / the exact "
            f"Bayes-optimal regret, on {sweep.eval_trials} held-out trials (seed {sweep.base.analysis.eval_seed}). "
            f"Collapsed: final training entropy < {COLLAPSE_ENTROPY} nats and a regret above "
            f"{COLLAPSE_OF_RANDOM:g}x the random policy's.", "",
            *table(sweep, rows), "", "Plot: `regret_ratio.png`."]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    plot(sweep, rows, out / "regret_ratio.png")


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, PRESETS, default="swapped")
    args = parser.parse_args(argv)
    try:
        sweep = apply_overrides(pick_preset(PRESETS, args.preset), args.set)
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.run_dir) if args.run_dir else Path("runs") / f"rl2_sweep_{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m experiments.rl2_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    previous = out / "sweep.json"
    rows = []
    if previous.exists() and not args.no_resume:
        saved = json.loads(previous.read_text())
        if saved["sweep"] != json.loads(json.dumps(runs.config_to_dict(sweep))):
            fail(f"{out} holds a sweep with other settings; pick another --run-dir or pass --no-resume")
        rows = saved["rows"]
    done = {(r["label"], r["seed"]) for r in rows}

    def report(i, n, row):
        rows.append(row)
        print(f"[{i}/{n}] {row['label']} seed {row['seed']}: regret ratio {row['regret_ratio']:.2f}, "
              f"final entropy {row['final_entropy']:.3f}" + (" COLLAPSED" if row["collapsed"] else "")
              + f" (trained {row['train_seconds']:.0f}s)", file=sys.stderr, flush=True)
        write(sweep, rows, out, command)

    if sweep.train_on == "each":
        jobs = [(s, seed) for s in sweep.settings() for seed in sweep.seeds]
        for i, (setting, seed) in enumerate(jobs):
            if (label(setting), seed) in done:
                continue
            print(f"[{i + 1}/{len(jobs)}] {label(setting)} seed {seed}: training...", file=sys.stderr, flush=True)
            report(i + 1, len(jobs), run_one(sweep, setting, seed, out / label(setting) / f"seed{seed}",
                                             not args.no_resume, args.tensorboard))
    else:
        for i, seed in enumerate(sweep.seeds):
            todo = [s for s in sweep.settings() if (label(s), seed) not in done]
            if not todo:
                continue
            print(f"[seed {i + 1}/{len(sweep.seeds)}] seed {seed}: training on {training_tasks(runs.config_to_dict(sweep.base))}...",
                  file=sys.stderr, flush=True)
            run_dir = out / "once" / f"seed{seed}"
            config = sweep.experiment(None, seed)
            params, seconds = train(config, run_dir, not args.no_resume, args.tensorboard)
            for j, setting in enumerate(todo):
                report(j + 1, len(todo), score(sweep, setting, seed, config.agent, params, run_dir, seconds))
    write(sweep, rows, out, command)
    print(f"wrote {out / 'summary.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
