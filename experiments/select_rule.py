"""Choose a meta-training run's rule among its snapshots by a validation set disjoint from the
held-out suite (lpg/validation.py says which and why).

    python -m experiments.select_rule runs/cpu_seed0
    python -m experiments.select_rule runs/cpu_seed0 --y-init zeros --pi-hat-baseline adam_step_mean --every 100
    python -m experiments.select_rule runs/cpu_seed0 runs/cpu_seed1 runs/cpu_seed2 --wait
        # beside running meta-trainings: scores snapshots as they appear, ends when every run has

For each RUN_DIR, scores RUN_DIR/rules/step<N>/ (meta_train writes one every checkpoint) for N a multiple of --every
and at least --from, each by whole lifetimes of fresh agents on the validation set, at the middle
of the run's meta-training choices of learning rate, γ and α_y (RUN_DIR/config.json), with the
rule used as --y-init / --pi-hat-baseline say (default: as trained). Writes
RUN_DIR/selection/scores.jsonl (one line per scored snapshot; a rerun with the same settings
scores only the new ones), RUN_DIR/selection/summary.md, and the best snapshot (fewest non-finite
lifetimes, then the highest score; the later step on a tie) to RUN_DIR/rule_selected/ as a rule
folder `evaluate --rule RUN_DIR/rule_selected/rule.msgpack` reads like a finished run's, its
rule.json carrying the use options it was validated with.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path

from experiments.cli import Parser, apply_overrides, entry_point, fail, settable_fields
from experiments.evaluate import middle_choice
from lpg.agents import AUX_INITS
from lpg.update_rule import PI_HAT_BASELINES, load_rule, save_rule
from lpg.validation import ValidationConfig, Validator, ranking_key

STEP_FOLDER = re.compile(r"step(\d+)$")
POLL_SECONDS = 30


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def snapshots(run_dir: Path, every: int, start: int) -> dict[int, Path]:
    """{step: rule path} of the run's snapshots that qualify."""
    found = {}
    for folder in sorted((run_dir / "rules").glob("step*")):
        match = STEP_FOLDER.match(folder.name)
        path = folder / "rule.msgpack"
        if match and path.exists() and path.with_suffix(".json").exists():
            step = int(match.group(1))
            if step >= start and step % every == 0:
                found[step] = path
    return found


def run_finished(run_dir: Path) -> bool:
    """Whether the run has written its final rule and the snapshot of its last step (RUN_DIR/config.json's
    step count, which a run resumed for longer raises: its old rule.msgpack alone does not mean done)."""
    config = json.loads((run_dir / "config.json").read_text())
    total = config.get("num_meta_steps", config.get("num_generations"))
    last = run_dir / "rules" / f"step{total:05d}" / "rule.msgpack" if isinstance(total, int) else None
    return (run_dir / "rule.msgpack").exists() and (last is None or last.exists())


