"""Evolve an LPG update rule with evolution strategies (OpenAI-ES): rules scored by whole lifetimes.

    python -m experiments.es_train --preset tiny              # seconds: checks the install
    python -m experiments.es_train --preset cpu --run-dir runs/es_cpu   # about an hour on 2 CPU cores

The same rule, training sources, agents and evaluation as `experiments.meta_train` (see lpg/es.py
for the fitness). Progress is printed per chunk; metrics go to RUN_DIR/metrics.jsonl, checkpoints
to RUN_DIR/checkpoints (resumed automatically; Ctrl-C checkpoints and stops), a progress plot to
RUN_DIR/progress.png, the mean rule to RUN_DIR/rule.msgpack (read by experiments.evaluate) and
at every checkpoint to RUN_DIR/rules/step<generation>/.
Several hosts: start the same command on each with --distributed (see README).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and "--distributed" in sys.argv[1:]:
    from lpg import sharding as _sharding

    _sharding.initialize_distributed()

import jax
import numpy as np

from experiments.cli import (Parser, add_common_args, add_device_args, apply_overrides, entry_point, fail,
                             pick_preset, start_devices)
from experiments.meta_train import Built, OuterLoop, run_outer_loop
from experiments.presets import ES_PRESETS
from lpg import sharding
from lpg.es import ESConfig, make_es_trainer
from lpg.meta import sources_for
from lpg.runs import COMPILE_CACHE, use_compile_cache

MEMORY_HINT = ("lower population_size or levels_per_env (each device holds its share of members' lifetimes), "
               "or spread the population over more devices")


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
    built = build(config, devices)
    loop = OuterLoop(
        unit="generation", num_steps=config.num_generations, num_steps_field="num_generations",
        steps_per_chunk=config.steps_per_chunk,
        checkpoint_every=config.checkpoint_every, env_steps_per_step=config.env_steps_per_generation,
        rule_params=built.trainer.rule_params, extra_records=lambda row, metrics: None,
        describe=lambda rates: describe(config, rates),
        plot=lambda rows, path: plot_progress(rows, config, path), memory_hint=MEMORY_HINT,
    )
    return run_outer_loop(loop, config, built, run_dir, resume, quiet, tensorboard), built.trainer


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, ES_PRESETS, default="tiny")
    add_device_args(parser)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or f"runs/es_{args.preset}"
    use_compile_cache(Path(run_dir) / COMPILE_CACHE)  # before anything compiles (lpg.runs)
    start_devices(args)
    try:
        config = apply_overrides(pick_preset(ES_PRESETS, args.preset), args.set)
        sources_for(config.envs)  # unknown names fail here, before anything is compiled
    except ValueError as e:
        fail(str(e))
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
