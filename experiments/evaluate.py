"""Evaluate learned LPG rules on a held-out suite: whole lifetimes of fresh agents, against A2C and
an untrained rule, as normalised scores with bootstrap intervals.

    python -m experiments.evaluate --rule runs/meta_quick/rule.msgpack
    python -m experiments.evaluate --rule runs/seed0/rule.msgpack runs/seed1/rule.msgpack runs/seed2/rule.msgpack
    python -m experiments.evaluate --rule RUN/rule.msgpack --envs generated_heldout chain_long Breakout-MinAtar
    python -m experiments.evaluate --rule RUN/rule.msgpack --preset quick     # a first look in a few minutes
    python -m experiments.evaluate --rule M0/rule.msgpack M1/rule.msgpack ES0/rule.msgpack --labels meta meta ES

Suite (default --envs, `lpg.evaluate.HELDOUT_SUITE`): generated_heldout (generator levels whose
descriptors no training source and no named grid uses), chain_heldout (delayed chains of 31-50
steps, longer than any chain_short), Catch-bsuite and DeepSea-bsuite (gymnax, never in
meta-training; why DeepSea: see lpg/evaluate.py). Any other environment name works too. A rule
whose RUN_DIR/config.json lists a meta-training source that overlaps the suite gets a warning.

--rule takes one rule per meta-seed; --labels names the method of each (rules sharing a name are
pooled), to compare methods side by side on the same levels. On every environment, --levels levels x --seeds seeds of
fresh agents (a single-level environment: --levels groups of --seeds lifetimes) are trained by
A2C and an untrained rule (a fresh `init_rule` of the first rule's RuleConfig; `--untrained false`
leaves it out), once, and by
each rule. Every learner picks its learning rate per environment, from a candidate set of the
same size as every other learner's, by the best mean score on selection lifetimes (same levels,
seeds disjoint from the reported ones; a rate that lost selection lifetimes to non-finite values
only wins over rates that lost more); the reported lifetimes are fresh (a learner given one
candidate runs no selection lifetimes; where 1 is the best A2C, it is then A2C's reported
lifetimes, which score 1 by construction). Candidates: LPG tables
(SGD on the mean loss) the rule's meta-training rates (config.json hypers.learning_rates, else
20 40 80), LPG networks (Adam) hypers.network_learning_rates, else 2e-3 5e-3 1e-2 2e-2; A2C tables
10 20 40, A2C networks 2e-3 5e-3 1e-2 2e-2 (spread geometrically over the same range when LPG's set
has another size and A2C's was not given). `--baselines A2C PPO` adds PPO (lpg/ppo.py, with A2C's
network, optimiser, γ, λ and costs; 4 epochs x 4 minibatches, clip 0.2), chosen the same way from
tables 2.5 5 10, networks 5e-4 1e-3 2e-3 5e-3 (or --ppo-lrs / --ppo-lrs-network); scores stay
normalised to the optimum or the best A2C. Lifetimes default to the meta-training lifetimes
(config.json lifetime_updates, num_envs, rollout_len), else 250 updates x 32 envs x 20 steps.

Scores: 0 = the uniform random policy, 1 = the optimal policy (exact planning where the level has
an exact MDP) or else the best A2C; seeds are averaged per level, the suite is summarised by the
IQM over levels with stratified-bootstrap 95% intervals (levels resampled within environments),
per meta-seed and pooled; chains also report the levels solved (score >= 0.9) by length, and every
learner the lifetimes whose agent parameters or returns ended non-finite and, for network agents,
the share of hidden units left off at the end (noted where >= 90%: a rate too high can switch a
network's units off for good). See lpg/evaluate.py.

Writes OUT/results.json (all numbers), OUT/summary.md (the tables), OUT/suite.png (scores of every
learner on the suite), learning curves OUT/curves.png and OUT/curves_<env>.png. OUT is --out, else --run-dir, else the
first rule's RUN_DIR/eval; never under the committed results/ unless --out says so. OUT/progress.json
keeps every finished environment: a rerun with the same settings resumes after them (a finished
evaluation only rebuilds its tables); --no-resume starts over. `--from-results OUT/results.json
--run-dir DIR` rebuilds the suite scores and tables of any earlier evaluation (e.g. a committed one,
without its progress.json) with this code's statistics, running no lifetime. Settings: --preset heldout (default)
or quick (2 levels x 2 seeds of the grid and chain environments), --set key=value or the flag of
the same name (--help lists them).

Run time of the default suite (8 levels x 3 seeds, 4 environments) on the 2-core CPU: three rules
of the `cpu` preset (100 updates x 32 envs x 20 steps) took 6.3 minutes, measured
(results/lpg/eval). With 250-update lifetimes about 11 minutes for one rule plus about 3 per
further rule, scaled from shorter runs made while a meta-training run held one core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.cli import (Parser, add_settings_args, check_rule_and_envs, entry_point, fail, output_dir,
                             settings_from_args)
from experiments.presets import A2C_PRESETS
from lpg import evaluate as ev_lib
from lpg.a2c import A2CConfig
from lpg.agents import AGENT_KINDS, AUX_INITS
from lpg.config import validate
from lpg.ppo import PPOConfig
from lpg.runs import config_differences
from lpg.update_rule import PI_HAT_BASELINES, init_rule, load_rule

DEFAULT_LIFETIME = {"lifetime_updates": 250, "num_envs": 32, "rollout_len": 20}
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"  # committed results: written only when --out says so
A2C, PPO, UNTRAINED = "A2C", "PPO", "untrained rule"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_config(rule_path: Path) -> dict:
    """The rule's meta-training config (RUN_DIR/config.json), or {} if there is none."""
    config_path = Path(rule_path).parent / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def training_hypers(rule_path: Path) -> dict | None:
    """The hyperparameter choices the rule was meta-trained with (RUN_DIR/config.json), if present."""
    hypers = run_config(rule_path).get("hypers")
    return hypers if isinstance(hypers, dict) else None


