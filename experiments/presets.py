"""Named configurations for the LPG entry points (A2C training, meta-training)."""

from __future__ import annotations

import dataclasses

from envs.levels import NAMED_GRIDS
from envs.sources import COLLECT_SUFFIX
from lpg.a2c import A2CConfig
from lpg.es import ESConfig
from lpg.meta import MetaConfig
from lpg.update_rule import RuleConfig

# A2C baseline on a named environment: (environment name, config, agent updates).
A2C_PRESETS = {
    # Tabular agent on the 11x11 dense grid: a few minutes on 2 CPU cores.
    # lr 20 (SGD on the batch-mean loss) measured best of {10, 20, 40, 160} on tabular_dense:
    # 40 peaks then collapses, 160 collapses at once.
    "quick": ("tabular_dense", A2CConfig(num_envs=64, rollout_len=20, discount=0.99, learning_rate=20.0,
                                          entropy_cost=0.01, gae_lambda=0.95), 1000),
    "chain": ("chain_short", A2CConfig(num_envs=64, rollout_len=20, discount=0.99, learning_rate=20.0), 300),
    # Neural agent on a random grid (binary map observations).
    "random_small": ("random_small", A2CConfig(optimizer="adam", learning_rate=3e-3, max_grad_norm=0.5,
                                               agent="conv"), 2000),
}

# Meta-training presets.
PAPER_GRIDS = tuple(NAMED_GRIDS)  # the five tabular and the five random grids of Appendix A
META_PRESETS = {
    # Shows the rule learning on a 2-core CPU in minutes: small LSTM, short lifetimes,
    # a tiny grid, a short delayed chain and a generated-grid family.
    "quick": MetaConfig(
        envs=("tabular_small", "chain_short", "generated"),
        lifetimes_per_env=8,
        num_envs=16,
        rollout_len=20,
        inner_updates=5,
        lifetime_updates=100,
        rule=RuleConfig(hidden=64, y_size=30),
        meta_lr=1e-3,
        num_meta_steps=800,
        steps_per_chunk=10,
        checkpoint_every=5,
    ),
    # Paper scale (Table 2): the paper's whole training set, 960 lifetimes x 64 environments x
    # 20 steps, K = 5, 256-unit LSTM, Adam 1e-4. Sources: the five tabular grids (table agents,
    # SGD 20-80) and the five random grids (conv agents, Adam 2e-3 to 2e-2), each with 9 and with
    # 18 actions (the paper samples the action set per lifetime; a batch of lifetimes needs one
    # action count, so each is its own source), and the four delayed chains: 24 sources x 40 =
    # 960 lifetimes. Budget: 1,400 meta-steps x 7.37M env steps = 1.03e10 env steps, the paper's
    # "about 1e10" (24 h on a 16-core TPU-v2 there). Lifetimes: 2,500 updates (3.2M steps), the
    # paper's tabular-grid lifetime (it gave chains 1M steps and random grids 30M).
    "paper": MetaConfig(
        envs=tuple(f"{grid}{suffix}" for grid in PAPER_GRIDS for suffix in ("", COLLECT_SUFFIX))
        + ("chain_short", "chain_long", "chain_short_noisy", "chain_long_noisy"),
        lifetimes_per_env=40,
        num_envs=64,
        rollout_len=20,
        inner_updates=5,
        lifetime_updates=2500,
        rule=RuleConfig(hidden=256, y_size=30),
        meta_lr=1e-4,
        # Each source's 40 lifetimes in 4 sequential micro-batches (the same update): XLA's memory
        # analysis of the compiled 10-step chunk on CPU, 192 GB with 1, 8.1 GB with 4 (lpg.meta).
        lifetime_microbatches=4,
        num_meta_steps=1400,
        steps_per_chunk=10,
        checkpoint_every=5,
    ),
}
# The `cpu` preset of sessions 11-16 (results/lpg/gatecarry/ and the folders after it, whose commands say
# `--preset cpu`): about 28 minutes on 2 CPU cores (results/lpg/README.md).
# Table agents on generated grids (the generator's training family) and on delayed chains of
# length 5-30, and MLP agents (Adam) on the same generated grids seen as vectors (one-hot cell,
# presence bits) and on one-goal levels with rare rewards (generated_sparse_vector); agent
# rates as evaluated (SGD 20-80, Adam 2e-3 to 2e-2); lifetimes of 100 updates of 32 envs x 20
# steps, the evaluation's; π̂ with its batch-mean baseline for Adam agents only (tables take π̂
# as emitted: with the baseline on tables too, meta-seeds solved fewer long chains). Measured:
# with 250-update lifetimes, or without balance_sources, the rule solved chains up to T = 20
# and committed to a random branch beyond; with MLP agents only on chains it never learned
# Catch; the sparse source is not learned by meta-training and DeepSea is not learned
# (results/lpg/README.md). Since session 11 the rule's y target is a learned λ-return over
# targets (bootstrap_gate with _carry and _terminal_shut, lpg/update_rule.py): at three
# meta-seeds every rule solves 6-8 of 8 held-out chains of 31-50 steps (before: 6, 6, 0) and the
# pooled suite IQM rose from 0.67 to 0.81 (results/lpg/gatecarry/).
META_PRESETS["cpu100"] = MetaConfig(
    envs=("generated", "chain_short", "generated_vector", "generated_sparse_vector"),
    lifetimes_per_env=8,
    num_envs=32,
    rollout_len=20,
    inner_updates=5,
    lifetime_updates=100,
    rule=RuleConfig(hidden=64, y_size=30, pi_hat_baseline="adam_batch_mean", bootstrap_gate=True,
                    bootstrap_gate_terminal_shut=True, bootstrap_gate_carry=True),
    meta_lr=1e-3,
    num_meta_steps=1800,
    steps_per_chunk=10,
    checkpoint_every=5,
)
# The committed `cpu` preset of sessions 17-25 (results/lpg/selected/, sections 1-6; their commands
# say `--preset cpu`): `cpu100` with lifetimes of 200 updates, the evaluation's, and one-goal grids
# whose 40-step episodes span two rollouts (generated_sparse_long_vector) instead of 10-step ones, so
# network agents' credit must cross a rollout boundary (results/lpg/l200long/); then
# `experiments.select_rule RUN --every 100 --y-init zeros --pi-hat-baseline adam_step_mean` keeps the
# snapshot that does best on a validation set sharing nothing with the held-out suite
# (lpg/validation.py). Three meta-seeds side by side on 2 CPU cores took 88 minutes each
# (5,270-5,290 s), the validation of their snapshots beside them; alone, 100 meta-steps took 140 s
# after an 81 s compile: about 44 minutes for the 1,800.
META_PRESETS["cpu_flat_entropy"] = dataclasses.replace(
    META_PRESETS["cpu100"], lifetime_updates=200,
    envs=("generated", "chain_short", "generated_vector", "generated_sparse_long_vector"))
