"""The y analysis (Oh et al. 2020): does y(s) encode values at many discounts?

    python -m experiments.analyse_y --rule runs/meta_quick/rule.msgpack [--env tabular_dense]

Trains --seeds tabular agents for --updates updates with the learned rule at the training
discount (--discount, default 0.995 as in the paper). A TD(λ) value table is trained alongside
on the same experience at that discount (the scalar-value baseline). For each final agent:
take y(s) on the states the agent visited at least --min-visits times (default 100: a state
seen a handful of times has a y and a TD value still near their initial zeros),
compute the true values V^π_γ of its final policy by exact policy evaluation at γ in
--eval-discounts, fit a 1-hidden-layer MLP from y(s) (and, separately, from the TD value) to
V_γ(s) on a --train-fraction of the states, and report held-out R² (mean ± 95% CI over
seeds). A control repeats the y regression for agents trained by an untrained rule (same
RuleConfig, fresh init): what y holds without meta-learning.

Writes OUT/y_analysis.json, OUT/summary.md, OUT/y_fits.png (held-out fits, first seed) and
OUT/y_r2.png (R² against the discount). OUT is --out, else --run-dir, else the rule's
RUN_DIR/y_analysis (never under the committed results/ unless --out says so); a finished
analysis with the same settings is shown again, not redone (--no-resume redoes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs.planning import tabular_mdp
from experiments.cli import (Parser, add_settings_args, check_rule_and_envs, entry_point, fail, output_dir,
                             settings_from_args)
from experiments.evaluate import RESULTS_DIR, format_cell, middle_choice, training_hypers
from lpg import evaluate as ev_lib
from lpg import y_analysis
from lpg.inner import Hypers, make_lpg_agent, make_lpg_learner
from lpg.config import validate
from lpg.runs import config_differences
from lpg.update_rule import init_rule, load_rule

FEATURES = ("y (learned rule)", "TD(λ) value", "y (untrained rule)")
MIN_STATES = 12  # enough for a train / validation / test split


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def train_agents(ev, rule_config, rules: dict, args, num_seeds: int | None = None, random_y: bool = False):
    """Final TrainStates [seeds, ...] and metrics of agents trained by each rule, with a TD(λ) table alongside
    (y tables drawn uniformly from [0, 1] at init with `random_y`)."""
    level = ev.level(0)
    agent = make_lpg_agent(ev.env, level, rule_config, agent="tabular", optimizer="sgd")
    num_states = ev.env.observation_space(level).n
    # jax arrays, not numpy scalars: optax.inject_hyperparams treats numpy scalars as static.
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    hypers = Hypers(f(args.discount), f(args.lr), f(args.alpha_y), f(0.0), f(args.updates))

    def make_learner(rule_params):
        learner = make_lpg_learner(agent, rule_params, hypers)
        if random_y:
            learner = y_analysis.with_random_y(learner)
        return y_analysis.with_td_value(learner, num_states, args.discount, args.td_lambda, args.td_step_size)

    config = ev_lib.LifetimeConfig(num_updates=args.updates, num_envs=args.num_envs, rollout_len=args.rollout_len,
                                   num_seeds=num_seeds or args.seeds)
    lifetimes = ev_lib.make_lifetimes(ev.env, make_learner, config, return_state=True)
    out = {}
    for name, params in rules.items():
        t0 = time.time()
        state, metrics = jax.device_get(lifetimes(ev.levels, params, jax.random.PRNGKey(args.seed)))
        state = jax.tree.map(lambda x: np.asarray(x)[0], state)  # the one level
        metrics = {k: np.asarray(v)[0] for k, v in metrics.items()}
        report = ev_lib.final_report({k: v[None] for k, v in metrics.items()}, config)
        log(f"  trained {config.num_seeds} agent(s) with the {name}: final return {format_cell(report)} "
            f"({time.time() - t0:.0f}s)")
        out[name] = (state, report)
    return out


def tables(state, seed: int, kl: bool):
    """(π [S, A], y [S, m], v_td [S], visits [S]) of one seed's final agent."""
    params = state.learner.learner.params["params"]
    logits, y = np.asarray(params["pi"][seed], np.float64), np.asarray(params["aux"][seed], np.float64)
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    if kl:  # the rule reads softmax(y) in KL mode; so does the probe
        y = np.exp(y - y.max(1, keepdims=True))
        y /= y.sum(1, keepdims=True)
    return pi, y, np.asarray(state.learner.v[seed]), np.asarray(state.learner.visits[seed])


