"""Meta-train an LPG update rule.

    python -m experiments.meta_train --preset quick            # minutes on a 2-core CPU
    python -m experiments.meta_train --preset paper --run-dir runs/paper   # accelerator scale
    python -m experiments.meta_train --preset paper --dry-run   # memory, flops and time of a meta-step first

Progress is printed per chunk; metrics go to RUN_DIR/metrics.jsonl, checkpoints to
RUN_DIR/checkpoints (resumed automatically; Ctrl-C checkpoints and stops), a progress plot
to RUN_DIR/progress.png, the rule to RUN_DIR/rule.msgpack, and the rule at every checkpoint to
RUN_DIR/rules/step<N>/ (a folder `evaluate --rule` reads like a finished run's), so a rule's
course over meta-training can be evaluated after the run, although only the last two
checkpoints are kept. The compiled chunk is kept in RUN_DIR/xla_cache, so a resumed run loads
it instead of compiling again (the `paper` preset compiles for minutes, longer on a GPU's host).
Several hosts: start the same command on each with --distributed (see README).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

if __name__ == "__main__" and "--distributed" in sys.argv[1:]:
    # Join jax.distributed before anything touches the XLA backend (importing gymnax, via
    # experiments.cli, creates arrays).
    from lpg import sharding as _sharding

    _sharding.initialize_distributed()

import jax
import numpy as np

from experiments.cli import (Parser, add_common_args, add_device_args, apply_overrides, entry_point, fail,
                             pick_preset, start_devices)
from experiments.presets import META_PRESETS, SELECT_ARGS
from lpg import budget, sharding
from lpg.meta import MetaConfig, make_meta_trainer, sources_for
from lpg.runs import COMPILE_CACHE, RunDir, compile_cache_hits, host_loop, use_compile_cache
from lpg.update_rule import save_rule


def chunk_records(steps_per_chunk: int, env_steps_per_step: int, chunk: int, metrics: dict) -> list[dict]:
    """One JSONL row per outer step (meta-step or generation) of a chunk."""
    rows = []
    for i in range(steps_per_chunk):
        step = chunk * steps_per_chunk + i + 1
        row = {"step": step, "env_steps": step * env_steps_per_step}
        row.update({k: np.asarray(v)[i] for k, v in metrics.items()})
        rows.append(row)
    return rows


def describe(config: MetaConfig, rates: list[float]):
    def text(row: dict) -> str:
        parts = [f"meta-step {row['step']}", f"meta-loss {row['meta_loss']:.3f}"]
        for name in config.envs:
            final = row.get(f"{name}/chunk_final_return")
            parts.append(f"{name} return {row[f'{name}/episode_return']:.2f}"
                         + (f" (end of life {final:.2f})" if final is not None else ""))
        if rates:
            parts.append(f"{rates[-1]:,.0f} steps/s")
        nonfinite = sum(row.get(f"{name}/nonfinite", 0) for name in config.envs)
        if nonfinite:
            parts.append(f"{nonfinite:.0f} non-finite lifetime(s) reset")
        if row.get("skipped_updates"):
            parts.append(f"skipped {row['skipped_updates']} non-finite")
        return " | ".join(parts)

    return text


def plot_progress(rows: list[dict], config: MetaConfig, path: Path) -> None:
    """RUN_DIR/progress.png: per source, the return of the scoring rollouts and of lifetimes' ends
    against meta-steps, and the meta-loss (drawn at every checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    window = max(len(rows) // 100, 1)
    smooth = lambda x: np.convolve(x, np.ones(window) / window, mode="valid")  # noqa: E731
    fig, axes = plt.subplots(1, len(config.envs) + 1, figsize=(3.2 * (len(config.envs) + 1), 3), squeeze=False)
    for ax, name in zip(axes[0], config.envs):
        values = np.array([r.get(f"{name}/episode_return") or np.nan for r in rows], float)
        ax.plot(steps[window - 1:], smooth(values), label="scoring rollouts")
        ends = [(r["step"], r[f"{name}/chunk_final_return"]) for r in rows if r.get(f"{name}/chunk_final_return") is not None]
        if ends:
            ax.plot(*zip(*ends), ".", ms=3, alpha=0.6, label="end of lifetimes")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("meta-step")
    axes[0][0].set_ylabel("episode return")
    axes[0][0].legend(fontsize=7)
    loss = np.array([r.get("meta_loss") or np.nan for r in rows], float)
    axes[0][-1].plot(steps[window - 1:], smooth(loss))
    axes[0][-1].set_title("meta-loss", fontsize=9)
    axes[0][-1].set_xlabel("meta-step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# What to change when the compiled meta-step does not fit a device (lpg.budget.check_fits).
MEMORY_HINT = ("raise lifetime_microbatches (e.g. --set lifetime_microbatches=4; the same update, in sequential "
               "parts), --set remat=true, or spread lifetimes over more devices; lowering lifetimes_per_env or "
               "num_envs also helps but changes the experiment")


class Built(NamedTuple):
    trainer: Any
    template: Any  # the MetaState as ShapeDtypeStructs with their shardings
    init: Callable  # jitted: key -> MetaState
    run_chunk: Callable  # jitted: MetaState -> (MetaState, metrics of steps_per_chunk meta-steps)


def build(config: MetaConfig, devices: int | None = None) -> Built:
    """The meta-trainer for the devices present, with its state's shardings (lifetimes split)."""
    mesh = sharding.lifetime_mesh(devices)
    sharding.check_divisible(config.lifetimes_per_env, mesh)
    per_microbatch = config.lifetimes_per_env // config.lifetime_microbatches
    if per_microbatch % mesh.devices.size and jax.process_index() == 0:
        # Still the same update, but the compiler then moves lifetimes between devices every micro-batch.
        print(f"warning: {per_microbatch} lifetimes per micro-batch do not split evenly over {mesh.devices.size} "
              f"devices; pick lifetime_microbatches so that lifetimes_per_env / lifetime_microbatches is a "
              f"multiple of the device count", file=sys.stderr)
    trainer = make_meta_trainer(config, sources_for(config.envs))
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed))
    shardings = sharding.meta_state_shardings(abstract, mesh)
    template = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    init = jax.jit(trainer.init, out_shardings=shardings)
    run_chunk = jax.jit(trainer.run, in_shardings=(shardings,), out_shardings=(shardings, None), donate_argnums=0)
    return Built(trainer, template, init, run_chunk)


def dry_run(config: MetaConfig, devices: int | None = None, time_step: bool = True) -> dict:
    """Sizes a run before it starts, writing nothing: compiles one meta-step for the devices
    present, reports its memory per device against the device's capacity and XLA's flop count,
    and (if it fits and `time_step`) runs one meta-step to measure its seconds and project the run."""
    one = dataclasses.replace(config, steps_per_chunk=1, num_meta_steps=1, checkpoint_every=1)
    built = build(one, devices)
    t0 = time.time()
    compiled = built.run_chunk.lower(built.template).compile()
    report = {**budget.compiled_footprint(compiled), "compile_s": time.time() - t0,
              "capacity_bytes": budget.device_capacity(jax.local_devices()[0]), "devices": jax.device_count(),
              "platform": jax.devices()[0].platform, "env_steps_per_meta_step": config.env_steps_per_meta_step,
              "rule_matmul_flops": config.rule_matmul_flops()["total"]}
    try:
        budget.check_fits(report, report["capacity_bytes"], MEMORY_HINT)
        report["fits"] = True
    except ValueError as e:
        report["fits"], report["why_not"] = False, str(e)
    if report["fits"] and time_step:
        state = built.init(jax.random.PRNGKey(config.seed))
        sharding.sync_processes("dry_run compiled")
        t0 = time.time()
        jax.block_until_ready(compiled(state))
        report["s_per_meta_step"] = time.time() - t0
        report["projected_s"] = report["s_per_meta_step"] * config.num_meta_steps
    return report


def describe_dry_run(report: dict) -> str:
    capacity = report["capacity_bytes"]
    lines = [
        f"one meta-step ({report['env_steps_per_meta_step']:,} env steps) on {report['devices']} "
        f"{report['platform']} device(s), compiled in {report['compile_s']:.0f}s:",
        f"  memory per device: {report['bytes'] / budget.GB:.2f} GB (arguments {report['argument_bytes'] / budget.GB:.2f}, "
        f"outputs {report['output_bytes'] / budget.GB:.2f}, temporaries {report['temp_bytes'] / budget.GB:.2f}) of "
        + (f"{capacity / budget.GB:.1f} GB" if capacity else "an unknown capacity"),
        f"  XLA flops: {report['flops']:.3g} (each loop body counted once: a lower bound); the rule's LSTM "
        f"matmuls alone: {report['rule_matmul_flops']:.3g} (analytic, forward and backward over the K updates)",
    ]
    if "s_per_meta_step" in report:
        lines.append(f"  measured: {report['s_per_meta_step']:.2f} s per meta-step "
                     f"({report['env_steps_per_meta_step'] / report['s_per_meta_step']:,.0f} env steps/s); "
                     f"the whole run: about {report['projected_s'] / 3600:.2f} h")
    if not report["fits"]:
        lines.append(f"  does not fit: {report['why_not']}")
    return "\n".join(lines)


def save_rule_snapshot(run: RunDir, step: int, params: Any, rule_config: Any) -> Path:
    """RUN_DIR/rules/step<step>/{rule.msgpack, rule.json, config.json}: the rule after `step` outer
    steps, with the run's config beside it (evaluate reads the training rates and lifetimes there)."""
    folder = run.path / "rules" / f"step{step:05d}"
    path = save_rule(folder / "rule.msgpack", params, rule_config)
    shutil.copyfile(run.path / "config.json", folder / "config.json")
    return path


class OuterLoop(NamedTuple):
    """What differs between the outer loops that train a rule (meta-gradients, ES) for `run_outer_loop`."""

    unit: str  # "meta-step" or "generation", for messages
    num_steps: int
    num_steps_field: str  # the config field num_steps comes from: a finished run resumed with more steps goes on
    steps_per_chunk: int
    checkpoint_every: int  # chunks
    env_steps_per_step: int
    rule_params: Callable[[Any], Any]  # state -> the rule's parameters
    extra_records: Callable[[dict, dict], None]  # (last row of a chunk, chunk metrics): add fields in place
    describe: Callable[[list[float]], Callable[[dict], str]]  # rates -> progress line of a row
    plot: Callable[[list[dict], Path], None]  # (rows, path) -> RUN_DIR/progress.png
    memory_hint: str  # what to change when the compiled chunk does not fit a device


def run_outer_loop(loop: OuterLoop, config: Any, built: Built, run_dir: str | None, resume: bool = True,
                   quiet: bool = False, tensorboard: bool = False):
    """Runs (or resumes) an outer loop from its `build`: the run directory, the finished-run shortcut,
    resume, the compile with its memory check, the host loop with progress, metrics, checkpoints,
    plot and rule snapshots (RUN_DIR/rules/step<N>/), and RUN_DIR/rule.msgpack at the end. Returns the final state.

    Refuses (ValueError, naming the settings to change) when the compiled chunk cannot fit a device.
    """
    _, template, init, run_chunk = built
    is_main = jax.process_index() == 0
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if is_main and not quiet else (lambda text: None)
    num_chunks = loop.num_steps // loop.steps_per_chunk
    run = (RunDir(run_dir, config, resume=resume, tensorboard=tensorboard and is_main,
                  extendable=(loop.num_steps_field,)) if run_dir else None)
    for field, (before, after) in (run.extended.items() if run is not None else ()):
        say(f"extending {run.path}: {field} {before} -> {after} (the steps already run are kept)")
    if run is not None and resume and run.finished(num_chunks):
        # Nothing left to do: restore the final state into its abstract shape, compile nothing.
        state, _ = run.restore(template)
        say(f"already finished: {run.path} holds all {loop.num_steps} {loop.unit}s; the rule is "
            f"{run.path / 'rule.msgpack'} (pass --no-resume to start over)")
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(loop.rule_params(state)), config.rule)
        run.close()
        return state
    state = init(jax.random.PRNGKey(config.seed))
    start = 0
    if run is not None and resume:
        restored = run.restore(state)
        if restored is not None:
            state, start = restored
            say(f"resuming {run.path} after chunk {start}/{num_chunks}")

    t0 = time.time()
    say(f"compiling a chunk of {loop.steps_per_chunk} {loop.unit}(s) (1-3 minutes on a 2-core CPU for the "
        f"small presets; XLA may warn about a slow compile meanwhile, which is harmless)...")
    hits = compile_cache_hits()
    run_chunk = run_chunk.lower(state).compile()
    cached = "; loaded from the compile cache" if compile_cache_hits() > hits else ""
    footprint = budget.compiled_footprint(run_chunk)
    budget.check_fits(footprint, budget.device_capacity(jax.local_devices()[0]), loop.memory_hint)
    sharding.sync_processes(f"{loop.unit} compiled")  # several processes start the chunk together
    say(f"compiled in {time.time() - t0:.0f}s ({footprint['bytes'] / budget.GB:.2f} GB per device{cached}); "
        f"{num_chunks - start} chunk(s) of {loop.steps_per_chunk} {loop.unit}(s), "
        f"{loop.env_steps_per_step:,} env steps each")
    rates: list[float] = []
    clock = [time.time()]

    def timed_chunk(s):
        s, m = run_chunk(s)
        m = sharding.to_host(m)
        now = time.time()
        rates.append(loop.env_steps_per_step * loop.steps_per_chunk / (now - clock[0]))
        clock[0] = now
        return s, m

    def records(chunk, metrics):
        rows = chunk_records(loop.steps_per_chunk, loop.env_steps_per_step, chunk, metrics)
        rows[-1]["steps_per_second"] = rates[-1]
        loop.extra_records(rows[-1], metrics)
        return rows

    def on_save(chunks_done: int, state: Any) -> None:
        loop.plot(run.read_metrics(), run.path / "progress.png")
        save_rule_snapshot(run, chunks_done * loop.steps_per_chunk, sharding.to_host(loop.rule_params(state)),
                           config.rule)

    state = host_loop(
        run, state, timed_chunk, num_chunks, records, loop.describe(rates),
        checkpoint_every=loop.checkpoint_every, start_chunk=start, quiet=quiet or not is_main,
        on_save=on_save if run is not None and is_main else None,
    )
    if run is not None:
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(loop.rule_params(state)), config.rule)
        run.close()
    return state


