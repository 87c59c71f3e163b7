"""Run directories: resolved config, JSONL metrics, orbax checkpoints, resume, progress.

Every long job (A2C training, LPG meta-training, RL² training) is a host loop over
jitted chunks; `host_loop` runs it, printing progress and writing metrics between
chunks and checkpointing every `checkpoint_every` chunks. A killed job restarted
with the same run directory resumes from its last checkpoint and continues exactly
where it stopped (metrics logged after that checkpoint are dropped and redone). A finished
outer loop resumed with a larger step count (`RunDir(extendable=...)`) goes on the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp


def config_to_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(c) for c in config]
    return config


def _to_python(x: Any) -> Any:
    x = np.asarray(x)
    if x.ndim == 0:
        v = x.item()
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return x.tolist()


COMPILE_CACHE = "xla_cache"  # RUN_DIR/xla_cache: the run's compiled programs (`use_compile_cache`)
_compile_cache_hits = [0]


def _count_cache_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _compile_cache_hits[0] += 1


def use_compile_cache(path: str | os.PathLike) -> None:
    """Keeps this process's compiled XLA programs in `path` (JAX's persistent compilation cache), so
    that a resumed or repeated run loads them instead of compiling again: the `paper` preset's chunk
    compiles for minutes on a CPU and for longer than 8 minutes on an H200's host (BENCHMARKS.md).
    JAX decides on its cache at the process's first compile, so call this before anything is
    compiled (the entry points do, with RUN_DIR/xla_cache). Programs that compile in under a second
    are not kept (`jax_persistent_cache_min_compile_time_secs`)."""
    jax.config.update("jax_compilation_cache_dir", str(path))
    if not getattr(use_compile_cache, "listening", False):
        jax.monitoring.register_event_listener(_count_cache_hit)
        use_compile_cache.listening = True


def compile_cache_hits() -> int:
    """How many programs this process has loaded from the compile cache so far."""
    return _compile_cache_hits[0]


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (another config, an unreadable checkpoint)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a host loop; its message says what was saved and how to resume."""


def config_differences(saved: Any, requested: Any, prefix: str = "") -> list[str]:
    """`key: saved there, requested here` for every dotted key where two config dicts differ."""
    if isinstance(saved, dict) and isinstance(requested, dict):
        found = []
        for key in [*saved, *(k for k in requested if k not in saved)]:
            name = f"{prefix}{key}"
            if key not in requested:
                found.append(f"{name}: {saved[key]!r} there, not in this version's config")
            elif key not in saved:
                found.append(f"{name}: not in the saved config, {requested[key]!r} here")
            else:
                found.extend(config_differences(saved[key], requested[key], f"{name}."))
        return found
    if saved != requested:
        return [f"{prefix.rstrip('.')}: {saved!r} there, {requested!r} here"]
    return []


