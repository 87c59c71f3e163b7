"""Meta-train an LPG update rule.

    python -m experiments.meta_train --preset quick            # minutes on a 2-core CPU
    python -m experiments.meta_train --preset paper --run-dir runs/paper   # accelerator scale

Progress is printed per chunk; metrics go to RUN_DIR/metrics.jsonl, checkpoints to
RUN_DIR/checkpoints (resumed automatically; Ctrl-C checkpoints and stops), a progress plot
to RUN_DIR/progress.png, the rule to RUN_DIR/rule.msgpack.
Several hosts: start the same command on each with --distributed (see README).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments.cli import Parser, add_common_args, apply_overrides, entry_point, fail, pick_preset
from experiments.presets import META_PRESETS
from lpg import sharding
from lpg.meta import MetaConfig, make_meta_trainer, sources_for
from lpg.runs import RunDir, host_loop
from lpg.update_rule import save_rule


def chunk_records(config: MetaConfig, chunk: int, metrics: dict) -> list[dict]:
    """One JSONL row per meta-step of a chunk."""
    rows = []
    for i in range(config.steps_per_chunk):
        step = chunk * config.steps_per_chunk + i + 1
        row = {"step": step, "env_steps": step * config.env_steps_per_meta_step}
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


def meta_train(config: MetaConfig, run_dir: str | None, resume: bool = True, devices: int | None = None,
               quiet: bool = False, tensorboard: bool = False):
    """Runs (or resumes) meta-training; returns (final MetaState, trainer)."""
    mesh = sharding.lifetime_mesh(devices)
    sharding.check_divisible(config.lifetimes_per_env, mesh)
    trainer = make_meta_trainer(config, sources_for(config.envs))
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed))
    shardings = sharding.meta_state_shardings(abstract, mesh)
    init = jax.jit(trainer.init, out_shardings=shardings)
    run_chunk = jax.jit(trainer.run, in_shardings=(shardings,), out_shardings=(shardings, None), donate_argnums=0)

    is_main = jax.process_index() == 0
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if is_main and not quiet else (lambda text: None)
    num_chunks = config.num_meta_steps // config.steps_per_chunk
    run = RunDir(run_dir, config, resume=resume, tensorboard=tensorboard and is_main) if run_dir else None
    if run is not None and resume and run.finished(num_chunks):
        # Nothing left to do: restore the final state into its abstract shape, compile nothing.
        template = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        state, _ = run.restore(template)
        say(f"already finished: {run.path} holds all {config.num_meta_steps} meta-steps; the rule is "
            f"{run.path / 'rule.msgpack'} (pass --no-resume to start over)")
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(state.rule_params), config.rule)
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
    say(f"compiling a chunk of {config.steps_per_chunk} meta-steps (1-3 minutes on a 2-core CPU for the "
        f"small presets; XLA may warn about a slow compile meanwhile, which is harmless)...")
    run_chunk = run_chunk.lower(state).compile()
    say(f"compiled in {time.time() - t0:.0f}s; meta-training: {num_chunks - start} chunk(s) of "
        f"{config.steps_per_chunk} meta-steps, {config.env_steps_per_meta_step:,} env steps each")
    rates: list[float] = []
    clock = [time.time()]

    def timed_chunk(s):
        s, m = run_chunk(s)
        m = sharding.to_host(m)
        now = time.time()
        rates.append(config.env_steps_per_meta_step * config.steps_per_chunk / (now - clock[0]))
        clock[0] = now
        return s, m

    def records(chunk, metrics):
        rows = chunk_records(config, chunk, metrics)
        rows[-1]["steps_per_second"] = rates[-1]
        for name in config.envs:  # return of the lifetimes that ended during this chunk
            counts = np.asarray(metrics[f"{name}/final_returns_count"])
            if counts.sum() > 0:
                finals = np.asarray(metrics[f"{name}/final_return"])
                rows[-1][f"{name}/chunk_final_return"] = float((finals * counts).sum() / counts.sum())
        return rows

    on_save = (lambda: plot_progress(run.read_metrics(), config, run.path / "progress.png")) \
        if run is not None and is_main else None
    state = host_loop(
        run, state, timed_chunk, num_chunks, records, describe(config, rates),
        checkpoint_every=config.checkpoint_every, start_chunk=start, quiet=quiet or not is_main, on_save=on_save,
    )
    if run is not None:
        if is_main:
            save_rule(run.path / "rule.msgpack", sharding.to_host(state.rule_params), config.rule)
        run.close()
    return state, trainer


@entry_point
def main(argv=None):
    parser = Parser(__doc__)
    add_common_args(parser, META_PRESETS, default="quick")
    parser.add_argument("--devices", type=int, default=None, help="number of local devices to shard over (default all)")
    parser.add_argument("--distributed", action="store_true",
                        help="join jax.distributed (multi-host); set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID")
    args = parser.parse_args(argv)
    if args.distributed:
        sharding.initialize_distributed()
    try:
        config = apply_overrides(pick_preset(META_PRESETS, args.preset), args.set)
        sources_for(config.envs)  # unknown names fail here, before anything is compiled
    except ValueError as e:
        fail(str(e))
    run_dir = args.run_dir or f"runs/meta_{args.preset}"
    print(f"meta-training preset {args.preset!r} on {jax.device_count()} {jax.devices()[0].platform} device(s) "
          f"-> {run_dir}", file=sys.stderr)
    meta_train(config, run_dir, resume=not args.no_resume, devices=args.devices, tensorboard=args.tensorboard)
    print(f"rule saved to {Path(run_dir) / 'rule.msgpack'}; progress plot {Path(run_dir) / 'progress.png'}.\n"
          f"Next: python -m experiments.evaluate --rule {Path(run_dir) / 'rule.msgpack'}   "
          f"(the held-out suite against A2C; writes {Path(run_dir) / 'eval'})", file=sys.stderr)


if __name__ == "__main__":
    main()
