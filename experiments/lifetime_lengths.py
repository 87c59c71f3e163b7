"""Evaluate rules at lifetime lengths other than the one they were trained at: the held-out
suite of `experiments.evaluate` once per length, then one table and one plot across lengths.

    python -m experiments.lifetime_lengths --lengths 50 100 200 \\
        --rule META/rule.msgpack META_COND/rule.msgpack ES/rule.msgpack ES_COND/rule.msgpack \\
        --labels meta "meta, n/N" ES "ES, n/N"

Every flag other than --lengths, --out and --run-dir is `experiments.evaluate`'s (--rule, --labels,
--envs, --levels, --seeds, ...; see `python -m experiments.evaluate --help`), and every length is
a whole evaluation of its own: learning rates selected per length and learner on separate seeds,
A2C and the optimum as the references at that length. A rule conditioned on its lifetime
(`RuleConfig.lifetime_inputs`) is told each evaluated length (n/N and log N); an unconditioned rule
is not.

Writes OUT/updates_<N>/ (evaluate's outputs for length N, each resumable as evaluate's are), and
OUT/summary.md (suite IQM and per-environment mean score of every learner at every length) and
OUT/lengths.png. OUT is --out, else --run-dir, else the first rule's RUN_DIR/lifetime_lengths;
never under the committed results/ unless --out says so.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from experiments import evaluate as evaluate_cmd
from experiments.cli import Parser, entry_point, fail, output_dir


def parse_args(argv=None):
    parser = Parser(__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", required=True, metavar="N",
                        help="agent updates per lifetime, one evaluation each (e.g. half, equal to and twice the trained length)")
    parser.add_argument("--out", default=None, help="write the outputs here, anywhere (committed results/ only this way)")
    parser.add_argument("--run-dir", default=None, help="output folder (default: the first rule's RUN_DIR/lifetime_lengths)")
    args, rest = parser.parse_known_args(argv)
    if any(n < 1 for n in args.lengths) or len(set(args.lengths)) != len(args.lengths):
        fail(f"--lengths {args.lengths}: give distinct lengths, each >= 1 agent update")
    if any(token.split("=")[0] in ("--updates", "updates") for token in rest):
        fail("--updates (or --set updates=...) is not taken here: --lengths gives each evaluation's updates")
    at = next((i for i, token in enumerate(rest) if token == "--rule" or token.startswith("--rule=")), None)
    if at is None or (rest[at] == "--rule" and at + 1 == len(rest)):
        fail("--rule is required: the rules to evaluate (RUN_DIR/rule.msgpack), as for experiments.evaluate")
    first_rule = Path(rest[at].split("=", 1)[1] if "=" in rest[at] else rest[at + 1])
    args.out = output_dir(args, first_rule.parent / "lifetime_lengths", evaluate_cmd.RESULTS_DIR)
    args.evaluations = {n: evaluate_cmd.parse_args([*rest, "--updates", str(n), "--out", str(args.out / f"updates_{n}")])
                        for n in sorted(args.lengths)}
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def trained_lengths(results: dict) -> dict[str, int | None]:
    """Each rule's meta-training lifetime length (its RUN_DIR/config.json), if known."""
    return {label: evaluate_cmd.run_config(Path(path)).get("lifetime_updates") for label, path in results["rules"].items()}


def table(by_length: dict[int, dict]) -> str:
    """Suite IQM [95% CI] of every learner (rows) at every length (columns), then per-environment means."""
    lengths = list(by_length)
    first = by_length[lengths[0]]
    order = evaluate_cmd.learner_order(first)
    trained = trained_lengths(first)
    header = "| learner | trained N | " + " | ".join(f"N = {n}" for n in lengths) + " |"
    rule = "| --- | --- | " + " | ".join("---" for _ in lengths) + " |"
    lines = ["Suite IQM of normalised final return [95% stratified-bootstrap CI]:", "", header, rule]
    for label in order:
        scores = [by_length[n]["suite_scores"][label] for n in lengths]
        lines.append(f"| {label} | {trained.get(label) or '–'} | "
                     + " | ".join(evaluate_cmd.fmt_ci(s["iqm"], s["iqm_ci95"]) for s in scores) + " |")
    for env in first["envs"]:
        lines += ["", f"`{env}`: mean normalised score over levels [95% CI]", "", header, rule]
        for label in order:
            reps = [by_length[n]["envs"][env]["learners"][label] for n in lengths]
            lines.append(f"| {label} | {trained.get(label) or '–'} | "
                         + " | ".join(evaluate_cmd.fmt_ci(r["score_mean"], r["score_ci95"]) for r in reps) + " |")
    return "\n".join(lines)


def plot(by_length: dict[int, dict], out: Path) -> Path:
    """Suite IQM and per-environment mean score against lifetime length, one line per learner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(by_length)
    first = by_length[lengths[0]]
    colour, envs = evaluate_cmd.colours(first), list(first["envs"])
    panels = [("whole suite: IQM", lambda r, label: (r["suite_scores"][label]["iqm"], r["suite_scores"][label]["iqm_ci95"]))]
    panels += [(f"{env}: mean", lambda r, label, env=env: (r["envs"][env]["learners"][label]["score_mean"],
                                                          r["envs"][env]["learners"][label]["score_ci95"]))
               for env in envs]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    for ax, (title, get) in zip(axes[0], panels):
        for label in evaluate_cmd.learner_order(first):
            points, err = evaluate_cmd.errorbars(*zip(*[get(by_length[n], label) for n in lengths]))
            ax.errorbar(lengths, points, yerr=err, color=colour[label], marker="o", ms=3, capsize=2, label=label)
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.axhline(0, color="k", lw=0.6)
        ax.axhline(1, color="k", lw=0.6, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("agent updates per lifetime (N)", fontsize=8)
    axes[0][0].set_ylabel("normalised final return", fontsize=8)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path = out / "lengths.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(by_length: dict[int, dict], command: str) -> str:
    first = next(iter(by_length.values()))
    return "\n".join([
        "# Rules at other lifetime lengths", "",
        f"Command: `{command}`", "",
        "Rules: " + ", ".join(f"{label} = `{path}`" for label, path in first["rules"].items()), "",
        "Each length is a whole evaluation (`updates_<N>/summary.md`): every learner's learning rate "
        "selected at that length on separate seeds; 0 = random policy, 1 = optimal or best A2C at that length. "
        "Run time " + ", ".join(f"N = {n}: {r['seconds'] / 60:.1f} min" for n, r in by_length.items()) + ".", "",
        table(by_length), "",
    ])


@entry_point
def main(argv=None):
    args = parse_args(argv)
    by_length = {}
    for n, eargs in args.evaluations.items():
        evaluate_cmd.log(f"=== lifetimes of {n} updates -> {eargs.out}")
        try:
            by_length[n] = evaluate_cmd.evaluate(eargs)
        except FileNotFoundError as e:
            fail(str(e))
        evaluate_cmd.write_outputs(by_length[n], eargs.out)
    command = "python -m experiments.lifetime_lengths " + shlex.join(args.argv)
    text = summary(by_length, command)
    (args.out / "summary.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(
        {"command": command,
         "lengths": list(by_length), "suite_scores": {n: r["suite_scores"] for n, r in by_length.items()}}, indent=1) + "\n")
    plot(by_length, args.out)
    print(text)
    evaluate_cmd.log(f"wrote {args.out / 'summary.md'}, {args.out / 'results.json'} and {args.out / 'lengths.png'}")


if __name__ == "__main__":
    main()