def parse_args(argv=None):
    parser = Parser(__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="meta-training run directories (with rules/step<N>/ snapshots), e.g. one per meta-seed")
    parser.add_argument("--every", type=int, default=50, help="score snapshots at multiples of this step (default 50)")
    parser.add_argument("--from", dest="start", type=int, default=0, help="score snapshots from this step on (default 0)")
    parser.add_argument("--y-init", choices=AUX_INITS, help="how network agents' y head starts (default: as trained)")
    parser.add_argument("--pi-hat-baseline", choices=PI_HAT_BASELINES,
                        help="what agents subtract from π̂ (default: as trained)")
    parser.add_argument("--wait", action="store_true",
                        help="keep scoring new snapshots until every run has written RUN_DIR/rule.msgpack and "
                             "the snapshot of its last step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a validation setting (repeatable); listed below")
    parser.epilog = "validation settings for --set:\n" + "\n".join(
        f"  {name}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for name, v in settable_fields(ValidationConfig()))
    args = parser.parse_args(argv)
    args.run_dirs = [Path(d) for d in args.run_dirs]
    for run_dir in args.run_dirs:
        if not (run_dir / "config.json").exists():
            fail(f"{run_dir} holds no config.json: give meta-training run directories")
    if args.every < 1 or args.start < 0:
        fail(f"--every must be >= 1 and --from >= 0 (got {args.every}, {args.start})")
    try:
        args.validation = apply_overrides(ValidationConfig(), args.set)
    except ValueError as e:
        fail(str(e))
    return args


def settings_record(args, run_config: dict) -> dict:
    """What a score depends on besides the rule: equal records make scores comparable."""
    hypers = run_config.get("hypers") or {}
    return json.loads(json.dumps({  # as scores.jsonl holds it (tuples as lists), to compare with its rows
        "validation": dataclasses.asdict(args.validation),
        "use": {k: v for k, v in (("y_init", args.y_init), ("pi_hat_baseline", args.pi_hat_baseline)) if v},
        "table_lr": middle_choice(hypers.get("learning_rates"), 40.0),
        "network_lr": middle_choice(hypers.get("network_learning_rates"), 1e-2),
        "discount": middle_choice(hypers.get("discounts"), 0.995),
        "alpha_y": middle_choice(hypers.get("alpha_ys"), 0.5),
    }))


def read_scores(path: Path, settings: dict) -> dict[int, dict]:
    scores = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("settings") == settings:
                scores[row["step"]] = row
    return scores


def write_outputs(run_dir: Path, scores: dict[int, dict], settings: dict) -> int:
    """summary.md and rule_selected/; returns the chosen step."""
    best = max(scores, key=lambda step: (ranking_key(scores[step]), step))
    envs = list(scores[best]["envs"])
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [f"# Validation of {run_dir}'s snapshots", "",
             f"Settings: {json.dumps(settings)}", "",
             "| step | score | " + " | ".join(envs) + " | non-finite lifetimes |",
             "| --- | --- | " + " | ".join("---" for _ in envs) + " | --- |"]
    for step in sorted(scores):
        row = scores[step]
        mark = " (chosen)" if step == best else ""
        lines.append(f"| {step}{mark} | {fmt(row['score'])} | " + " | ".join(fmt(row["envs"][e]) for e in envs)
                     + f" | {row['non_finite']} |")
    (run_dir / "selection" / "summary.md").write_text("\n".join(lines) + "\n")

    params, rule_config = load_rule(scores[best]["path"])
    out = run_dir / "rule_selected"
    save_rule(out / "rule.msgpack", params, dataclasses.replace(rule_config, **settings["use"]))
    shutil.copyfile(run_dir / "config.json", out / "config.json")
    (out / "selection.json").write_text(json.dumps({"step": best, "source": scores[best]["path"],
                                                    "settings": settings, "result": scores[best]}, indent=2) + "\n")
    return best


class _Selection:
    """One run directory's selection state."""

    def __init__(self, run_dir: Path, args):
        self.dir = run_dir
        self.settings = settings_record(args, json.loads((run_dir / "config.json").read_text()))
        self.scores_path = run_dir / "selection" / "scores.jsonl"
        self.scores_path.parent.mkdir(parents=True, exist_ok=True)
        self.scores = read_scores(self.scores_path, self.settings)


@entry_point
def main(argv=None) -> dict[str, dict]:
    """Returns {run dir: the chosen snapshot's score row}."""
    args = parse_args(argv)
    runs = [_Selection(d, args) for d in args.run_dirs]
    validators = {}  # one compile per (rule config, settings)
    while True:
        pending = False
        for run in runs:
            finished = run_finished(run.dir)  # before listing: a run found finished has every snapshot listed
            todo = {s: p for s, p in snapshots(run.dir, args.every, args.start).items() if s not in run.scores}
            pending |= bool(todo) or not finished
            for step, path in sorted(todo.items()):
                params, rule_config = load_rule(path)
                rule_config = dataclasses.replace(rule_config, **run.settings["use"])
                key = (rule_config, json.dumps(run.settings, sort_keys=True))
                if key not in validators:
                    log(f"compiling the validation lifetimes ({', '.join(args.validation.envs)}) ...")
                    s = run.settings
                    validators[key] = Validator(args.validation, rule_config, s["table_lr"], s["network_lr"],
                                                s["discount"], s["alpha_y"])
                t0 = time.time()
                result = validators[key].score(params)
                row = {"step": step, "path": str(path), "settings": run.settings, **result}
                with run.scores_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                run.scores[step] = row
                envs = {k: None if v is None else round(v, 3) for k, v in result["envs"].items()}
                score = None if result["score"] is None else round(result["score"], 3)
                log(f"{run.dir} step {step}: score {score} {envs} non-finite {result['non_finite']} "
                    f"({time.time() - t0:.0f}s)")
        if not args.wait or not pending:
            break
        time.sleep(POLL_SECONDS)
    chosen = {}
    for run in runs:
        if not run.scores:
            fail(f"no snapshot of {run.dir} qualifies (rules/step<N>/ with N >= {args.start}, a multiple of "
                 f"{args.every})")
        best = write_outputs(run.dir, run.scores, run.settings)
        chosen[str(run.dir)] = run.scores[best]
        log(f"{run.dir}: chosen step {best} (score {run.scores[best]['score']}); wrote {run.dir / 'rule_selected'} "
            f"and {run.dir / 'selection' / 'summary.md'}")
    return chosen


if __name__ == "__main__":
    main()
