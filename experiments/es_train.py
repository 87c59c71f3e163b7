"""Evolve an LPG update rule with evolution strategies (OpenAI-ES): rules scored by whole lifetimes.

    python -m experiments.es_train --preset tiny              # seconds: checks the install
    python -m experiments.es_train --preset cpu --run-dir runs/es_cpu   # about an hour on 2 CPU cores

The same rule, training sources, agents and evaluation as `experiments.meta_train` (see lpg/es.py
for the fitness). Progress is printed per chunk; metrics go to RUN_DIR/metrics.jsonl, checkpoints
to RUN_DIR/checkpoints (resumed automatically; Ctrl-C checkpoints and stops), a progress plot to
RUN_DIR/progress.png, the mean rule to RUN_DIR/rule.msgpack (read by experiments.evaluate).
Several hosts: start the same command on each with --distributed (see README).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

if __name__ == "__main__" and "--distributed" in sys.argv[1:]:
    from lpg import sharding as _sharding

    _sharding.initialize_distributed()

import jax
import numpy as np

from experiments.cli import Parser, add_common_args, apply_overrides, entry_point, fail, pick_preset
from experiments.presets import ES_PRESETS
from lpg import budget, sharding
from lpg.es import ESConfig, make_es_trainer
from lpg.meta import sources_for
from lpg.runs import RunDir, host_loop
from lpg.update_rule import save_rule

MEMORY_HINT = ("lower population_size or levels_per_env (each device holds its share of members' lifetimes), "
               "or spread the population over more devices")


class Built(NamedTuple):
    trainer: Any
    template: Any  # the ESState as ShapeDtypeStructs with their (replicated) shardings
    init: Callable
    run_chunk: Callable


def build(config: ESConfig, devices: int | None = None) -> Built:
    """The ES trainer for the devices present: the population split over them, its state replicated."""
    mesh = sharding.lifetime_mesh(devices)
    trainer = make_es_trainer(config, sources_for(config.envs), mesh)
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = jax.tree.map(lambda _: replicated, abstract)
    template = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    init = jax.jit(trainer.init, out_shardings=shardings)
    run_chunk = jax.jit(trainer.run, in_shardings=(shardings,), out_shardings=(shardings, None), donate_argnums=0)
    return Built(trainer, template, init, run_chunk)


def chunk_records(config: ESConfig, chunk: int, metrics: dict) -> list[dict]:
    """One JSONL row per generation of a chunk."""
    rows = []
    for i in range(config.steps_per_chunk):
        generation = chunk * config.steps_per_chunk + i + 1
        row = {"step": generation, "env_steps": generation * config.env_steps_per_generation}
        row.update({k: np.asarray(v)[i] for k, v in metrics.items()})
        rows.append(row)
    return rows


def describe(config: ESConfig, rates: list[float]):
    def text(row: dict) -> str:
        parts = [f"generation {row['step']}"]
        for name in config.envs:
            parts.append(f"{name} end-of-life return: mean rule {row[f'{name}/validation_return']:.2f} (validation), "
                         f"population {row[f'{name}/population_return']:.2f}")
        if rates:
            parts.append(f"{rates[-1]:,.0f} steps/s")
        if row.get("nonfinite_members"):
            parts.append(f"{row['nonfinite_members']:.0f} member(s) non-finite (ranked last)")
        return " | ".join(parts)

    return text


def plot_progress(rows: list[dict], config: ESConfig, path: Path) -> None:
    """RUN_DIR/progress.png: per source, the end-of-lifetime return of the mean rule (on the fixed
    validation levels) and of the population (on each generation's levels) against generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, len(config.envs), figsize=(3.4 * len(config.envs), 3), squeeze=False)
    for ax, name in zip(axes[0], config.envs):
        validation = np.array([r.get(f"{name}/validation_return") for r in rows], float)
        population = np.array([r.get(f"{name}/population_return") for r in rows], float)
        # Each generation draws new levels (returns of some grids are 100x others'): a running median.
        window = max(len(rows) // 15, 1)
        median = np.array([np.median(population[max(i - window + 1, 0):i + 1]) for i in range(len(rows))])
        ax.plot(steps, validation, lw=1.5, label="mean rule (fixed validation levels)")
        ax.plot(steps, median, lw=1, alpha=0.6, label=f"population (running median of {window} generations)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("generation")
    axes[0][0].set_ylabel("end-of-lifetime return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def es_train(config: ESConfig, run_dir: str | None, resume: bool = True, devices: int | None = None,
             quiet: bool = False, tensorboard: bool = False):
    """Runs (or resumes) ES; returns (final ESState, trainer). Refuses (ValueError) a program that
    cannot fit a device."""
    trainer, template, init, run_chunk = build(config, devices)
    is_main = jax.process_index() == 0
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if is_main and not quiet else (lambda text: None)
    num_chunks = config.num_generations // config.steps_per_chunk
    run = RunDir(run_dir, config, resume=resume, tensorboard=tensorboard and is_main) if run_dir else None
    if run is not None and resume and run.finished(num_chunks):
        state, _ = run.restore(template)
        say(f"already finished: {run.path} holds all {config.num_generations} generations; the rule is "
            f"{run.path / 'rule.msgpack'} (pass --no-resume to start over)")
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(trainer.rule_params(state)), config.rule)
        run.close()
        return state, trainer
    state = init(jax.random.PRNGKey(config.seed))
    start = 0
    if run is not None and resume:
        restored = run.restore(state)
        if restored is not None:
            state, start = restored
            say(f"resuming {run.path} after chunk {start}/{num_chunks}")
    t0 = time.time()
    say(f"compiling a chunk of {config.steps_per_chunk} generation(s)...")
    run_chunk = run_chunk.lower(state).compile()
    footprint = budget.compiled_footprint(run_chunk)
    budget.check_fits(footprint, budget.device_capacity(jax.local_devices()[0]), MEMORY_HINT)
    sharding.sync_processes("es_train compiled")
    say(f"compiled in {time.time() - t0:.0f}s ({footprint['bytes'] / budget.GB:.2f} GB per device); ES: "
        f"{num_chunks - start} chunk(s) of {config.steps_per_chunk} generation(s) of {config.population_size} "
        f"members, {config.env_steps_per_generation:,} env steps each")
    rates: list[float] = []
    clock = [time.time()]

    def timed_chunk(s):
        s, m = run_chunk(s)
        m = sharding.to_host(m)
        now = time.time()
        rates.append(config.env_steps_per_generation * config.steps_per_chunk / (now - clock[0]))
        clock[0] = now
        return s, m

    def records(chunk, metrics):
        rows = chunk_records(config, chunk, metrics)
        rows[-1]["steps_per_second"] = rates[-1]
        return rows

    on_save = (lambda: plot_progress(run.read_metrics(), config, run.path / "progress.png")) \
        if run is not None and is_main else None
    state = host_loop(run, state, timed_chunk, num_chunks, records, describe(config, rates),
                      checkpoint_every=config.checkpoint_every, start_chunk=start, quiet=quiet or not is_main,
                      on_save=on_save)
    if run is not None:
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(trainer.rule_params(state)), config.rule)
        run.close()
    return state, trainer


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, ES_PRESETS, default="tiny")
    parser.add_argument("--devices", type=int, default=None, help="number of local devices to shard over (default all)")
    parser.add_argument("--distributed", action="store_true",
                        help="join jax.distributed (multi-host); set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID")
    args = parser.parse_args(argv)
    if args.distributed:
        sharding.initialize_distributed()
    try:
        config = apply_overrides(pick_preset(ES_PRESETS, args.preset), args.set)
        sources_for(config.envs)  # unknown names fail here, before anything is compiled
    except ValueError as e:
        fail(str(e))
    run_dir = args.run_dir or f"runs/es_{args.preset}"
    print(f"ES preset {args.preset!r} on {jax.device_count()} {jax.devices()[0].platform} device(s) -> {run_dir}",
          file=sys.stderr)
    try:
        es_train(config, run_dir, resume=not args.no_resume, devices=args.devices, tensorboard=args.tensorboard)
    except ValueError as e:
        if "devices" in str(e) or "GB per device" in str(e):
            fail(str(e))
        raise
    print(f"rule saved to {Path(run_dir) / 'rule.msgpack'}; progress plot {Path(run_dir) / 'progress.png'}.\n"
          f"Next: python -m experiments.evaluate --rule {Path(run_dir) / 'rule.msgpack'}", file=sys.stderr)


if __name__ == "__main__":
    main()
