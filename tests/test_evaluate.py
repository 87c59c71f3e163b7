"""Evaluation: confidence intervals, final-return summaries, and the evaluate / analyse_y commands end to end."""

import json

import jax
import numpy as np
import pytest

from experiments import analyse_y, evaluate as evaluate_cmd
from lpg import evaluate
from lpg.update_rule import RuleConfig, init_rule, save_rule


def test_confidence_interval_on_known_numbers():
    mean, half = evaluate.confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t_{4, 0.975} = 2.7764451, s = sqrt(2.5): half = 2.7764451 * sqrt(2.5) / sqrt(5)
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * np.sqrt(0.5), rel=1e-6)
    assert evaluate.confidence_interval([1.0, 3.0])[1] == pytest.approx(12.7062047 * 1.0, rel=1e-6)
    assert np.isnan(evaluate.confidence_interval([2.0])[1])


def test_final_report_weights_by_episodes_and_skips_lifetimes_without_episodes():
    config = evaluate.LifetimeConfig(num_updates=10, num_seeds=3, curve_points=2)
    returns = np.zeros((1, 3, 10))
    episodes = np.zeros((1, 3, 10))
    returns[0, 0, -1], episodes[0, 0, -1] = 4.0, 1.0  # seed 0: one episode at the end, return 4
    returns[0, 1, :], episodes[0, 1, :] = 2.0, 3.0  # seed 1: return 2 throughout
    # seed 2: no episode ever ends
    report = evaluate.final_report({"episode_return": returns, "episodes": episodes}, config)
    assert report["final"] == [[4.0, 2.0, None]]
    assert report["lifetimes_without_final_episode"] == 1
    assert report["final_mean"] == pytest.approx(3.0)
    # windows of 5 updates: seed 0 has no episode in the first (nan, left out), 4.0 in the second
    assert report["curve_mean"] == [2.0, 3.0]


@pytest.fixture(scope="module")
def tiny_rule(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "rule.msgpack"
    config = RuleConfig(hidden=8, y_size=4)
    save_rule(path, init_rule(config, jax.random.PRNGKey(0)), config)
    return path


def test_evaluate_command_end_to_end(tiny_rule, tmp_path, capsys):
    out = tmp_path / "eval"
    # Short chains last 5-30 steps, so every 30-step rollout ends an episode in every stream.
    evaluate_cmd.main(["--rule", str(tiny_rule), "--envs", "chain_short", "--updates", "10", "--seeds", "2",
                       "--levels", "2", "--num-envs", "4", "--rollout-len", "30", "--curve-points", "5",
                       "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    chain = results["envs"]["chain_short"]
    assert (chain["num_levels"], chain["num_seeds"], chain["tabular"]) == (2, 2, True)
    assert set(chain["learners"]) == {"LPG", "A2C", "untrained rule"}
    for report in chain["learners"].values():
        assert np.asarray(report["final"], float).shape == (2, 2)
        assert report["final_mean"] is not None and len(report["curve_mean"]) == 5
    assert chain["optimal_return_mean"] == pytest.approx(1.0)  # a chain's best return is +1
    for png in ("curves.png", "curves_chain_short.png"):
        assert (out / png).stat().st_size > 1000
    assert "| chain_short | 2 x 2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_command_on_a_network_agent(tiny_rule, tmp_path):
    out = tmp_path / "eval"
    evaluate_cmd.main(["--rule", str(tiny_rule), "--envs", "Catch-bsuite", "--updates", "4", "--seeds", "2",
                       "--num-envs", "4", "--rollout-len", "10", "--out", str(out)])
    catch = json.loads((out / "results.json").read_text())["envs"]["Catch-bsuite"]
    assert catch["tabular"] is False and catch["optimal_return"] is None
    assert catch["settings"]["optimizer"] == "adam"
    assert all(r["final_mean"] is not None for r in catch["learners"].values())


def test_commands_reject_a_missing_rule_and_an_unknown_env(tiny_rule, tmp_path, capsys):
    for command in (evaluate_cmd, analyse_y):
        with pytest.raises(SystemExit):
            command.main(["--rule", str(tmp_path / "nope.msgpack")])
        assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_cmd.main(["--rule", str(tiny_rule), "--envs", "chain_short", "no_such_env"])
    assert "unknown environment 'no_such_env'" in capsys.readouterr().err


@pytest.mark.slow
def test_analyse_y_command_end_to_end(tiny_rule, tmp_path):
    out = tmp_path / "y"
    analyse_y.main(["--rule", str(tiny_rule), "--env", "tabular_small", "--updates", "20", "--seeds", "2",
                    "--num-envs", "8", "--rollout-len", "10", "--min-visits", "1", "--out", str(out)])
    results = json.loads((out / "y_analysis.json").read_text())
    assert results["eval_discounts"] == [0.995, 0.99, 0.95, 0.9]
    for r in results["r2"].values():
        assert np.asarray(r["r2_per_seed"]).shape == (2, 4)
    assert (out / "y_fits.png").exists() and (out / "y_r2.png").exists()
