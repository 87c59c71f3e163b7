"""Named configurations for the LPG entry points (A2C training, meta-training)."""

from __future__ import annotations

import dataclasses

from lpg.a2c import A2CConfig
from lpg.meta import HyperChoices, MetaConfig
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
        hypers=HyperChoices(learning_rates=(1.0, 2.0, 4.0)),
        meta_lr=1e-3,
        num_meta_steps=800,
        steps_per_chunk=10,
        checkpoint_every=5,
    ),
    # Paper scale (Table 2): 960 lifetimes x 64 environments x 20 steps, K = 5, 256-unit LSTM.
    "paper": MetaConfig(
        envs=("tabular_dense", "tabular_sparse", "tabular_long_horizon", "tabular_longer_horizon",
              "tabular_long_dense", "chain_short", "chain_long", "chain_short_noisy"),
        lifetimes_per_env=120,
        num_envs=64,
        rollout_len=20,
        inner_updates=5,
        lifetime_updates=2500,
        rule=RuleConfig(hidden=256, y_size=30),
        meta_lr=1e-4,
        num_meta_steps=100_000,
        steps_per_chunk=50,
        checkpoint_every=20,
    ),
}
META_PRESETS["tiny"] = dataclasses.replace(
    META_PRESETS["quick"], envs=("probe",), lifetimes_per_env=2, num_envs=4, rollout_len=4, inner_updates=2,
    lifetime_updates=8, rule=RuleConfig(hidden=8, y_size=4), num_meta_steps=4, steps_per_chunk=2,
    checkpoint_every=1,
)
