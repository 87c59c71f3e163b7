"""The RL² sweep: every (setting, seed) trained and scored against the exact Bayes regret, a rerun
resumes without training again, and the table reports each seed, the spread and collapsed runs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from experiments import rl2_sweep
from experiments.rl2 import EnvConfig
from lpg import bayes


def test_sweep_trains_every_setting_and_seed_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    argv = ["--preset", "tiny", "--set", "x_values=0.3", "--set", "eval_trials=20", "--run-dir", str(out)]
    rl2_sweep.main(argv)
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert sorted((r["label"], r["seed"]) for r in rows) == [("reward_prob=0.3,trial_len=10", 0),
                                                             ("reward_prob=0.3,trial_len=10", 1)]
    # The setting's exact Bayes regret: the oracle's value less the Bayes-optimal policy's, both by DP.
    exact = bayes.swapped_bandit_oracle_value(0.3, 10) - bayes.swapped_bandit_bayes_optimal(0.3, 10).value
    for r in rows:  # regret ratio = the agent's regret / the exact Bayes regret of that setting
        assert r["exact_bayes_regret"] == pytest.approx(exact, rel=1e-6)
        assert r["regret_ratio"] == pytest.approx(r["regret"] / exact)
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


def test_three_arm_beta_family_is_checked_and_scored_against_its_own_dp():
    with pytest.raises(ValueError, match="trial_len must be <= 20 for bandit_beta with more than 2 arms"):
        dataclasses.replace(rl2_sweep.PRESETS["beta3"], x_values=(20, 50))
    with pytest.raises(ValueError, match="num_arms applies to bandit_beta only"):
        EnvConfig("bandit_swapped", num_arms=3)
    from experiments.rl2 import make_suite

    suite = make_suite(rl2_sweep.PRESETS["beta3"].env({"trial_len": 5}))
    assert suite.env.action_space(suite.params).n == 3
    assert suite.exact["bayes_optimal"] == pytest.approx(bayes.beta_bandit_bayes_optimal(5, num_arms=3).value)
    assert suite.exact["oracle"] == pytest.approx(5 * 3 / 4)  # T K / (K + 1) for the uniform prior


@pytest.mark.slow  # default-suite time (session 30): ~13 s; the per-setting sweep test above stays
def test_once_sweep_trains_one_agent_per_seed_on_the_mixture_and_scores_every_setting(tmp_path, monkeypatch):
    tiny = rl2_sweep.PRESETS["tiny"]
    mixture = tuple(EnvConfig("bandit_swapped", trial_len=10, reward_prob=p) for p in (0.1, 0.3))
    monkeypatch.setitem(rl2_sweep.PRESETS, "tiny_once", dataclasses.replace(
        tiny, base=dataclasses.replace(tiny.base, agent=dataclasses.replace(tiny.base.agent, rollout_len=10),
                                       train_envs=mixture), train_on="once"))
    out = tmp_path / "mix"
    argv = ["--preset", "tiny_once", "--set", "x_values=0.2,0.3", "--set", "eval_trials=20", "--run-dir", str(out)]
    trained = []
    real = rl2_sweep.train
    monkeypatch.setattr(rl2_sweep, "train", lambda config, *a, **k: trained.append(config.train.seed) or real(config, *a, **k))
    rl2_sweep.main(argv)
    assert trained == [0, 1]  # one agent per seed, not one per setting
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert sorted((r["label"], r["seed"]) for r in rows) == [(f"reward_prob={p},trial_len=10", s)
                                                             for p in (0.2, 0.3) for s in (0, 1)]
    assert {r["label"]: r["trained_on"] for r in rows} == {"reward_prob=0.2,trial_len=10": False,
                                                           "reward_prob=0.3,trial_len=10": True}
    config = json.loads((out / "once" / "seed1" / "config.json").read_text())
    assert [e["reward_prob"] for e in config["train_envs"]] == [0.1, 0.3] and config["train"]["seed"] == 1
    summary = (out / "summary.md").read_text()
    assert "| reward_prob=0.2,trial_len=10 (not trained on) |" in summary
    assert "a mixture of 2 settings of the family, each trial drawing one (reward_prob 0.1; reward_prob 0.3)" in summary
    rl2_sweep.main(argv)  # a rerun trains nothing
    assert trained == [0, 1]
    with pytest.raises(ValueError, match="train_on must be one of"):
        dataclasses.replace(tiny, train_on="mixture")
    with pytest.raises(ValueError, match="settings of env's family"):
        dataclasses.replace(tiny.base, train_envs=(EnvConfig("bandit_beta"),))
