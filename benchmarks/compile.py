"""The `paper` preset's first compile: one program for every source (as `meta_train` compiles a
meta-step) against one program per source, compiled one after another and in parallel threads.

    python -m benchmarks.compile                   # the paper preset's 24 sources, prints JSON
    python -m benchmarks.compile --sources 4       # its first 4 sources

A meta-step's program holds each source's meta-gradient and lifetime renewal as its own
sub-program (`lpg.meta.make_meta_trainer` loops over sources in Python), so its compile time grows
with the number of sources (BENCHMARKS.md). Per source, the same work is
`group_meta_gradient` + `renew_lifetimes`: compiled as separate programs they could be compiled
on several host cores at once (XLA compiles outside Python's lock). This measures what that
would save before the trainer is built that way: (a) `fused`: `trainer.run` at one meta-step per
chunk, lowered and compiled; (b) `split, sequential`: one program per source, lowered and
compiled in turn; (c) `split, parallel`: the same programs built afresh (so nothing is reused
from (b)), lowered in turn and compiled in a thread pool of --threads (default: the host's cores).
The split programs leave out the meta-optimiser's update, a small program of its own. Lowering (tracing, Python) is reported apart from
the XLA compile. Lifetimes per source: --lifetimes (8; the compile barely depends on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax

from benchmarks.timing import machine, progress
from experiments.presets import META_PRESETS
from lpg.meta import group_meta_gradient, make_meta_trainer, renew_lifetimes, sources_for


def per_source_programs(config):
    """(names, [jitted fn], [abstract args]) of one program per source: its meta-gradient and the renewal."""
    trainer = make_meta_trainer(config, sources_for(config.envs))
    state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    fns, args = [], []
    for group, batch in zip(trainer.groups, state.lifetimes):
        def source_step(rule_params, batch, key, group=group):
            loss, grads, batch, metrics, finite = group_meta_gradient(group, config, rule_params, batch)
            batch, stats = renew_lifetimes(group, config, batch, metrics, finite, key)
            return loss, grads, batch, stats
        fns.append(jax.jit(source_step, donate_argnums=1))
        args.append((state.rule_params, batch, state.key))
    return [g.source.name for g in trainer.groups], fns, args, trainer, state


def lower_all(fns, args):
    t0 = time.perf_counter()
    lowered = [fn.lower(*a) for fn, a in zip(fns, args)]
    return lowered, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=None, help="only the paper preset's first N sources")
    parser.add_argument("--lifetimes", type=int, default=8, help="lifetimes per source (8)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    paper = META_PRESETS["paper"]
    config = dataclasses.replace(paper, envs=paper.envs[:args.sources], lifetimes_per_env=args.lifetimes,
                                 steps_per_chunk=1, num_meta_steps=1, checkpoint_every=1)
    names, fns, fn_args, trainer, state = per_source_programs(config)
    result = {"sources": names, "lifetimes_per_source": args.lifetimes,
              "lifetime_microbatches": config.lifetime_microbatches, "threads": args.threads}

    progress(f"(a) fused: one program for {len(names)} source(s)...")
    t0 = time.perf_counter()
    lowered = jax.jit(trainer.run, donate_argnums=0).lower(state)
    t1 = time.perf_counter()
    lowered.compile()
    result["fused"] = {"lower_s": round(t1 - t0, 2), "compile_s": round(time.perf_counter() - t1, 2)}
    progress(f"    {result['fused']}")

    progress("(b) split, sequential...")
    lowered, lower_s = lower_all(fns, fn_args)
    per_source = []
    t0 = time.perf_counter()
    for low in lowered:
        t = time.perf_counter()
        low.compile()
        per_source.append(round(time.perf_counter() - t, 2))
    result["split_sequential"] = {"lower_s": round(lower_s, 2), "compile_s": round(time.perf_counter() - t0, 2),
                                  "per_source_compile_s": dict(zip(names, per_source))}
    progress(f"    lower {lower_s:.1f}s, compile {result['split_sequential']['compile_s']}s")

    progress(f"(c) split, parallel in {args.threads} thread(s)...")
    _, fns, fn_args, _, _ = per_source_programs(config)  # fresh functions: nothing cached from (b)
    lowered, lower_s = lower_all(fns, fn_args)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda low: low.compile(), lowered))
    result["split_parallel"] = {"lower_s": round(lower_s, 2), "compile_s": round(time.perf_counter() - t0, 2)}
    progress(f"    {result['split_parallel']}")
    print(json.dumps({"benchmark": "compile", "machine": machine(), **result}, indent=1))


if __name__ == "__main__":
    main()
