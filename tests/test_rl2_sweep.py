"""The RL² sweep: every (setting, seed) trained and scored against the exact Bayes regret, a rerun
resumes without training again, and the table reports each seed, the spread and collapsed runs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from experiments import rl2_sweep
from experiments.rl2 import EnvConfig


def test_sweep_trains_every_setting_and_seed_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    argv = ["--preset", "tiny", "--set", "x_values=0.3", "--set", "eval_trials=20", "--run-dir", str(out)]
    rl2_sweep.main(argv)
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert sorted((r["label"], r["seed"]) for r in rows) == [("reward_prob=0.3,trial_len=10", 0),
                                                             ("reward_prob=0.3,trial_len=10", 1)]
    for r in rows:  # regret ratio = the agent's regret / the exact Bayes regret of that setting
        assert r["regret_ratio"] == pytest.approx(r["regret"] / r["exact_bayes_regret"])
        assert r["exact_bayes_regret"] > 0 and r["random_regret"] > r["exact_bayes_regret"]
    assert (out / "regret_ratio.png").stat().st_size > 0
    assert "| reward_prob=0.3,trial_len=10 |" in (out / "summary.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(rl2_sweep, "run_one", no_training)
    rl2_sweep.main(argv)  # everything done: only rewrites the table
    with pytest.raises(SystemExit):  # another grid in the same run dir is refused
        rl2_sweep.main(argv[:-2] + ["--set", "seeds=0,1,2", "--run-dir", str(out)])
    assert "holds a sweep with other settings" in capsys.readouterr().err


def test_table_shows_every_seed_the_spread_and_collapse():
    sweep = dataclasses.replace(rl2_sweep.PRESETS["tiny"], x_values=(0.1,), seeds=(0, 1, 2))
    setting = {"reward_prob": 0.1, "trial_len": 10}
    rows = [{"label": rl2_sweep.label(setting), "seed": s, "regret_ratio": r, "agreement": 0.9,
             "final_entropy": e, "collapsed": c}
            for s, r, e, c in [(0, 1.2, 0.2, False), (1, 1.4, 0.1, False), (2, 9.0, 0.01, True)]]
    line = rl2_sweep.table(sweep, rows)[-1]
    assert line.startswith("| reward_prob=0.1,trial_len=10 | 1.20 | 1.40 | 9.00 (collapsed) | 3.87 | 1.20-9.00 | 2/3 |")


def test_collapse_is_a_deterministic_policy_no_better_than_random():
    assert rl2_sweep.collapsed(final_entropy=0.001, regret=4.9, random_regret=5.0)
    assert not rl2_sweep.collapsed(final_entropy=0.001, regret=2.0, random_regret=5.0)  # deterministic, learned
    assert not rl2_sweep.collapsed(final_entropy=0.6, regret=5.0, random_regret=5.0)  # still exploring


def test_sweep_settings_are_checked():
    base = rl2_sweep.PRESETS["swapped"]
    with pytest.raises(ValueError, match="x_field must be one of"):
        dataclasses.replace(base, x_field="arms")
    with pytest.raises(ValueError, match="reward_prob must be in"):
        dataclasses.replace(base, x_values=(0.1, 1.5))
    assert base.experiment({"reward_prob": 0.2, "trial_len": 50}, seed=2).agent.rollout_len == 50
    assert isinstance(base.env({"trial_len": 20.0}).trial_len, int) and EnvConfig().name == "bandit_beta"
