"""Evaluate a learned LPG rule: whole lifetimes of fresh agents, against A2C and an untrained rule.

    python -m experiments.evaluate --rule runs/meta_quick/rule.msgpack
    python -m experiments.evaluate --rule RUN/rule.msgpack --envs generated_heldout chain_long Breakout-MinAtar

For every environment, fresh agents are trained for --updates agent updates (each from a
--num-envs x --rollout-len rollout) by (1) the learned rule, (2) A2C and (3) an untrained rule
(a fresh `init_rule` with the same RuleConfig). Sampled sources (generated_heldout, chains)
use --levels levels, every environment --seeds seeds per level. Tabular environments use
table agents trained by SGD; others use small networks trained by Adam.

LPG hyperparameters (discount, alpha_y, tabular learning rate) default to the middle of the
choices the rule was meta-trained with (read from RUN_DIR/config.json beside the rule), else to
0.995 / 0.5 / 40. The tabular learning rate is an SGD step on the *mean* loss over the batch
(as in meta-training), so a state's effective step shrinks with its share of the visits: big
state spaces want larger rates. --lpg-lr-select / --a2c-lr-select pick a tabular learning
rate per environment (as the paper's per-environment hyperparameter bandit does) by the best
mean final return over separate selection lifetimes (same levels, other seeds); the reported
lifetimes are fresh. The untrained rule always uses LPG's learning rate.

Writes OUT/results.json (all numbers), OUT/summary.md (the table), and learning curves
OUT/curves.png (all environments) and OUT/curves_<env>.png. OUT defaults to RUN_DIR/eval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments.cli import check_rule_and_envs
from experiments.presets import A2C_PRESETS
from lpg import evaluate as ev_lib
from lpg.a2c import A2CConfig
from lpg.update_rule import init_rule, load_rule

DEFAULT_ENVS = ("generated_heldout", "tabular_dense", "tabular_sparse", "chain_short", "chain_long", "Catch-bsuite")
LEARNERS = ("LPG", "A2C", "untrained rule")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def training_hypers(rule_path: Path) -> dict | None:
    """The hyperparameter choices the rule was meta-trained with (RUN_DIR/config.json), if present."""
    config_path = rule_path.parent / "config.json"
    if not config_path.exists():
        return None
    try:
        return json.loads(config_path.read_text()).get("hypers")
    except (json.JSONDecodeError, AttributeError):
        return None


def middle_choice(values, fallback):
    return float(sorted(values)[len(values) // 2]) if values else fallback


def a2c_config(tabular: bool, lr: float | None) -> A2CConfig:
    """A2C with the presets' tuned settings: tables by SGD ("quick"), networks by Adam ("random_small")."""
    base = A2C_PRESETS["quick"][1] if tabular else dataclasses.replace(A2C_PRESETS["random_small"][1], agent="auto")
    return base if lr is None else dataclasses.replace(base, learning_rate=lr)


def settings_for(ev: ev_lib.EvalEnv, args) -> ev_lib.AgentSettings:
    if ev.tabular:
        return ev_lib.AgentSettings("tabular", "sgd", args.lpg_lr, args.discount, args.alpha_y,
                                    a2c_config(True, args.a2c_lr))
    return ev_lib.AgentSettings("auto", "adam", args.lpg_lr_neural, args.discount, args.alpha_y,
                                a2c_config(False, args.a2c_lr_neural), hidden=args.hidden)


def format_cell(report: dict) -> str:
    mean, half = report["final_mean"], report["final_ci95"]
    text = "no episode ended" if mean is None else f"{mean:.3f}" + ("" if half is None else f" ± {half:.3f}")
    missing = report["lifetimes_without_final_episode"]
    if missing and mean is not None:
        text += f" ({missing} of {report['lifetimes']} lifetimes ended no episode)"
    return text