# The rule the project commits (since session 26; results/lpg/selected/annealnt3k/rules/): the same,
# with the meta-objective's entropy bonus falling linearly to 0 over each lifetime (entropy_anneal=1)
# and 3,000 meta-steps, the rule then chosen among its snapshots the same way. At five meta-seeds it
# meets A2C's held-out suite IQM at three (the preset above: one) and does better off the suite:
# CartPole, a key-door corridor, a task with step costs only, the README's corridor
# (results/lpg/selected/README.md, sections 9-12). Two meta-seeds side by side took 5,910 s each;
# alone, about 70 minutes (the 140 s per 100 meta-steps above).
META_PRESETS["cpu"] = dataclasses.replace(META_PRESETS["cpu_flat_entropy"], entropy_anneal=1.0, num_meta_steps=3000)
# How to choose a preset's rule among its snapshots (`experiments.select_rule` arguments after the
# run directory): meta_train's closing message prints it, so the recipe that made the committed
# rules is the one a user is told to run. Presets not listed: select_rule's defaults.
SELECT_ARGS = {preset: "--every 100 --y-init zeros --pi-hat-baseline adam_step_mean" for preset in ("cpu", "cpu_flat_entropy")}
# The `cpu` preset of sessions 4-10, without the gate: the rules in results/lpg/rules/ and the comparison,
# ES and MinAtar results that use them were meta-trained with it (`--preset cpu` in their commands).
META_PRESETS["cpu_nogate"] = dataclasses.replace(
    META_PRESETS["cpu100"], rule=RuleConfig(hidden=64, y_size=30, pi_hat_baseline="adam_batch_mean"))
META_PRESETS["tiny"] = dataclasses.replace(
    META_PRESETS["quick"], envs=("probe",), lifetimes_per_env=2, num_envs=4, rollout_len=4, inner_updates=2,
    lifetime_updates=8, rule=RuleConfig(hidden=8, y_size=4), num_meta_steps=4, steps_per_chunk=2,
    checkpoint_every=1,
)

# Evolution strategies (lpg.es, experiments.es_train): the meta-gradient presets' rule, sources
# and lifetimes, scored at the end of whole lifetimes.
ES_PRESETS = {
    # Seconds on a 2-core CPU: checks the install and the plumbing, learns nothing.
    "tiny": ESConfig(envs=("probe",), num_envs=4, rollout_len=4, lifetime_updates=8, score_updates=2,
                     rule=RuleConfig(hidden=8, y_size=4), levels_per_env=2, population_size=4,
                     num_generations=4, steps_per_chunk=2, checkpoint_every=1),
}
# Whole-lifetime ES on the `cpu100` meta-gradient preset's sources, agents and lifetimes, and its rule
# before the gate (the rule results/es/ was trained with; ES with the gate is untried): about an
# hour on 2 CPU cores (results/es/README.md).
ES_PRESETS["cpu"] = ESConfig(
    envs=META_PRESETS["cpu100"].envs, num_envs=32, rollout_len=20, lifetime_updates=100,
    rule=META_PRESETS["cpu_nogate"].rule, hypers=META_PRESETS["cpu100"].hypers,
    levels_per_env=1, validation_levels=4, score_updates=10, population_size=32, sigma=0.03, es_lr=0.01,
    num_generations=150, steps_per_chunk=1, checkpoint_every=5,
)