def middle_choice(values, fallback):
    return float(sorted(values)[len(values) // 2]) if values else fallback


def a2c_config(tabular: bool) -> A2CConfig:
    """A2C with the presets' tuned settings: tables by SGD ("quick"), networks by Adam ("random_small")."""
    return A2C_PRESETS["quick"][1] if tabular else dataclasses.replace(A2C_PRESETS["random_small"][1], agent="auto")


def ppo_config(a2c: A2CConfig) -> PPOConfig:
    """PPO with A2C's agent, optimiser, discount, λ and costs, and PPO's own defaults (4 epochs x 4
    minibatches, clip 0.2, normalised advantages, max grad norm 0.5)."""
    return PPOConfig(discount=a2c.discount, gae_lambda=a2c.gae_lambda, optimizer=a2c.optimizer, agent=a2c.agent,
                     hidden=a2c.hidden, entropy_cost=a2c.entropy_cost, value_cost=a2c.value_cost)


def settings_for(ev: ev_lib.EvalEnv, args) -> ev_lib.AgentSettings:
    if ev.tabular:
        a2c = a2c_config(True)
        settings = ev_lib.AgentSettings("tabular", "sgd", args.discount, args.alpha_y, a2c)
    else:
        # The same network as LPG's agents: torso `args.network`, width `args.hidden`.
        a2c = dataclasses.replace(a2c_config(False), hidden=args.hidden, agent=args.network)
        settings = ev_lib.AgentSettings(args.network, "adam", args.discount, args.alpha_y, a2c, hidden=args.hidden)
    return dataclasses.replace(settings, ppo=ppo_config(a2c) if PPO in args.baselines else None)


def format_cell(report: dict) -> str:
    """A `lpg.evaluate.final_report` as `mean ± CI` (used by analyse_y)."""
    mean, half = report["final_mean"], report["final_ci95"]
    text = "no episode ended" if mean is None else f"{mean:.3f}" + ("" if half is None else f" ± {half:.3f}")
    missing = report["lifetimes_without_final_episode"]
    if missing and mean is not None:
        text += f" ({missing} of {report['lifetimes']} lifetimes ended no episode)"
    return text


# ------------------------------------------------------------------------------ flags
def rule_learning_rates(rule_path: Path, args) -> ev_lib.LearningRates:
    """LPG candidates: the flags, else the rule's meta-training rates, else the defaults."""
    hypers = training_hypers(rule_path) or {}
    pick = lambda flag, key, default: tuple(flag or hypers.get(key) or default)  # noqa: E731
    return ev_lib.LearningRates(
        tabular=pick(args.lpg_lrs, "learning_rates", ev_lib.LPG_LEARNING_RATES.tabular),
        network=pick(args.lpg_lrs_network, "network_learning_rates", ev_lib.LPG_LEARNING_RATES.network))


BASELINE_RATES = {A2C: ("a2c", ev_lib.A2C_LEARNING_RATES), PPO: ("ppo", ev_lib.PPO_LEARNING_RATES)}


def baseline_learning_rates(name: str, lpg: ev_lib.LearningRates, args) -> tuple[ev_lib.LearningRates, list[str]]:
    """A baseline's (A2C's, PPO's) candidates: its flags, else its defaults, spread over the
    defaults' range to LPG's set size."""
    flag, defaults = BASELINE_RATES[name]
    notes, rates = [], {}
    for kind in ("tabular", "network"):
        given, default, n = getattr(args, f"{flag}_lrs{'' if kind == 'tabular' else '_network'}"), \
            getattr(defaults, kind), len(getattr(lpg, kind))
        if given:
            rates[kind] = tuple(given)
        elif n != len(default):
            rates[kind] = ev_lib.geometric_candidates(min(default), max(default), n)
            notes.append(f"{name} {kind} candidates {list(rates[kind])}: the default range "
                         f"{min(default):g}-{max(default):g} in {n} steps, to match LPG's {n} candidates")
        else:
            rates[kind] = default
    return ev_lib.LearningRates(**rates), notes


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What an evaluation runs (`--preset`, `--set key=value` or the flag of the same name).

    Fields left None are derived from the first rule's meta-training config (RUN_DIR/config.json).
    """

    envs: tuple[str, ...] = ev_lib.HELDOUT_SUITE
    levels: int = 8
    seeds: int = 3
    updates: int | None = None
    num_envs: int | None = None
    rollout_len: int | None = None
    discount: float | None = None
    alpha_y: float | None = None
    lpg_lrs: tuple[float, ...] | None = None
    a2c_lrs: tuple[float, ...] | None = None
    lpg_lrs_network: tuple[float, ...] | None = None
    a2c_lrs_network: tuple[float, ...] | None = None
    baselines: tuple[str, ...] = (A2C,)
    ppo_lrs: tuple[float, ...] | None = None
    ppo_lrs_network: tuple[float, ...] | None = None
    hidden: int | None = None
    network: str = "auto"  # torso of every network agent (LPG's and the baselines'): NETWORK_KINDS
    # How agents use the rules (RuleConfig fields that change no parameter): None keeps each rule's own.
    y_init: str | None = None
    pi_hat_baseline: str | None = None
    curve_points: int = 20
    bootstrap: int = 2000
    seed: int = 0
    untrained: bool = True  # also run an untrained rule (a fresh init of the first rule's RuleConfig)
    untrained_seed: int = 12345

    def __post_init__(self):
        validate(self, [
            (len(self.envs) >= 1, "envs must name at least one environment"),
            (A2C in self.baselines and set(self.baselines) <= set(BASELINE_RATES),
             f"baselines must include {A2C} (the reference of the scores) and be among {list(BASELINE_RATES)}"),
            (all(getattr(self, name) is None or getattr(self, name) >= 1 for name in (
                "levels", "seeds", "updates", "num_envs", "rollout_len", "curve_points", "bootstrap", "hidden")),
             "levels, seeds, updates, num_envs, rollout_len, curve_points, bootstrap and hidden must be >= 1"),
            (self.y_init is None or self.y_init in AUX_INITS, f"y_init must be one of {list(AUX_INITS)}"),
            (self.network in NETWORK_KINDS, f"network must be one of {list(NETWORK_KINDS)}, got {self.network!r}"),
            (self.pi_hat_baseline is None or self.pi_hat_baseline in PI_HAT_BASELINES,
             f"pi_hat_baseline must be one of {list(PI_HAT_BASELINES)}"),
        ])


NETWORK_KINDS = tuple(kind for kind in AGENT_KINDS if kind != "tabular")  # table environments always get tables
RULE_USE_FIELDS = ("y_init", "pi_hat_baseline")  # EvalSettings fields that replace the rules' own

EVAL_PRESETS = {
    "heldout": EvalSettings(),  # the held-out suite, 8 levels x 3 seeds (results/lpg/eval)
    "quick": EvalSettings(envs=("generated_heldout", "chain_heldout"), levels=2, seeds=2, bootstrap=500),
}
EVAL_HELP = {
    "envs": "environments: level sources, named grids, chains, gymnax names",
    "levels": "levels per environment (single-level environments: groups of lifetimes)",
    "seeds": "lifetimes per level",
    "updates": f"agent updates per lifetime (derived: the rule's lifetime_updates, else {DEFAULT_LIFETIME['lifetime_updates']})",
    "num_envs": f"environments per agent (derived: meta-training's, else {DEFAULT_LIFETIME['num_envs']})",
    "rollout_len": f"steps per rollout (derived: meta-training's, else {DEFAULT_LIFETIME['rollout_len']})",
    "discount": "LPG discount γ, also the γ of exact planning (derived: middle of the rule's choices, else 0.995)",
    "alpha_y": "LPG α_y (derived: middle of the rule's meta-training choices, else 0.5)",
    "lpg_lrs": "LPG's candidate rates for table agents (SGD) (derived: the rule's hypers.learning_rates, else "
               + " ".join(f"{r:g}" for r in ev_lib.LPG_LEARNING_RATES.tabular) + ")",
    "a2c_lrs": "A2C's candidate rates for table agents (derived: " + " ".join(f"{r:g}" for r in ev_lib.A2C_LEARNING_RATES.tabular)
               + ", spread to LPG's set size)",
    "lpg_lrs_network": "LPG's candidate rates for network agents (Adam) (derived: the rule's "
                       "hypers.network_learning_rates, else " + " ".join(f"{r:g}" for r in ev_lib.LPG_LEARNING_RATES.network) + ")",
    "a2c_lrs_network": "A2C's candidate rates for network agents (derived: "
                       + " ".join(f"{r:g}" for r in ev_lib.A2C_LEARNING_RATES.network) + ", spread to LPG's set size)",
    "baselines": f"hand-designed learners to run: {A2C} (always; the reference of the scores) and optionally {PPO}",
    "ppo_lrs": "PPO's candidate rates for table agents (with --baselines A2C PPO; derived: "
               + " ".join(f"{r:g}" for r in ev_lib.PPO_LEARNING_RATES.tabular) + ", spread to LPG's set size)",
    "ppo_lrs_network": "PPO's candidate rates for network agents (derived: "
                       + " ".join(f"{r:g}" for r in ev_lib.PPO_LEARNING_RATES.network) + ", spread to LPG's set size)",
    "hidden": "hidden width of network agents (derived: the rule's agent_hidden, else 64)",
    "network": "torso of every network agent, LPG's and the baselines' alike: auto (conv for [H, W, C] maps such "
               "as MinAtar's, else an MLP), mlp (maps flattened) or conv",
    "y_init": "how LPG network agents' y head starts, for every rule: lecun (at random) or zeros (y = 0 at every "
              "state) (derived: each rule's RuleConfig.y_init)",
    "pi_hat_baseline": "what LPG agents subtract from π̂, for every rule: " + ", ".join(PI_HAT_BASELINES)
                       + " (lpg/update_rule.py; derived: each rule's RuleConfig.pi_hat_baseline)",
    "curve_points": "points per learning curve",
    "bootstrap": "bootstrap resamples per interval",
    "untrained": "also run an untrained rule, the control (a fresh init of the first rule's RuleConfig)",
    "untrained_seed": "PRNG seed of the untrained rule",
}


def parse_args(argv=None):
    parser = Parser(__doc__)
    parser.add_argument("--rule", nargs="+", required=True, metavar="RULE",
                        help="rules written by meta-training (RUN_DIR/rule.msgpack), one per meta-seed")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="a name per rule, to compare methods: rules that share a name are meta-seeds of one "
                             "method, reported as NAME #k and pooled as NAME (pooled) (default: LPG for every rule)")
    add_settings_args(parser, EVAL_PRESETS, "heldout", EVAL_HELP,
                      run_dir_help="output folder (default: the first rule's RUN_DIR/eval); a rerun with the same "
                                   "settings resumes after the environments already done")
    args = parser.parse_args(argv)
    settings_from_args(args, EVAL_PRESETS)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    for i, rule in enumerate(args.rule):
        check_rule_and_envs(rule, args.envs if i == 0 else [])
    args.rule = [Path(r) for r in args.rule]
    args.labels = args.labels or ["LPG"] * len(args.rule)
    if len(args.labels) != len(args.rule):
        fail(f"--labels gives {len(args.labels)} name(s) for {len(args.rule)} rule(s); give one name per rule")
    reserved = [n for n in args.labels if n in (A2C, PPO, UNTRAINED) or n.endswith("(pooled)") or not n.strip()]
    if reserved:
        fail(f"--labels {reserved[0]!r} is not allowed: names must be non-empty and not {A2C!r}, {PPO!r}, "
             f"{UNTRAINED!r} or end in '(pooled)'")
    config = run_config(args.rule[0])
    for flag, key in (("updates", "lifetime_updates"), ("num_envs", "num_envs"), ("rollout_len", "rollout_len")):
        if getattr(args, flag) is None:
            setattr(args, flag, int(config.get(key, DEFAULT_LIFETIME[key])))
    if args.hidden is None:
        args.hidden = int(config.get("agent_hidden", 64))
    hypers = config.get("hypers") or {}
    if args.discount is None:
        args.discount = middle_choice(hypers.get("discounts"), 0.995)
    if args.alpha_y is None:
        args.alpha_y = middle_choice(hypers.get("alpha_ys"), 0.5)
    try:
        args.lpg_rates = [rule_learning_rates(rule, args) for rule in args.rule]
        args.a2c_rates, args.notes = baseline_learning_rates(A2C, args.lpg_rates[0], args)
        args.ppo_rates = None
        if PPO in args.baselines:
            args.ppo_rates, notes = baseline_learning_rates(PPO, args.lpg_rates[0], args)
            args.notes += notes
        for rule, rates in zip(args.rule, args.lpg_rates):
            for name, baseline in ((A2C, args.a2c_rates), (PPO, args.ppo_rates)):
                try:
                    if baseline is not None:
                        ev_lib.check_candidate_sets(rates, baseline, name)
                except ValueError as e:
                    raise ValueError(f"--rule {rule}: {e} (set them with --lpg-lrs / --{name.lower()}-lrs and the "
                                     f"-network flags)")
        if PPO in args.baselines:
            try:
                dataclasses.replace(ppo_config(a2c_config(False)), num_envs=args.num_envs)
            except ValueError as e:
                raise ValueError(f"--baselines {PPO}: {e}; PPO splits each lifetime's --num-envs into minibatches")
    except ValueError as e:
        fail(str(e))
    args.out = output_dir(args, args.rule[0].parent / "eval", RESULTS_DIR)
    return args


def run_warnings(args) -> list[str]:
    """Meta-training sources that overlap the suite, and rules whose lifetimes differ from the evaluated ones."""
    found = []
    for rule in args.rule:
        config = run_config(rule)
        for text in ev_lib.training_overlap(config.get("envs") or [], args.envs):
            found.append(f"{rule}: {text}; that environment is not held out for this rule")
        for flag, key in (("updates", "lifetime_updates"), ("num_envs", "num_envs"), ("rollout_len", "rollout_len")):
            if key in config and int(config[key]) != getattr(args, flag):
                found.append(f"{rule}: meta-trained with {key} {config[key]}, evaluated with {getattr(args, flag)}")
    return found


# ------------------------------------------------------------------------------ the run
def labels_for(names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Each rule's label, and the pooled groups: rules that share a name are meta-seeds of one
    method, labelled `NAME #k` and pooled as `NAME (pooled)`; a name given once is its own label."""
    seen = {name: 0 for name in names}
    labels = []
    for name in names:
        seen[name] += 1
        labels.append(name if names.count(name) == 1 else f"{name} #{seen[name]}")
    pooled = {f"{name} (pooled)": [label for label, n in zip(labels, names) if n == name]
              for name in seen if names.count(name) > 1}
    return labels, pooled


def evaluate(args) -> dict:
    loaded = [load_rule(rule) for rule in args.rule]
    use = {field: getattr(args, field) for field in RULE_USE_FIELDS if getattr(args, field) is not None}
    loaded = [(params, dataclasses.replace(config, **use)) for params, config in loaded]
    labels, pooled = labels_for(args.labels)
    rules = [ev_lib.RuleUnderTest(label, params, config, rates)
             for label, (params, config), rates in zip(labels, loaded, args.lpg_rates)]
    first_config = loaded[0][1]
    if args.untrained:
        rules.append(ev_lib.RuleUnderTest(UNTRAINED, init_rule(first_config, jax.random.PRNGKey(args.untrained_seed)),
                                          first_config, args.lpg_rates[0]))
    config = ev_lib.LifetimeConfig(num_updates=args.updates, num_envs=args.num_envs, rollout_len=args.rollout_len,
                                   num_seeds=args.seeds, curve_points=min(args.curve_points, args.updates))
    warnings = run_warnings(args)
    for text in args.notes:
        log(text)
    for text in warnings:
        log(f"WARNING: {text}")
    results = {
        "command": "python -m experiments.evaluate " + shlex.join(args.argv),
        "rules": {label: str(rule) for label, rule in zip(labels, args.rule)},
        "rule_configs": {label: dataclasses.asdict(c) for label, (_, c) in zip(labels, loaded)},
        "untrained_rule": {"config_of": labels[0], "seed": args.untrained_seed} if args.untrained else None,
        "lifetime": dataclasses.asdict(config),
        "lpg": {"discount": args.discount, "alpha_y": args.alpha_y,
                "learning_rates": {label: dataclasses.asdict(r) for label, r in zip(labels, args.lpg_rates)}},
        "a2c_learning_rates": dataclasses.asdict(args.a2c_rates),
        "networks": {"kind": args.network, "hidden": args.hidden},  # every learner's network agents
        **({"ppo_learning_rates": dataclasses.asdict(args.ppo_rates)} if args.ppo_rates is not None else {}),
        "baselines": list(args.baselines), "suite": list(args.envs), "warnings": warnings, "notes": args.notes, "pooled": pooled,
        "solved_threshold": ev_lib.SOLVED, "envs": {},
    }
    start = time.time()
    done = resumed_envs(args, results)
    key = jax.random.PRNGKey(args.seed)
    for i, name in enumerate(args.envs):
        key, k_levels, k_env = jax.random.split(key, 3)
        if name in done:
            results["envs"][name] = done[name]
            log(f"[{i + 1}/{len(args.envs)}] {name}: done in an earlier run ({args.out / PROGRESS})")
            continue
        ev = ev_lib.eval_env(name, args.levels, k_levels)
        s = settings_for(ev, args)
        log(f"[{i + 1}/{len(args.envs)}] {name}: {ev.num_levels} {'group' if ev.single_level else 'level'}(s) x "
            f"{args.seeds} seed(s), {args.updates} updates of {config.steps_per_update} steps, "
            f"{'tabular/SGD' if ev.tabular else f'{s.agent} net/Adam'}, {len(loaded)} rule(s) "
            f"({time.time() - start:.0f}s so far)")
        result = ev_lib.evaluate_env(ev, rules, args.a2c_rates, s, config, k_env, log, args.bootstrap,
                                     ppo_rates=args.ppo_rates)
        for group, members in pooled.items():
            result["learners"][group], result["score_ratio_to_A2C"][group] = ev_lib.pooled_scores(
                result, members, args.bootstrap)
        results["envs"][name] = result
        save_progress(args, results)
        log("    normalised scores: " + ", ".join(
            f"{label} {fmt(r.get('score_mean'))}" for label, r in result["learners"].items()))
    results["suite_scores"] = ev_lib.aggregate(results["envs"], suite_groups(results), args.bootstrap)
    results["seconds"] = time.time() - start
    return results


def suite_groups(results: dict) -> dict[str, list[str]]:
    """The learners the suite scores summarise: each rule, each pooled method, the baselines and the untrained rule."""
    groups = {label: [label] for label in results["rules"]}
    groups.update(results["pooled"])
    untrained = [UNTRAINED] if results["untrained_rule"] is not None else []
    groups.update({name: [name] for name in (*results.get("baselines", [A2C]), *untrained)})
    return groups


def from_results(argv: list[str]) -> None:
    """`--from-results RESULTS_JSON (--run-dir DIR | --out DIR) [--bootstrap N]`: an earlier evaluation's
    suite scores and tables rebuilt by this code from its saved per-level scores (no lifetime is run)."""
    parser = Parser("Rebuild an evaluation's suite scores and tables (summary.md, results.json, plots) from "
                    "its results.json, with this code's statistics; no lifetime is run.")
    parser.add_argument("--from-results", required=True, metavar="RESULTS_JSON", type=Path)
    parser.add_argument("--run-dir", help="output folder (not under the committed results/)")
    parser.add_argument("--out", help="output folder, anywhere")
    parser.add_argument("--bootstrap", type=int, default=EvalSettings.bootstrap,
                        help="bootstrap resamples per suite interval (the earlier run's, if it set one)")
    args = parser.parse_args(argv)
    if not (args.run_dir or args.out):
        fail("--from-results needs --run-dir or --out: where to write the rebuilt tables")
    if not args.from_results.is_file():
        fail(f"--from-results {args.from_results}: no such file (an evaluation writes OUT/results.json)")
    out = output_dir(args, Path(), RESULTS_DIR)
    results = json.loads(args.from_results.read_text())
    results["suite_scores"] = ev_lib.aggregate(results["envs"], suite_groups(results), args.bootstrap)
    command = "python -m experiments.evaluate " + shlex.join(argv)
    results["notes"] = [*results.get("notes", []), f"Suite scores rebuilt from {args.from_results} by `{command}`."]
    print(write_outputs(results, out))
    log(f"wrote {out / 'results.json'}, {out / 'summary.md'} and the plots")


# ------------------------------------------------------------------------------ resume
PROGRESS = "progress.json"  # environments finished so far, with what they were run with
NETWORK_DEFAULTS = {"kind": "auto", "hidden": 64}


def fingerprint(args, results: dict) -> dict:
    """Everything the numbers depend on: the resolved settings and the rules' bytes."""
    rules = {label: hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] for label, path in results["rules"].items()}
    keys = ("rule_configs", "untrained_rule", "lifetime", "lpg", "a2c_learning_rates", "ppo_learning_rates")
    # Network settings enter only away from their defaults, so that runs made before they were
    # recorded still resume.
    network = {k: v for k, v in results.get("networks", {}).items() if v != NETWORK_DEFAULTS[k]}
    return json.loads(json.dumps({"rules": rules, "levels": args.levels, "seed": args.seed,
                                  "bootstrap": args.bootstrap, **{k: results[k] for k in keys if k in results},
                                  **({"networks": network} if network else {})}))


def resumed_envs(args, results: dict) -> dict:
    """Results of environments an earlier run with the same fingerprint finished (none with --no-resume)."""
    path = args.out / PROGRESS
    if args.no_resume or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    differences = config_differences(saved.get("fingerprint"), fingerprint(args, results))
    if differences:
        fail(f"{args.out} holds an evaluation run with other settings ({'; '.join(differences[:3])}): rerun with "
             f"the same settings to resume it, pick another --run-dir, or pass --no-resume to start over there")
    return {name: r for name, r in saved["envs"].items() if name in args.envs}


def save_progress(args, results: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / PROGRESS
    path.with_suffix(".tmp").write_text(json.dumps({"fingerprint": fingerprint(args, results),
                                                    "envs": results["envs"]}) + "\n")
    path.with_suffix(".tmp").replace(path)


# ------------------------------------------------------------------------------ tables
def fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_ci(point, ci, digits: int = 2) -> str:
    if point is None:
        return "–"
    if ci is None or ci[0] is None:
        return fmt(point, digits)
    return f"{fmt(point, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def learner_order(results: dict) -> list[str]:
    untrained = [UNTRAINED] if results["untrained_rule"] is not None else []
    return [*results["rules"], *results["pooled"], *results.get("baselines", [A2C]), *untrained]


def suite_table(results: dict) -> str:
    lines = [f"| learner | IQM [95% CI] | IQM − {A2C}'s [paired 95% CI] | mean [95% CI] | levels scored | "
             "non-finite lifetimes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label in learner_order(results):
        r = results["suite_scores"][label]
        lines.append(f"| {label} | {fmt_ci(r['iqm'], r['iqm_ci95'])} | "
                     f"{fmt_ci(r.get(f'iqm_minus_{A2C}'), r.get(f'iqm_minus_{A2C}_ci95'), 3)} | "
                     f"{fmt_ci(r['mean'], r['mean_ci95'])} | "
                     f"{r['levels_scored']} | {r['non_finite_lifetimes']} of {r['lifetimes']} |")
    return "\n".join(lines)


def env_table(results: dict) -> str:
    order = learner_order(results)
    ratio_labels = [*results["rules"], *results["pooled"]]
    lines = ["| environment | levels x seeds | 1 = | " + " | ".join(order) + " | "
             + " | ".join(f"{label} / A2C" for label in ratio_labels) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in order + ratio_labels) + " |"]
    for name, r in results["envs"].items():
        cells = [fmt_ci(r["learners"][k]["score_mean"], r["learners"][k]["score_ci95"]) for k in order]
        ratios = []
        for label in ratio_labels:
            ratio = r["score_ratio_to_A2C"].get(label)
            ratios.append("–" if ratio is None else fmt_ci(ratio["ratio"], ratio["ci95"]))
        shape = f"{r['num_levels']}{' groups' if r['single_level'] else ''} x {r['num_seeds']}"
        reference = "optimal" if r["reference"]["kind"] == "exact" else "best A2C"
        lines.append(f"| {name} | {shape} | {reference} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def chain_table(results: dict) -> str:
    order = [k for k in learner_order(results) if k not in results["pooled"]]
    blocks = []
    for name, r in results["envs"].items():
        if r["chain_lengths"] is None:
            continue
        lines = [f"`{name}`: levels solved (normalised score ≥ {results['solved_threshold']}) / levels, by length",
                 "", "| length | " + " | ".join(order) + " |", "| --- | " + " | ".join("---" for _ in order) + " |"]
        lengths = sorted({int(k) for label in order for k in r["learners"][label]["solved_by_length"]})
        totals = {label: [0, 0] for label in order}
        for length in lengths:
            row = []
            for label in order:
                solved, n = r["learners"][label]["solved_by_length"].get(str(length), [0, 0])
                totals[label][0] += solved
                totals[label][1] += n
                row.append(f"{solved}/{n}")
            lines.append(f"| {length} | " + " | ".join(row) + " |")
        lines.append("| all | " + " | ".join(f"{s}/{n}" for s, n in totals.values()) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def raw_table(results: dict) -> str:
    order = [k for k in learner_order(results) if k not in results["pooled"]]
    lines = ["| environment | random (0) | optimal or best A2C (1) | " + " | ".join(order) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in order) + " |"]
    for name, r in results["envs"].items():
        ref = r["reference"]
        cells = []
        for label in order:
            rep = r["learners"][label]
            text = fmt(rep["final_mean"])
            notes = []
            if rep["non_finite_lifetimes"]:
                notes.append(f"{rep['non_finite_lifetimes']} non-finite")
            if rep["lifetimes_without_final_episode"]:
                notes.append(f"{rep['lifetimes_without_final_episode']} without a final episode")
            off = rep.get("inactive_units_mean")  # absent in results written before session 28
            if off is not None and off >= ev_lib.INACTIVE_NOTE:
                notes.append(f"{off:.0%} of hidden units off")
            cells.append(text + (f" ({', '.join(notes)})" if notes else ""))
        mean = lambda xs: None if not xs or None in xs else float(np.mean(xs))  # noqa: E731
        lines.append(f"| {name} | {fmt(mean(ref['random']))} | {fmt(mean(ref['optimal']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(results: dict) -> str:
    lines = ["| environment | learner | candidates: mean score on selection lifetimes (mean final return) | chosen |",
             "| --- | --- | --- | --- |"]
    for name, r in results["envs"].items():
        for label in learner_order(results):
            rep = r["learners"][label]
            if "selection" not in rep:
                continue
            cells = ", ".join(f"{lr}: {fmt(t['mean_score'])} ({fmt(t['mean_final'])})"
                              + (f" [{t['non_finite_lifetimes']} non-finite]" if t["non_finite_lifetimes"] else "")
                              for lr, t in rep["selection"].items()) or "one candidate: no selection lifetimes"
            lines.append(f"| {name} | {label} | {cells} | {rep['learning_rate']:g} |")
    return "\n".join(lines)


def summary(results: dict) -> str:
    life = results["lifetime"]
    parts = [
        "# LPG evaluation on the held-out suite", "",
        f"Command: `{results['command']}`", "",
        "Rules: " + ", ".join(f"{label} = `{path}`" for label, path in results["rules"].items())
        + (f"; untrained rule: a fresh init of {results['untrained_rule']['config_of']}'s RuleConfig."
           if results["untrained_rule"] is not None else "; no untrained rule (--set untrained=false)."), "",
        f"Lifetimes: {life['num_updates']} updates x {life['num_envs']} envs x {life['rollout_len']} steps; "
        f"{life['num_seeds']} seeds per level. Run time {results['seconds'] / 60:.1f} min.",
    ]
    networks = results.get("networks")  # absent from results written before it was recorded
    if networks is not None:
        kind = {"auto": "conv on [H, W, C] maps, else an MLP"}.get(networks["kind"], networks["kind"])
        parts[-1] += f" Network agents (every learner's): {kind}, {networks['hidden']} hidden units."
    for heading, items in (("Warnings", results["warnings"]), ("Notes", results["notes"])):
        if items:
            parts += ["", f"**{heading}:**", ""] + [f"- {text}" for text in items]
    parts += [
        "", "Scores are normalised final returns (mean return of the episodes that ended in the last 10% of "
        "a lifetime): 0 = the uniform random policy, 1 = the optimal policy (exact planning) or, where the "
        "level has no exact MDP, the best A2C over its candidate learning rates (with a single candidate, A2C's own reported lifetimes). Seeds are averaged per level "
        "first. Intervals are 95% percentile-bootstrap intervals over levels (stratified by environment), so "
        "they stay within the range of the observed scores. IQM − A2C's resamples the same levels for both "
        "learners (a paired difference): an interval that holds 0 means the suite cannot tell the two apart.", "",
        "## Whole suite", "", suite_table(results), "",
        "## Per environment (mean score [95% CI over levels]; ratio: mean score / A2C's)", "", env_table(results),
    ]
    chains = chain_table(results)
    if chains:
        parts += ["", "## Chains", "", chains]
    parts += ["", "## Final returns (mean over lifetimes) and references", "", raw_table(results)]
    if any((rep.get("inactive_units_mean") or 0.0) >= ev_lib.INACTIVE_NOTE
           for r in results["envs"].values() for rep in r["learners"].values()):
        parts += ["", "\"Hidden units off\": the share of the agent network's last hidden layer that is 0 on every "
                  "observation of a lifetime's final batch, mean over lifetimes, where it is at least "
                  f"{ev_lib.INACTIVE_NOTE:.0%} (ReLU units that no input activates get no gradient; at 100% the policy "
                  "no longer depends on the state: a learning rate too high for the network?)."]
    parts += ["", "## Learning rates (chosen on selection lifetimes: same levels, other seeds)", "",
              selection_table(results), ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ plots
def colours(results: dict) -> dict[str, Any]:
    import matplotlib

    # One colour map per method (a pooled group or a single rule): its seeds in shades, its pool darkest.
    methods = {**results["pooled"]}
    methods.update({label: [label] for label in results["rules"]
                    if not any(label in members for members in results["pooled"].values())})
    table = {}
    for m, (group, members) in enumerate(methods.items()):
        cmap = matplotlib.colormaps[("Blues", "Greens", "Purples", "Reds", "YlOrBr", "Greys")[m % 6]]
        table.update({label: cmap(0.45 + 0.35 * i / max(len(members) - 1, 1)) for i, label in enumerate(members)})
        table[group] = cmap(0.95)
    table.update({A2C: "tab:orange", PPO: "tab:brown", UNTRAINED: "tab:gray"})
    return table


def errorbars(points, cis):
    points = np.array([np.nan if p is None else p for p in points], float)
    low = np.array([np.nan if c is None or c[0] is None else c[0] for c in cis], float)
    high = np.array([np.nan if c is None or c[1] is None else c[1] for c in cis], float)
    return points, np.nan_to_num(np.stack([np.maximum(points - low, 0), np.maximum(high - points, 0)]))


def plot_suite(results: dict, out: Path) -> Path:
    """IQM per learner on the whole suite, and the mean score per environment, with bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order, colour, names = learner_order(results), colours(results), list(results["envs"])
    fig, (ax_iqm, ax_env) = plt.subplots(1, 2, figsize=(4 + 1.2 * len(names) * len(order) / 4, 4.2),
                                         gridspec_kw={"width_ratios": [1, max(len(names), 1.5)]})
    scores = results["suite_scores"]
    points, err = errorbars([scores[k]["iqm"] for k in order], [scores[k]["iqm_ci95"] for k in order])
    ax_iqm.bar(range(len(order)), np.nan_to_num(points), yerr=err, color=[colour[k] for k in order], capsize=3)
    ax_iqm.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
    ax_iqm.set_title("whole suite: IQM over levels", fontsize=9)
    width = 0.8 / len(order)
    for j, label in enumerate(order):
        reps = [results["envs"][n]["learners"][label] for n in names]
        points, err = errorbars([r["score_mean"] for r in reps], [r["score_ci95"] for r in reps])
        ax_env.bar(np.arange(len(names)) + (j - (len(order) - 1) / 2) * width, np.nan_to_num(points), width,
                   yerr=err, color=colour[label], label=label, capsize=2)
    ax_env.set_xticks(range(len(names)), names, fontsize=8)
    ax_env.set_title("per environment: mean over levels", fontsize=9)
    ax_env.legend(fontsize=7, ncol=2)
    for ax in (ax_iqm, ax_env):
        ax.axhline(0, color="k", lw=0.6)
        ax.axhline(1, color="k", lw=0.6, ls="--")
        ax.set_ylabel("normalised score (0 random, 1 optimal / best A2C)", fontsize=8)
    fig.suptitle("normalised final return, 95% stratified-bootstrap intervals over levels", fontsize=10)
    fig.tight_layout()
    path = out / "suite.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = colours(results)
    order = [k for k in learner_order(results) if k not in results["pooled"]]

    def draw(ax, name, r):
        for label in order:
            rep = r["learners"][label]
            x = np.array(rep["curve_env_steps"], float)
            m, (low, high) = (np.array(rep["curve_mean"], float),
                              [np.array(b, float) for b in rep["curve_band95"]])
            ax.plot(x, m, label=label, color=colour[label])
            ax.fill_between(x, low, high, color=colour[label], alpha=0.2)
        ref = r["reference"]
        for values, style, text in ((ref["optimal"], "--", "optimal" if ref["kind"] == "exact" else "best A2C"),
                                    (ref["random"], ":", "random policy")):
            if values and None not in values:
                ax.axhline(float(np.mean(values)), color="k", ls=style, lw=0.8, label=text)
        unit = "groups" if r["single_level"] else "levels"
        ax.set_title(f"{name} ({r['num_levels']} {unit} x {r['num_seeds']} seeds)", fontsize=9)
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
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("learning curves: mean over levels, 95% bootstrap band over levels", fontsize=10)
    fig.tight_layout()
    paths.append(out / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        draw(ax, name, results["envs"][name])
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / f"curves_{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_outputs(results: dict, out: Path) -> str:
    """results.json, summary.md and the PNGs; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = summary(results)
    (out / "summary.md").write_text(text)
    plot_suite(results, out)
    plot_curves(results, out)
    return text


@entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--from-results" or a.startswith("--from-results=") for a in argv):
        return from_results(argv)
    args = parse_args(argv)
    try:
        results = evaluate(args)
    except FileNotFoundError as e:
        fail(str(e))
    text = write_outputs(results, args.out)
    print(text)
    log(f"wrote {args.out / 'results.json'}, {args.out / 'summary.md'}, {args.out / 'suite.png'} and learning curves")


if __name__ == "__main__":
    main()