def table(results: dict) -> str:
    lines = ["| environment | lifetimes (levels x seeds) | " + " | ".join(LEARNERS)
             + " | optimal policy | learning rate LPG / A2C |",
             "| --- | --- | " + " | ".join("---" for _ in LEARNERS) + " | --- | --- |"]
    for name, r in results["envs"].items():
        opt = r.get("optimal_return_mean")
        cells = [format_cell(r["learners"][k]) for k in LEARNERS]
        lrs = f"{r['settings']['lpg_learning_rate']:g} / {r['settings']['a2c']['learning_rate']:g}"
        lines.append(f"| {name} | {r['num_levels']} x {r['num_seeds']} | " + " | ".join(cells)
                     + f" | {'–' if opt is None else f'{opt:.3f}'} | {lrs} |")
    return "\n".join(lines)


def selection_table(results: dict) -> str:
    lines = ["| environment | learner | learning rate | final return (selection lifetimes) |",
             "| --- | --- | --- | --- |"]
    for name, r in results["envs"].items():
        for learner, reports in r.get("learning_rate_selection", {}).items():
            chosen = r["settings"]["lpg_learning_rate"] if learner == "LPG" else r["settings"]["a2c"]["learning_rate"]
            for lr, report in reports.items():
                mark = " (selected)" if float(lr) == chosen else ""
                lines.append(f"| {name} | {learner} | {lr}{mark} | {format_cell(report)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def plot_curves(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"LPG": "tab:blue", "A2C": "tab:orange", "untrained rule": "tab:gray"}

    def draw(ax, name, r):
        for learner in LEARNERS:
            rep = r["learners"][learner]
            x, m, h = (np.array(rep[k], float) for k in ("curve_env_steps", "curve_mean", "curve_ci95"))
            ax.plot(x, m, label=learner, color=colours[learner])
            ax.fill_between(x, m - np.nan_to_num(h), m + np.nan_to_num(h), color=colours[learner], alpha=0.2)
        if r.get("optimal_return_mean") is not None:
            ax.axhline(r["optimal_return_mean"], color="k", ls="--", lw=0.8, label="optimal policy")
        ax.set_title(f"{name} ({r['num_levels']} lv x {r['num_seeds']} seeds)", fontsize=9)
        ax.set_xlabel("environment steps")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_ylabel("episode return")

    paths = []
    names = list(results["envs"])
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        draw(ax, name, results["envs"][name])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"lifetimes with {results['rule']} (mean ± 95% CI over lifetimes)", fontsize=10)
    fig.tight_layout()
    paths.append(out / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        draw(ax, name, results["envs"][name])
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"curves_{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def select_learning_rate(run, candidates, config) -> tuple[float, dict]:
    """The candidate with the best mean final return of `run(lr) -> metrics` (selection lifetimes)."""
    reports = {f"{lr:g}": ev_lib.final_report(run(lr), config) for lr in candidates}
    def score(lr):
        mean = reports[f"{lr:g}"]["final_mean"]
        return -np.inf if mean is None else mean

    return max(candidates, key=score), reports


def evaluate(args) -> dict:
    rule_path = Path(args.rule)
    rule_params, rule_config = load_rule(rule_path)
    untrained_params = init_rule(rule_config, jax.random.PRNGKey(args.untrained_seed))
    config = ev_lib.LifetimeConfig(num_updates=args.updates, num_envs=args.num_envs, rollout_len=args.rollout_len,
                                   num_seeds=args.seeds, curve_points=min(args.curve_points, args.updates))
    results = {"rule": str(rule_path), "rule_config": dataclasses.asdict(rule_config),
               "lifetime": dataclasses.asdict(config),
               "command": "python -m experiments.evaluate " + " ".join(args.argv), "envs": {}}
    key = jax.random.PRNGKey(args.seed)
    for i, name in enumerate(args.envs):
        # Selection lifetimes use their own seeds (k_select), never the reported ones (k_run).
        key, k_levels, k_run, k_select = jax.random.split(key, 4)
        ev = ev_lib.eval_env(name, args.levels, k_levels)
        s = settings_for(ev, args)
        t0 = time.time()
        log(f"[{i + 1}/{len(args.envs)}] {name}: {ev.num_levels} level(s) x {args.seeds} seed(s), "
            f"{args.updates} updates of {config.steps_per_update} steps, "
            f"{'tabular/SGD' if ev.tabular else f'{s.agent} net/Adam'}")
        lpg = ev_lib.lpg_lifetimes(ev, rule_config, s, config)
        selection = {}
        if ev.tabular and args.lpg_lr_select:
            run = lambda lr: jax.device_get(  # noqa: E731
                lpg(ev.levels, (rule_params, dataclasses.replace(s, lpg_learning_rate=lr).lpg_hypers), k_select))
            best, selection["LPG"] = select_learning_rate(run, args.lpg_lr_select, config)
            s = dataclasses.replace(s, lpg_learning_rate=best)
            log(f"    LPG learning rate selected: {best:g} from " + ", ".join(
                f"{lr}: {format_cell(r)}" for lr, r in selection["LPG"].items()) + f" ({time.time() - t0:.0f}s)")
        if ev.tabular and args.a2c_lr_select:
            run = lambda lr: jax.device_get(ev_lib.a2c_lifetimes(  # noqa: E731
                ev, dataclasses.replace(s, a2c=dataclasses.replace(s.a2c, learning_rate=lr)), config)(
                ev.levels, (), k_select))
            best, selection["A2C"] = select_learning_rate(run, args.a2c_lr_select, config)
            s = dataclasses.replace(s, a2c=dataclasses.replace(s.a2c, learning_rate=best))
            log(f"    A2C learning rate selected: {best:g} from " + ", ".join(
                f"{lr}: {format_cell(r)}" for lr, r in selection["A2C"].items()) + f" ({time.time() - t0:.0f}s)")
        log(f"    LPG lr {s.lpg_learning_rate:g}, γ {s.lpg_discount:g}, α_y {s.lpg_alpha_y:g}; "
            f"A2C lr {s.a2c.learning_rate:g}, γ {s.a2c.discount:g}")
        runs = {}
        for learner, params in (("LPG", rule_params), ("untrained rule", untrained_params)):
            runs[learner] = jax.device_get(lpg(ev.levels, (params, s.lpg_hypers), k_run))
            log(f"    {learner}: {format_cell(ev_lib.final_report(runs[learner], config))} ({time.time() - t0:.0f}s)")
        runs["A2C"] = jax.device_get(ev_lib.a2c_lifetimes(ev, s, config)(ev.levels, (), k_run))
        log(f"    A2C: {format_cell(ev_lib.final_report(runs['A2C'], config))} ({time.time() - t0:.0f}s)")
        optimal = ev_lib.optimal_returns(ev, s.lpg_discount)
        results["envs"][name] = {
            "num_levels": ev.num_levels, "num_seeds": args.seeds, "tabular": ev.tabular,
            "settings": {**dataclasses.asdict(s), "a2c": dataclasses.asdict(s.a2c)},
            "optimal_return": None if optimal is None else optimal.tolist(),
            "optimal_return_mean": None if optimal is None else float(optimal.mean()),
            "learners": {k: ev_lib.final_report(runs[k], config) for k in LEARNERS},
            "learning_rate_selection": selection,
            "seconds": time.time() - t0,
        }
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", required=True, help="a rule written by meta-training (RUN_DIR/rule.msgpack)")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS),
                        help="environments: level sources, named grids, chains, gymnax names "
                             f"(default: {' '.join(DEFAULT_ENVS)})")
    parser.add_argument("--levels", type=int, default=4, help="levels per sampled source (generated_heldout, chains)")
    parser.add_argument("--seeds", type=int, default=3, help="lifetimes per level")
    parser.add_argument("--updates", type=int, default=500, help="agent updates per lifetime")
    parser.add_argument("--num-envs", type=int, default=64, help="environments per agent (batch)")
    parser.add_argument("--rollout-len", type=int, default=20, help="steps per rollout (T)")
    parser.add_argument("--discount", type=float, default=None,
                        help="LPG discount γ (default: middle of the rule's meta-training choices, else 0.995)")
    parser.add_argument("--alpha-y", type=float, default=None,
                        help="LPG α_y (default: middle of the rule's meta-training choices, else 0.5)")
    parser.add_argument("--lpg-lr", type=float, default=None,
                        help="LPG tabular agent SGD learning rate on the mean loss (default: middle of the rule's "
                             "meta-training choices, else 40)")
    parser.add_argument("--lpg-lr-neural", type=float, default=1e-3, help="LPG network agent Adam learning rate")
    parser.add_argument("--a2c-lr", type=float, default=None,
                        help="A2C tabular SGD learning rate (default: the 'quick' A2C preset's, "
                             f"{a2c_config(True, None).learning_rate:g})")
    parser.add_argument("--a2c-lr-neural", type=float, default=None,
                        help="A2C network Adam learning rate (default: the 'random_small' A2C preset's, "
                             f"{a2c_config(False, None).learning_rate:g})")
    parser.add_argument("--lpg-lr-select", type=float, nargs="*", default=[], metavar="LR",
                        help="tabular envs: pick LPG's learning rate per environment from these by the best mean final "
                             "return over separate selection lifetimes (other seeds), then report fresh lifetimes")
    parser.add_argument("--a2c-lr-select", type=float, nargs="*", default=[], metavar="LR",
                        help="the same selection for A2C's tabular learning rate")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of network agents")
    parser.add_argument("--curve-points", type=int, default=20, help="points per learning curve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untrained-seed", type=int, default=12345, help="PRNG seed of the untrained rule")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    check_rule_and_envs(parser, args.rule, args.envs)
    for flag in ("levels", "seeds", "updates", "num_envs", "rollout_len", "curve_points"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    hypers = training_hypers(Path(args.rule)) or {}
    if args.discount is None:
        args.discount = middle_choice(hypers.get("discounts"), 0.995)
    if args.alpha_y is None:
        args.alpha_y = middle_choice(hypers.get("alpha_ys"), 0.5)
    if args.lpg_lr is None:
        args.lpg_lr = middle_choice(hypers.get("learning_rates"), 40.0)
    args.out = Path(args.out) if args.out else Path(args.rule).parent / "eval"
    return args


def normalised_table(results: dict) -> str:
    """Final return / optimal return of the level, per lifetime (levels with a positive optimal return)."""
    lines = ["| environment | lifetimes | " + " | ".join(LEARNERS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in LEARNERS) + " |"]
    for name, r in results["envs"].items():
        optimal = r.get("optimal_return")
        if optimal is None:
            continue
        keep = np.asarray(optimal) > 0
        cells = []
        for learner in LEARNERS:
            final = np.asarray(r["learners"][learner]["final"], float)[keep]  # [levels kept, seeds]
            ratio = (final / np.asarray(optimal)[keep][:, None]).reshape(-1)
            ratio = ratio[np.isfinite(ratio)]
            if len(ratio) == 0:
                cells.append("–")
                continue
            mean, half = ev_lib.confidence_interval(ratio)
            cells.append(f"{mean:.3f}" + ("" if np.isnan(half) else f" ± {half:.3f}"))
        lines.append(f"| {name} | {int(keep.sum())} x {r['num_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_outputs(results: dict, out: Path) -> str:
    """results.json, summary.md and the PNGs; returns the summary's tables."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    normalised = normalised_table(results)
    if normalised:
        text += ("\n\nFinal return as a fraction of the optimal policy's expected episode return on its level "
                 "(exact planning at LPG's γ; levels whose optimal return is positive):\n\n" + normalised)
    selection = selection_table(results)
    if selection:
        text += ("\n\nLearning rates selected per environment on separate selection lifetimes "
                 "(same levels, other seeds):\n\n" + selection)
    (out / "summary.md").write_text(
        f"# LPG evaluation\n\nCommand: `{results['command']}`\n\nFinal return (mean over the last 10% of each "
        f"lifetime) ± 95% CI over lifetimes:\n\n{text}\n")
    plot_curves(results, out)
    return text


def main(argv=None):
    args = parse_args(argv)
    try:
        results = evaluate(args)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    print(write_outputs(results, args.out))
    log(f"wrote {args.out / 'results.json'}, {args.out / 'summary.md'} and learning-curve PNGs")


if __name__ == "__main__":
    main()