def analyse(args) -> dict:
    rule_params, rule_config = load_rule(args.rule)
    untrained = init_rule(rule_config, jax.random.PRNGKey(args.untrained_seed))
    ev = ev_lib.eval_env(args.env, 1, jax.random.PRNGKey(args.seed))
    if not ev.tabular:
        fail(f"--env {args.env} has no tabular observations; the y analysis needs a tabular level")
    level = ev.level(0)
    try:
        mdp = tabular_mdp(ev.env, level)
    except ValueError as e:
        fail(f"--env {args.env}: {e}")
    reachable = y_analysis.reachable_states(mdp)
    log(f"{args.env}: {mdp.num_states} tabular states, {reachable.sum()} reachable; training {args.seeds} agent(s) "
        f"for {args.updates} updates x {args.num_envs * args.rollout_len} steps at γ={args.discount}, "
        f"lr {args.lr:g}, α_y {args.alpha_y:g}")
    trained = train_agents(ev, rule_config, {"learned rule": rule_params, "untrained rule": untrained}, args)
    discounts = list(args.eval_discounts)
    kl = rule_config.y_loss == "kl"

    per_seed = []
    key = jax.random.PRNGKey(args.seed + 1)
    for seed in range(args.seeds):
        finite = [np.isfinite(np.concatenate([np.ravel(t) for t in tables(trained[name][0], seed, kl)])).all()
                  for name in trained]
        if not all(finite):
            log(f"  seed {seed}: left out, an agent's tables are not finite (diverged: lower --lr or --alpha-y)")
            continue
        pi, y, v_td, visits = tables(trained["learned rule"][0], seed, kl)
        states = np.flatnonzero(reachable & (visits >= args.min_visits))
        values = y_analysis.true_values(mdp, pi, discounts)[:, states]  # [D, N]
        _, y_control, _, visits_control = tables(trained["untrained rule"][0], seed, kl)
        states_control = np.flatnonzero(reachable & (visits_control >= args.min_visits))
        pi_control = tables(trained["untrained rule"][0], seed, kl)[0]
        values_control = y_analysis.true_values(mdp, pi_control, discounts)[:, states_control]
        if min(len(states), len(states_control)) < MIN_STATES:
            fail(f"seed {seed}: only {min(len(states), len(states_control))} states were "
                             f"visited at least {args.min_visits} times (need {MIN_STATES}); lower --min-visits "
                             "or raise --updates")
        key, k = jax.random.split(key)
        fits = {
            FEATURES[0]: (y_analysis.regression_r2(y[states], values, k, args.train_fraction), values, states),
            FEATURES[1]: (y_analysis.regression_r2(v_td[states, None], values, k, args.train_fraction), values, states),
            FEATURES[2]: (y_analysis.regression_r2(y_control[states_control], values_control, k, args.train_fraction),
                          values_control, states_control),
        }
        td_error = float(np.sqrt(np.mean((v_td[states] - values[0]) ** 2)))
        per_seed.append({"fits": fits, "num_states": len(states), "num_states_control": len(states_control),
                         "td_rmse_at_training_discount": td_error})
        log(f"  seed {seed}: {len(states)} visited states; R² " + "; ".join(
            f"{name}: " + " ".join(f"{r:.3f}" for r in fit[0]["r2"]) for name, fit in fits.items()))

    if not per_seed:
        fail("every seed diverged (non-finite agent tables); lower --lr or --alpha-y")
    summary = {}
    for name in FEATURES:
        r2 = np.array([s["fits"][name][0]["r2"] for s in per_seed])  # [seeds, D]
        summary[name] = {"r2_per_seed": r2.tolist(),
                         "r2_mean": [ev_lib.confidence_interval(r2[:, d])[0] for d in range(len(discounts))],
                         "r2_ci95": [ev_lib.confidence_interval(r2[:, d])[1] for d in range(len(discounts))]}
    agreement = agreement_check(ev, mdp, rule_config, {"learned rule": rule_params, "untrained rule": untrained},
                                reachable, args, kl)
    results = {
        "command": "python -m experiments.analyse_y " + shlex.join(args.argv),
        "rule": str(args.rule), "rule_config": dataclasses.asdict(rule_config), "env": args.env,
        "training_discount": args.discount, "eval_discounts": discounts,
        "settings": {k: v for k, v in vars(args).items() if k not in ("argv", "out", "rule")},
        "num_states": int(mdp.num_states), "reachable_states": int(reachable.sum()),
        "seeds_analysed": len(per_seed),
        "visited_states_per_seed": [s["num_states"] for s in per_seed],
        "visited_states_per_seed_untrained_rule": [s["num_states_control"] for s in per_seed],
        "td_rmse_at_training_discount": [s["td_rmse_at_training_discount"] for s in per_seed],
        "final_return": {name: {"mean": rep["final_mean"], "ci95": rep["final_ci95"]}
                         for name, (_, rep) in trained.items()},
        "r2": summary,
        "agreement": agreement,
    }
    return results, per_seed