def meta_train(config: MetaConfig, run_dir: str | None, resume: bool = True, devices: int | None = None,
               quiet: bool = False, tensorboard: bool = False):
    """Runs (or resumes) meta-training; returns (final MetaState, trainer).

    Refuses (ValueError, naming the settings to change) when the compiled chunk cannot fit a device.
    """
    built = build(config, devices)

    def chunk_final_returns(row: dict, metrics: dict) -> None:
        for name in config.envs:  # return of the lifetimes that ended during this chunk
            counts = np.asarray(metrics[f"{name}/final_returns_count"])
            if counts.sum() > 0:
                finals = np.asarray(metrics[f"{name}/final_return"])
                row[f"{name}/chunk_final_return"] = float((finals * counts).sum() / counts.sum())

    loop = OuterLoop(
        unit="meta-step", num_steps=config.num_meta_steps, num_steps_field="num_meta_steps",
        steps_per_chunk=config.steps_per_chunk,
        checkpoint_every=config.checkpoint_every, env_steps_per_step=config.env_steps_per_meta_step,
        rule_params=lambda state: state.rule_params, extra_records=chunk_final_returns,
        describe=lambda rates: describe(config, rates),
        plot=lambda rows, path: plot_progress(rows, config, path), memory_hint=MEMORY_HINT,
    )
    return run_outer_loop(loop, config, built, run_dir, resume, quiet, tensorboard), built.trainer


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, META_PRESETS, default="quick")
    add_device_args(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="compile one meta-step, print its memory per device, XLA flops and measured seconds "
                             "(projected to the whole run), write nothing, and exit (2 if it cannot fit)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or f"runs/meta_{args.preset}"
    if not args.dry_run:  # before anything compiles: a resumed run loads its programs from there
        use_compile_cache(Path(run_dir) / COMPILE_CACHE)
    start_devices(args)
    try:
        config = apply_overrides(pick_preset(META_PRESETS, args.preset), args.set)
        sources_for(config.envs)  # unknown names fail here, before anything is compiled
    except ValueError as e:
        fail(str(e))
    if args.dry_run:
        print(f"dry run of preset {args.preset!r}: compiling one meta-step...", file=sys.stderr, flush=True)
        report = dry_run(config, args.devices)
        print(describe_dry_run(report))
        if not report["fits"]:
            raise SystemExit(2)
        return
    print(f"meta-training preset {args.preset!r} on {jax.device_count()} {jax.devices()[0].platform} device(s) "
          f"-> {run_dir}", file=sys.stderr)
    meta_train(config, run_dir, resume=not args.no_resume, devices=args.devices, tensorboard=args.tensorboard)
    print(f"rule saved to {Path(run_dir) / 'rule.msgpack'}; progress plot {Path(run_dir) / 'progress.png'}.\n"
          f"Next: python -m experiments.evaluate --rule {Path(run_dir) / 'rule.msgpack'}   "
          f"(the held-out suite against A2C; writes {Path(run_dir) / 'eval'}),\n"
          f"  or first choose among the snapshots: python -m experiments.select_rule {run_dir}"
          f"{(' ' + SELECT_ARGS[args.preset]) if args.preset in SELECT_ARGS else ''}   "
          f"(writes {Path(run_dir) / 'rule_selected'})", file=sys.stderr)


if __name__ == "__main__":
    main()
