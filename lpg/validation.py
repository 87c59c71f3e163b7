"""Choosing a meta-training run's rule among its snapshots by a validation set that shares nothing
with the held-out suite.

Along meta-training a rule's abilities come and go separately (results/lpg/l200long: a meta-seed
solving 8/8 held-out chains at one snapshot and 2/8 at its end), so the last rule of a run is a
draw. A validation set scores every snapshot and the best is kept, as early stopping would.

The default set asks for the abilities the suite tests, on training-family levels only:

* `chain_medium`: delayed chains of 21-30 steps (inside `chain_short`'s training range), on table
  agents (SGD), run with rollouts of 10 steps instead of training's 20, so the branch credit
  crosses two or three rollout boundaries, as the suite's 31-50-step chains at 20 steps do, while
  no level is longer than a trained one.
* `generated_sparse_long_vector`: one-goal training-family grids with 40-step episodes on MLP
  agents (Adam), at the same 10-step rollouts: a goal is reached several rollouts after the
  steps that earned it.

Levels are drawn with their own key; scores are normalised per level by exact planning (0 = the
uniform policy, 1 = the optimal one), averaged over seeds and levels per environment; a snapshot's
score is the mean over environments, ranked after the count of lifetimes that stayed finite
(`lpg.evaluate.selection_key`'s order).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lpg import evaluate as ev_lib
from lpg.a2c import A2CConfig
from lpg.config import validate
from lpg.update_rule import RuleConfig


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    envs: tuple[str, ...] = ("chain_medium", "generated_sparse_long_vector")
    levels: int = 8
    seeds: int = 2
    num_updates: int = 200
    num_envs: int = 32
    rollout_len: int = 10
    seed: int = 20261203  # the levels' and lifetimes' key; no training or evaluation key derives from it

    def __post_init__(self):
        validate(self, [
            (len(self.envs) >= 1, "envs must name at least one environment"),
            (min(self.levels, self.seeds, self.num_updates, self.num_envs, self.rollout_len) >= 1,
             "levels, seeds, num_updates, num_envs and rollout_len must be >= 1"),
        ])
        for name in self.envs:
            ev_lib.check_env_name(name)
        overlap = ev_lib.training_overlap(self.envs, ev_lib.HELDOUT_SUITE)
        if overlap:
            raise ValueError(f"a validation set must share nothing with the held-out suite: {'; '.join(overlap)}")

    @property
    def lifetime(self) -> ev_lib.LifetimeConfig:
        return ev_lib.LifetimeConfig(num_updates=self.num_updates, num_envs=self.num_envs,
                                     rollout_len=self.rollout_len, num_seeds=self.seeds)


class Validator:
    """Scores rules of one `RuleConfig` on a validation set; compiles each environment's lifetimes
    once, so scoring many snapshots costs one compile per environment.

    `table_lr` / `network_lr`: the agents' learning rates (SGD on tables, Adam on networks);
    `discount`, `alpha_y`: LPG's, also the γ of the exact references.
    """

    def __init__(self, config: ValidationConfig, rule_config: RuleConfig, table_lr: float, network_lr: float,
                 discount: float, alpha_y: float):
        self.config, self.rule_config = config, rule_config
        keys = jax.random.split(jax.random.PRNGKey(config.seed), len(config.envs))
        self._envs = []
        for name, key in zip(config.envs, keys):
            k_levels, k_run = jax.random.split(key)
            ev = ev_lib.eval_env(name, config.levels, k_levels)
            refs = ev_lib.exact_references(ev, discount)
            if refs is None:
                raise ValueError(f"validation environment {name!r} has no exact MDP to normalise its scores; "
                                 f"allowed: level sources with fixed placements (chains, generated grids)")
            settings = ev_lib.AgentSettings("tabular" if ev.tabular else "auto", "sgd" if ev.tabular else "adam",
                                            discount, alpha_y, A2CConfig())
            hypers = settings.hypers(table_lr if ev.tabular else network_lr, config.num_updates)
            lifetimes = ev_lib.lpg_lifetimes(ev, rule_config, settings, config.lifetime)
            self._envs.append((ev, refs, hypers, lifetimes, k_run))

    def score(self, rule_params: Any) -> dict[str, Any]:
        """{"score": mean over environments of the mean normalised final return, "non_finite":
        lifetimes whose agent or returns went non-finite, "envs": {name: score}} (JSON-ready)."""
        per_env, non_finite = {}, 0
        for ev, refs, hypers, lifetimes, key in self._envs:
            run = ev_lib.run_candidate(lifetimes, ev.levels, (rule_params, hypers), key, self.config.lifetime)
            non_finite += int((~run.finite).sum())
            value = ev_lib.nanmean(ev_lib.level_scores(run.final, refs))
            per_env[ev.name] = float(value) if np.isfinite(value) else None
        values = [v for v in per_env.values() if v is not None]
        return {"score": float(np.mean(values)) if len(values) == len(per_env) else None,
                "non_finite": non_finite, "envs": per_env}


def ranking_key(result: dict[str, Any]) -> tuple[int, float]:
    """Higher is better: fewer non-finite lifetimes first, then the score (None: worst)."""
    score = result["score"]
    return -result["non_finite"], score if score is not None else -np.inf