def agreement_check(ev, mdp, rule_config, rules: dict, reachable, args, kl: bool) -> dict:
    """The paper's agreement check: --pairs pairs of agents with y tables drawn independently from
    [0, 1] are trained by the same rule on the same level; y_disagreement of each pair over the
    states both visited at least --min-visits times (2 at init by construction, 0 = they predict
    the same), against the same check for the untrained rule."""
    log(f"agreement: {args.pairs} pair(s) of agents with independently drawn y tables per rule")
    trained = train_agents(ev, rule_config, rules, args, num_seeds=2 * args.pairs, random_y=True)
    rng = np.random.default_rng(args.seed)
    out = {}
    for name, (state, _) in trained.items():
        finals, inits = [], []
        for pair in range(args.pairs):
            a, b = (tables(state, 2 * pair + i, kl) for i in range(2))
            both = np.flatnonzero(reachable & (a[3] >= args.min_visits) & (b[3] >= args.min_visits))
            if len(both) < 2 or not (np.isfinite(a[1]).all() and np.isfinite(b[1]).all()):
                continue
            finals.append(y_analysis.y_disagreement(a[1][both], b[1][both]))
            inits.append(y_analysis.y_disagreement(*rng.uniform(size=(2, len(both), a[1].shape[1]))))
        out[name] = {"disagreement_final": finals, "disagreement_init": inits,
                     "mean": float(np.mean(finals)) if finals else None,
                     "ci95": ev_lib.confidence_interval(finals)[1] if len(finals) > 1 else None}
        log(f"  {name}: final disagreement " + ", ".join(f"{d:.3f}" for d in finals)
            + f" (at init {np.mean(inits):.2f})" if finals else f"  {name}: no pair with shared visited states")
    return out