def _new_field_at_default(config: Any, difference: str) -> bool:
    """Whether `difference` (from `config_differences`) is a field the saved config lacks, set to its default."""
    name, _, rest = difference.partition(": ")
    if not rest.startswith("not in the saved config"):
        return False
    *parents, leaf = name.split(".")
    for part in parents:
        config = getattr(config, part, None)
    fields = {f.name: f for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else {}
    field = fields.get(leaf)
    return field is not None and field.default is not dataclasses.MISSING and getattr(config, leaf) == field.default


class RunDir:
    """A run's folder: `config.json`, `metrics.jsonl`, `checkpoints/` (and whatever its job writes
    beside them, e.g. an outer loop's `rules/` snapshots, which `resume=False` clears as well).

    With several processes (jax.distributed) every process opens the same folder: all take
    part in orbax's checkpointing, and only process 0 writes the config and metrics.
    """

    def __init__(self, path: str | os.PathLike, config: Any, resume: bool = True, max_to_keep: int = 2,
                 tensorboard: bool = False, extendable: tuple[str, ...] = ()):
        """`extendable`: top-level config fields (a run's length, e.g. `num_meta_steps`) that a resumed
        run may raise: the run goes on from its last checkpoint for longer, as if asked for that many
        from the start (for loops whose steps do not depend on the total). `self.extended` then holds
        {field: (saved, requested)}."""
        self.path = Path(path).absolute()
        self.extended: dict[str, tuple[int, int]] = {}
        self.is_main = jax.process_index() == 0
        self.tensorboard = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from None
            self.tensorboard = SummaryWriter(str(self.path / "tensorboard"))
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"
        config_path = self.path / "config.json"
        resolved = config_to_dict(config)
        if config_path.exists() and resume:
            saved = json.loads(config_path.read_text())
            requested = json.loads(json.dumps(resolved))
            for key in extendable:
                before, after = (saved.get(key), requested.get(key)) if isinstance(saved, dict) else (None, None)
                if isinstance(before, int) and isinstance(after, int) and after > before:
                    self.extended[key] = (before, after)
                    saved[key] = after
            # A field added after the run was saved, asked for at its default, is no difference.
            differences = [d for d in config_differences(saved, requested) if not _new_field_at_default(config, d)]
            shared = set(saved) & set(requested) if isinstance(saved, dict) else set()
            if differences and len(shared) < len(requested) / 2:
                raise RunDirError(f"{self.path} holds another kind of run (its config has "
                                  f"{', '.join(list(saved)[:5]) if isinstance(saved, dict) else saved}): "
                                  f"pick another --run-dir, or pass --no-resume to start over there")
            if differences:
                shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
                raise RunDirError(
                    f"{self.path} holds a run with another config ({shown}): rerun with the same settings to "
                    f"resume it, pick another --run-dir, or pass --no-resume to start over there"
                )
        if not resume and self.is_main:
            self.metrics_path.unlink(missing_ok=True)
            shutil.rmtree(self.path / "rules", ignore_errors=True)
        if self.is_main:
            config_path.write_text(json.dumps(resolved, indent=2) + "\n")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.checkpoints = ocp.CheckpointManager(self.path / "checkpoints", options=options)
        if not resume:
            for step in self.checkpoints.all_steps():
                self.checkpoints.delete(step)

    def latest_step(self) -> int | None:
        return self.checkpoints.latest_step()

    def finished(self, num_chunks: int) -> bool:
        """Whether the run's last checkpoint is its last chunk (nothing left to do)."""
        step = self.latest_step()
        return step is not None and step >= num_chunks

    def restore(self, template: Any) -> tuple[Any, int] | None:
        """Restores the latest checkpoint into `template`'s structure; drops later metrics."""
        step = self.checkpoints.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            state = self.checkpoints.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise RunDirError(
                f"the checkpoint in {self.path / 'checkpoints'} (step {step}) does not match the state this "
                f"code builds (was it written by another version?); pass --no-resume to start over or "
                f"pick another --run-dir. Cause: {' '.join(str(e).split())[:300]}"
            ) from e
        if self.is_main and self.metrics_path.exists():
            kept = [
                line for line in self.metrics_path.read_text().splitlines()
                if line and json.loads(line)["chunk"] <= step
            ]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        return state, step

    def save(self, step: int, state: Any) -> None:
        self.checkpoints.save(step, args=ocp.args.StandardSave(state))

    def log(self, records: list[dict]) -> None:
        if not self.is_main:
            return
        with self.metrics_path.open("a") as f:
            for record in records:
                row = {k: _to_python(v) for k, v in record.items()}
                f.write(json.dumps(row) + "\n")
                if self.tensorboard is not None:
                    for name, value in row.items():
                        if isinstance(value, (int, float)) and name != "step":
                            self.tensorboard.add_scalar(name, value, row["step"])

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.checkpoints.wait_until_finished()
        self.checkpoints.close()


class _StopOnSignal:
    """SIGINT/SIGTERM during a host loop: let the running chunk finish, then stop (a second one stops at once)."""

    def __init__(self, quiet: bool):
        self.received, self.quiet, self.previous = None, quiet, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if not self.quiet:
            print(f"{self.received}: finishing the current chunk, then checkpointing (send it again to stop at once)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def host_loop(
    run: RunDir | None,
    state: Any,
    run_chunk: Callable[[Any], tuple[Any, dict]],
    num_chunks: int,
    records: Callable[[int, dict], list[dict]],
    describe: Callable[[dict], str],
    checkpoint_every: int = 1,
    start_chunk: int = 0,
    quiet: bool = False,
    on_save: Callable[[int, Any], None] | None = None,
) -> Any:
    """Runs chunks `start_chunk..num_chunks-1` of a job, logging and checkpointing between them.

    `run_chunk(state) -> (state, metrics)` is jitted by the caller. `records(chunk, metrics)`
    turns a chunk's metrics into JSONL rows (each with a "step"); `describe(last_row)` is the
    one-line progress message; `on_save(chunks_done, state)` runs after every checkpoint (e.g. a
    progress plot, a snapshot of the rule).
    Checkpoints are indexed by completed chunks, and every row records the chunk it came from,
    so a resume can drop rows written after the checkpoint. SIGINT or SIGTERM lets the running
    chunk finish, checkpoints it and raises `Interrupted` (a KeyboardInterrupt) saying how to resume.
    """
    if start_chunk >= num_chunks:
        if not quiet:
            where = f" in {run.path}" if run is not None else ""
            print(f"already finished{where} ({num_chunks}/{num_chunks} chunks); pass --no-resume to start over",
                  file=sys.stderr, flush=True)
        return state
    t0, steps_done = time.time(), 0
    with _StopOnSignal(quiet) as stop:
        for chunk in range(start_chunk, num_chunks):
            state, metrics = run_chunk(state)
            metrics = jax.device_get(metrics)
            rows = [{**row, "chunk": chunk + 1} for row in records(chunk, metrics)]
            steps_done += 1
            last = chunk + 1 == num_chunks
            if run is not None:
                run.log(rows)
                if (chunk + 1) % checkpoint_every == 0 or last or stop.received:
                    run.save(chunk + 1, state)
                    if on_save is not None:
                        on_save(chunk + 1, state)
            if not quiet:
                elapsed = time.time() - t0
                eta = elapsed / steps_done * (num_chunks - chunk - 1)
                print(
                    f"[{chunk + 1}/{num_chunks}] {describe(rows[-1])} | {elapsed:.0f}s elapsed, ~{eta:.0f}s left",
                    file=sys.stderr,
                    flush=True,
                )
            if stop.received and not last:
                if run is None:
                    raise Interrupted(f"{stop.received} after chunk {chunk + 1}/{num_chunks} (no run directory: nothing saved)")
                run.checkpoints.wait_until_finished()
                raise Interrupted(f"{stop.received} after chunk {chunk + 1}/{num_chunks}: checkpoint saved in "
                                  f"{run.path}; run the same command again to resume")
    if run is not None:
        run.checkpoints.wait_until_finished()
    return state


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows a run wrote to RUN_DIR/metrics.jsonl (none if it has not written any)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