def table(results: dict) -> str:
    ds = results["eval_discounts"]
    lines = ["| regressed from | " + " | ".join(f"R² at γ={d:g}" for d in ds) + " |",
             "| --- | " + " | ".join("---" for _ in ds) + " |"]
    for name, r in results["r2"].items():
        cells = [f"{m:.3f}" + ("" if not np.isfinite(h) else f" ± {h:.3f}")
                 for m, h in zip(r["r2_mean"], r["r2_ci95"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_table(results: dict) -> str:
    """Disagreement of y between independently initialised agents (0 = the same predictions)."""
    lines = ["| rule | y disagreement at init | after training (per pair) | mean ± 95% CI |",
             "| --- | --- | --- | --- |"]
    for name, r in results["agreement"].items():
        if not r["disagreement_final"]:
            lines.append(f"| {name} | – | no pair with shared visited states | – |")
            continue
        ci = "" if r["ci95"] is None else f" ± {r['ci95']:.3f}"
        lines.append(f"| {name} | {np.mean(r['disagreement_init']):.2f} | "
                     + ", ".join(f"{d:.3f}" for d in r["disagreement_final"]) + f" | {r['mean']:.3f}{ci} |")
    return "\n".join(lines)


def plot(results: dict, per_seed: list, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = results["eval_discounts"]
    names = FEATURES[:2]
    fig, axes = plt.subplots(len(names), len(ds), figsize=(3.2 * len(ds), 3.1 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        fit, values, _ = per_seed[0]["fits"][name]
        for col, d in enumerate(ds):
            ax = axes[row, col]
            truth = values[col, fit["test"]]
            ax.scatter(truth, fit["predictions"][col], s=6, alpha=0.6)
            both = np.concatenate([truth, fit["predictions"][col]])
            lo, hi = float(both.min()), float(both.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{name}, γ={d:g}: R²={fit['r2'][col]:.3f}", fontsize=8)
            ax.set_xlabel("true V_γ(s) (held-out states)", fontsize=8)
            if col == 0:
                ax.set_ylabel("MLP prediction", fontsize=8)
    fig.suptitle(f"{results['env']}: MLP(features) -> V_γ of the final policy, seed 0 "
                 f"(training γ={results['training_discount']:g})", fontsize=9)
    fig.tight_layout()
    paths = [out / "y_fits.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, r in results["r2"].items():
        m, h = np.array(r["r2_mean"]), np.nan_to_num(np.array(r["r2_ci95"], float))
        ax.errorbar(range(len(ds)), m, yerr=h, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(ds)), [f"{d:g}" for d in ds])
    ax.set_xlabel("discount γ of the true values")
    ax.set_ylabel("held-out R²")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['env']}: R² (mean ± 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    paths.append(out / "y_r2.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """What the y analysis runs (`--preset`, `--set key=value` or the flag of the same name).
    Fields left None are derived from the rule's meta-training config (RUN_DIR/config.json)."""

    env: str = "tabular_dense"
    seeds: int = 3
    pairs: int = 3
    updates: int = 1000
    num_envs: int = 64
    rollout_len: int = 20
    discount: float = 0.995
    lr: float | None = None
    alpha_y: float | None = None
    eval_discounts: tuple[float, ...] | None = None
    td_lambda: float = 0.95
    td_step_size: float = 0.2
    min_visits: int = 100
    train_fraction: float = 0.75
    seed: int = 0
    untrained_seed: int = 12345

    def __post_init__(self):
        validate(self, [
            (min(self.seeds, self.pairs, self.updates, self.num_envs, self.rollout_len, self.min_visits) >= 1,
             "seeds, pairs, updates, num_envs, rollout_len and min_visits must be >= 1"),
            (0.0 < self.train_fraction < 1.0, "train_fraction must be in (0, 1)"),
            (0.0 <= self.discount <= 1.0 and 0.0 <= self.td_lambda <= 1.0, "discount and td_lambda must be in [0, 1]"),
        ])


ANALYSIS_PRESETS = {
    "default": AnalysisSettings(),  # results/lpg/y_analysis
    "quick": AnalysisSettings(seeds=2, pairs=1, updates=300),
}
ANALYSIS_HELP = {
    "env": "a tabular level with an exact MDP: a tabular_* grid, a chain, generated_heldout, ...",
    "seeds": "agents trained (one analysis each)",
    "pairs": "pairs of agents with independently drawn y tables for the agreement check",
    "updates": "agent updates per lifetime",
    "discount": "training discount of the agents and the TD table",
    "lr": "agent SGD learning rate on the mean loss (derived: middle of the rule's meta-training choices, else 40)",
    "alpha_y": "α_y (derived: middle of the rule's meta-training choices, else 0.5)",
    "eval_discounts": "discounts of the true values (derived: the training discount, 0.99, 0.95, 0.9)",
    "td_lambda": "λ of the TD(λ) baseline table",
    "td_step_size": "TD(λ) step size on the per-state mean TD error of a batch",
    "min_visits": "states the agent visited fewer times in its lifetime are left out (1 = every visited state)",
    "train_fraction": "share of states the MLP is fitted on",
    "untrained_seed": "PRNG seed of the untrained-rule control",
}


def parse_args(argv=None):
    parser = Parser(__doc__)
    parser.add_argument("--rule", required=True, help="a rule written by meta-training (RUN_DIR/rule.msgpack)")
    add_settings_args(parser, ANALYSIS_PRESETS, "default", ANALYSIS_HELP,
                      run_dir_help="output folder (default: RUN_DIR/y_analysis of the rule); a finished analysis "
                                   "with the same settings is shown, not redone")
    args = parser.parse_args(argv)
    settings_from_args(args, ANALYSIS_PRESETS)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    check_rule_and_envs(args.rule, [args.env])
    hypers = training_hypers(Path(args.rule)) or {}
    if args.lr is None:
        args.lr = middle_choice(hypers.get("learning_rates"), 40.0)
    if args.alpha_y is None:
        args.alpha_y = middle_choice(hypers.get("alpha_ys"), 0.5)
    if args.eval_discounts is None:
        args.eval_discounts = [args.discount] + [d for d in (0.99, 0.95, 0.9) if d != args.discount]
    args.out = output_dir(args, Path(args.rule).parent / "y_analysis", RESULTS_DIR)
    return args


def resolved_settings(args) -> dict:
    """The settings after derivation, with the rule's bytes: a finished analysis with these is not redone."""
    names = [f.name for f in dataclasses.fields(AnalysisSettings)]
    return json.loads(json.dumps({**{name: getattr(args, name) for name in names},
                                  "rule_sha256": hashlib.sha256(Path(args.rule).read_bytes()).hexdigest()[:16]}))


@entry_point
def main(argv=None):
    args = parse_args(argv)
    done = args.out / "y_analysis.json"
    if done.exists() and not args.no_resume:
        saved = json.loads(done.read_text())
        if saved.get("settings") == resolved_settings(args):
            print(table(saved) + "\n\n" + agreement_table(saved))
            log(f"already done with these settings: {done} (pass --no-resume to redo it)")
            return
        fail(f"{done} holds an analysis with other settings "
             f"({'; '.join(config_differences(saved.get('settings'), resolved_settings(args))[:3])}): pick another "
             f"--run-dir, or pass --no-resume to redo it there")
    results, per_seed = analyse(args)
    results["settings"] = resolved_settings(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "y_analysis.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results) + "\n\n" + agreement_table(results)
    (args.out / "summary.md").write_text(
        f"# y analysis on {results['env']}\n\nCommand: `{results['command']}`\n\n"
        f"Held-out R² of a 1-hidden-layer MLP regressing true values V_γ of the final policy "
        f"(mean ± 95% CI over {args.seeds} seed(s)), then the agreement check:\n\n{text}\n")
    paths = plot(results, per_seed, args.out)
    print(text)
    log(f"wrote {args.out / 'y_analysis.json'}, {args.out / 'summary.md'}, " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
