"""Evaluation: statistics (IQM, stratified bootstrap, normalisation), the held-out suite, and the
evaluate / analyse_y commands end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.levels import NAMED_DESCRIPTORS, LevelDistribution, _descriptor_table, is_heldout, make_named_grid
from envs.sources import level_sampler
from experiments import analyse_y, evaluate as evaluate_cmd, lifetime_lengths
from lpg import agents, evaluate
from lpg.a2c import actor_critic_network
from lpg.inner import make_lpg_agent
from lpg.update_rule import RuleConfig, init_rule, load_rule, save_rule


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


# ------------------------------------------------------------------------------ statistics
def test_iqm_is_the_mean_of_the_middle_half():
    # 8 values: the lowest two and the highest two are cut, the outlier 100 with them.
    assert evaluate.iqm([7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 4.0]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    np.testing.assert_allclose(evaluate.iqm([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 8.0, 8.0]], axis=-1), [2.5, 4.0])


def test_stratified_bootstrap_resamples_levels_within_each_environment():
    # Levels are identical within each environment but differ between them: resampling within
    # environments keeps every environment's share of levels, so the interval collapses.
    a, b = np.full(3, 0.2), np.full(5, 0.8)
    point, low, high = evaluate.stratified_bootstrap([a, b], np.mean, num_resamples=500)
    expected = (3 * 0.2 + 5 * 0.8) / 8
    assert point == pytest.approx(expected) and low == pytest.approx(expected) and high == pytest.approx(expected)
    # A resampled level keeps its rows (here two rules' scores that cancel): the mean stays 0.
    rows = np.array([[0.1, 0.5, 0.9, 0.3], [-0.1, -0.5, -0.9, -0.3]])
    assert evaluate.stratified_bootstrap([rows], np.mean, num_resamples=500)[1:] == pytest.approx((0.0, 0.0), abs=1e-12)
    # Levels that differ give an interval around the point; non-finite levels are left out.
    point, low, high = evaluate.stratified_bootstrap([np.array([0.0, 1.0, 2.0, 3.0, np.nan])], np.mean, seed=1)
    assert point == pytest.approx(1.5) and 0.0 <= low < 1.5 < high <= 3.0


def test_paired_difference_resamples_the_same_levels_for_both_learners():
    # B scores every level exactly 0.05 below A, while levels differ widely: the paired difference
    # of IQMs is 0.05 in every resample, so its interval collapses; resampling the two learners'
    # levels independently would give an interval as wide as the levels' spread.
    rng = np.random.default_rng(0)
    a = [rng.uniform(0, 1, size=(2, 8)), rng.uniform(0, 1, size=(1, 5))]
    b = [x - 0.05 for x in a]
    point, low, high = evaluate.stratified_bootstrap(a, evaluate.iqm, num_resamples=500, minus=b)
    assert (point, low, high) == pytest.approx((0.05, 0.05, 0.05), abs=1e-12)
    alone = evaluate.stratified_bootstrap(a, evaluate.iqm, num_resamples=500)
    assert alone[2] - alone[1] > 0.1
    # A level non-finite for either learner is left out of both (here the only high level of B).
    a2, b2 = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.2, 0.3, np.nan])
    point, low, high = evaluate.stratified_bootstrap([a2], np.mean, num_resamples=200, minus=[b2])
    assert (point, low, high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="strata"):
        evaluate.stratified_bootstrap([a2, a2], np.mean, minus=[b2])


def test_aggregate_reports_each_learner_against_a2c_on_the_same_levels():
    scores = {"LPG": [0.9, 0.95, 0.98, 0.5], "A2C": [1.0, 1.0, 1.0, 0.6]}
    envs = {"e": {"learners": {k: {"level_scores": v, "non_finite_lifetimes": 0, "lifetimes": 4}
                               for k, v in scores.items()}}}
    suite = evaluate.aggregate(envs, {"LPG": ["LPG"], "A2C": ["A2C"]}, num_resamples=300)
    lpg = suite["LPG"]
    assert lpg["iqm_minus_A2C"] == pytest.approx(evaluate.iqm(scores["LPG"]) - evaluate.iqm(scores["A2C"]))
    # LPG is below A2C on every level, so every resample's difference is below 0.
    assert lpg["iqm_minus_A2C_ci95"][1] < 0
    assert "iqm_minus_A2C" not in suite["A2C"]


def test_normalisation_of_a_chain_computed_exactly():
    ev = evaluate.eval_env("chain_heldout", 3, jax.random.PRNGKey(0))
    assert ev.chain_lengths.min() >= 31 and not ev.single_level
    refs = evaluate.exact_references(ev, gamma=0.99)
    # The uniform policy takes the good branch half the time (+1 / -1); the optimal one always.
    np.testing.assert_allclose(refs.random, 0.0, atol=1e-12)
    np.testing.assert_allclose(refs.optimal, 1.0)
    np.testing.assert_allclose(evaluate.normalise(refs.random, refs.random, refs.optimal), 0.0, atol=1e-12)
    np.testing.assert_allclose(evaluate.normalise(refs.optimal, refs.random, refs.optimal), 1.0)
    final = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, np.nan]])  # [levels, seeds]; nan: no final episode
    np.testing.assert_allclose(evaluate.level_scores(final, refs), [0.5, 1.0, -1.0])
    assert np.isnan(evaluate.normalise(0.5, 1.0, 1.0))  # no gap between random and optimal: no score


def test_exact_random_return_matches_uniform_lifetimes_through_the_engine():
    ev = evaluate.eval_env("tabular_small", 2, jax.random.PRNGKey(0))
    assert ev.single_level
    exact = evaluate.exact_references(ev, gamma=0.99).random
    config = evaluate.LifetimeConfig(num_updates=30, num_envs=16, rollout_len=20, num_seeds=2)
    metrics = jax.device_get(evaluate.random_lifetimes(ev, config)(ev.levels, (), jax.random.PRNGKey(1)))
    episodes = metrics["episodes"].sum()
    sampled = (metrics["episode_return"] * metrics["episodes"]).sum() / episodes
    # ~2000 episodes of returns in [-1, 1]: the standard error is about 0.02.
    assert episodes > 1000 and sampled == pytest.approx(exact[0], abs=0.06)


def test_non_finite_lifetimes_are_found_in_the_state_and_the_returns():
    learner = {"pi": jnp.zeros((2, 3, 4)).at[0, 1, 2].set(jnp.nan), "step": jnp.zeros((2, 3), jnp.int32)}
    returns = np.zeros((2, 3, 5))
    returns[1, 2, 4] = np.inf
    finite = evaluate.finite_lifetimes(type("State", (), {"learner": learner}), {"episode_return": returns})
    np.testing.assert_array_equal(finite, [[True, False, True], [True, True, False]])


def test_lifetimes_report_the_hidden_units_off_in_the_final_networks():
    """run_candidate's per-lifetime share equals agents.inactive_units on the final state's params and
    observations; a table has none (nan)."""
    config = evaluate.LifetimeConfig(num_updates=3, num_envs=8, rollout_len=5, num_seeds=2, curve_points=1)
    settings = evaluate.AgentSettings("auto", "adam", 0.99, 0.5, evaluate_cmd.a2c_config(tabular=False))
    ev = evaluate.eval_env("Catch-bsuite", 2, jax.random.PRNGKey(0))
    lifetimes = evaluate.a2c_lifetimes(ev, settings, config)
    run = evaluate.run_candidate(lifetimes, ev.levels, jnp.float32(3e-3), jax.random.PRNGKey(1), config)
    state, _ = lifetimes(ev.levels, jnp.float32(3e-3), jax.random.PRNGKey(1))
    net = agents.make_agent(ev.env, ev.level(0), aux_size=1)
    for i in range(2):
        for j in range(2):
            one = jax.tree.map(lambda x: x[i, j], state)
            direct = agents.inactive_units(net, one.learner.params, one.rollout.obs)
            np.testing.assert_allclose(run.inactive[i, j], direct)
    assert run.inactive.shape == (2, 2) and "inactive_units" not in run.metrics
    chain = evaluate.eval_env("chain_heldout", 2, jax.random.PRNGKey(0))
    table = evaluate.AgentSettings("tabular", "sgd", 0.99, 0.5, evaluate_cmd.a2c_config(tabular=True))
    tab = evaluate.run_candidate(evaluate.a2c_lifetimes(chain, table, config), chain.levels, jnp.float32(20.0),
                                 jax.random.PRNGKey(1), config)
    assert tab.inactive.shape == (2, 2) and np.isnan(tab.inactive).all()


def test_selection_prefers_rates_whose_lifetimes_stay_finite():
    """A rate whose surviving lifetimes score best loses to one that lost no lifetime; between equal
    losses the better score wins (two levels scored 0 at return 0 and 1 at return 1)."""
    refs = evaluate.References("exact", np.zeros(2), np.ones(2))
    run = lambda final, finite: evaluate._Run(np.array(final, float), np.array(finite), {})  # noqa: E731
    stable = run([[0.5, 0.5], [0.5, 0.5]], [[True, True], [True, True]])
    diverging = run([[1.0, np.nan], [1.0, 1.0]], [[True, False], [True, True]])  # its finite ones score 1
    worse = run([[np.nan, np.nan], [0.9, 1.0]], [[False, False], [True, True]])
    assert evaluate.selection_key(stable, refs)[1] < evaluate.selection_key(diverging, refs)[1]
    assert max([diverging, stable], key=lambda r: evaluate.selection_key(r, refs)) is stable
    assert max([worse, diverging], key=lambda r: evaluate.selection_key(r, refs)) is diverging
    better = run([[0.6, 0.6], [0.6, 0.6]], [[True, True], [True, True]])
    assert max([stable, better], key=lambda r: evaluate.selection_key(r, refs)) is better


# ------------------------------------------------------------------------------ the suite
def test_heldout_family_excludes_named_grid_and_train_descriptors():
    dist = LevelDistribution()
    held = {tuple(d) for d in _descriptor_table(dist, "heldout")}
    train = {tuple(d) for d in _descriptor_table(dist, "train")}
    named = set(NAMED_DESCRIPTORS)
    assert (5, 5, 2) in named and (11, 11, 4) in named  # EXTRA_GRIDS' tabular_small, tabular_dense
    assert held and held.isdisjoint(train) and held.isdisjoint(named)
    # The hash alone would hold out random_small_sparse's (5, 7, 3): the exclusion is what removes it.
    unreserved = {tuple(d) for d in _descriptor_table(LevelDistribution(reserved_descriptors=()), "heldout")}
    assert (5, 7, 3) in unreserved - held and unreserved - named == held
    for name in ("random_small_sparse", "tabular_dense"):
        assert not bool(is_heldout(make_named_grid(name)[1], dist))
    assert not bool(is_heldout(level_sampler("tabular_small")[1](jax.random.PRNGKey(0)), dist))


def test_suite_overlap_with_training_sources():
    suite = evaluate.HELDOUT_SUITE
    assert evaluate.training_overlap(["generated", "chain_short", "chain_distraction", "tabular_dense",
                                      "generated_vector", "generated_sparse_vector",
                                      "generated_sparse_long_vector"], suite) == []
    assert len(evaluate.training_overlap(["generated_vector"], ["generated"])) == 1
    assert len(evaluate.training_overlap(["generated_vector_heldout"], ["generated_heldout"])) == 1
    found = evaluate.training_overlap(["chain_long", "generated_heldout", "Catch-bsuite"], suite)
    assert len(found) == 3 and "31-50" in found[0]


def test_unequal_candidate_sets_are_refused(tiny_rule, capsys):
    with pytest.raises(ValueError, match="same size"):
        evaluate.check_candidate_sets(evaluate.LearningRates((1.0, 2.0), (1e-3,)),
                                      evaluate.LearningRates((1.0, 2.0, 3.0), (1e-3,)))
    evaluate.check_candidate_sets(evaluate.LPG_LEARNING_RATES, evaluate.A2C_LEARNING_RATES)
    with pytest.raises(SystemExit):
        evaluate_cmd.main(["--rule", str(tiny_rule), "--lpg-lrs-network", "1e-3", "3e-3",
                           "--a2c-lrs-network", "1e-3", "3e-3", "1e-2"])
    assert "network agents: LPG has 2 candidate learning rates" in capsys.readouterr().err


def test_default_output_is_beside_the_rule_but_never_inside_results(tiny_rule, monkeypatch, capsys):
    assert evaluate_cmd.parse_args(["--rule", str(tiny_rule)]).out == tiny_rule.parent / "eval"
    monkeypatch.setattr(evaluate_cmd, "RESULTS_DIR", tiny_rule.parent.parent)  # as if the run were committed
    with pytest.raises(SystemExit):
        evaluate_cmd.parse_args(["--rule", str(tiny_rule)])
    assert "pass --out" in capsys.readouterr().err
    assert evaluate_cmd.parse_args(["--rule", str(tiny_rule), "--out", "x"]).out.name == "x"



def test_labels_name_methods_and_pool_each_methods_seeds(tiny_rule, capsys):
    labels, pooled = evaluate_cmd.labels_for(["meta", "ES", "meta"])
    assert labels == ["meta #1", "ES", "meta #2"] and pooled == {"meta (pooled)": ["meta #1", "meta #2"]}
    assert evaluate_cmd.labels_for(["LPG"]) == (["LPG"], {})
    assert evaluate_cmd.labels_for(["LPG", "LPG"])[1] == {"LPG (pooled)": ["LPG #1", "LPG #2"]}  # the default
    args = evaluate_cmd.parse_args(["--rule", str(tiny_rule), str(tiny_rule), "--labels", "a", "b"])
    assert args.labels == ["a", "b"]
    for labels, message in ((["a"], "1 name(s) for 2 rule(s)"), (["A2C", "b"], "'A2C' is not allowed")):
        with pytest.raises(SystemExit):
            evaluate_cmd.parse_args(["--rule", str(tiny_rule), str(tiny_rule), "--labels", *labels])
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def tiny_rule(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "rule.msgpack"
    config = RuleConfig(hidden=8, y_size=4)
    save_rule(path, init_rule(config, jax.random.PRNGKey(0)), config)
    return path


def test_evaluate_command_end_to_end(tmp_path, capsys):
    config = RuleConfig(hidden=8, y_size=4)
    rules = []
    for seed in (0, 1):  # two meta-seeds, each in its run directory with the run's config.json
        path = tmp_path / f"seed{seed}" / "rule.msgpack"
        path.parent.mkdir()
        save_rule(path, init_rule(config, jax.random.PRNGKey(seed)), config)
        # Held-out chains last 31-50 steps, so every 50-step rollout ends an episode in every stream.
        (path.parent / "config.json").write_text(json.dumps({
            "envs": ["chain_long"], "lifetime_updates": 6, "num_envs": 4, "rollout_len": 50,
            "hypers": {"learning_rates": [20.0, 40.0]}}))
        rules.append(str(path))
    evaluate_cmd.main(["--rule", *rules, "--envs", "chain_heldout", "--seeds", "2", "--levels", "3",
                       "--curve-points", "3", "--bootstrap", "200"])
    out = tmp_path / "seed0" / "eval"  # beside the first rule
    results = json.loads((out / "results.json").read_text())
    assert results["lifetime"]["num_updates"] == 6 and results["lifetime"]["rollout_len"] == 50  # from config.json
    assert any("'chain_long'" in w and "chain_heldout" in w for w in results["warnings"])
    # LPG's candidates are the meta-training rates; A2C's default range is spread to the same size.
    assert results["lpg"]["learning_rates"]["LPG #1"]["tabular"] == [20.0, 40.0]
    assert results["a2c_learning_rates"]["tabular"] == [10.0, 40.0]
    chain = results["envs"]["chain_heldout"]
    reference = chain["reference"]
    assert (reference["kind"], reference["gamma"]) == ("exact", 0.995)
    np.testing.assert_allclose([reference["random"], reference["optimal"]], [[0.0] * 3, [1.0] * 3], atol=1e-12)
    learners = {"LPG #1", "LPG #2", "LPG (pooled)", "A2C", "untrained rule"}
    assert set(chain["learners"]) == learners and set(results["suite_scores"]) == learners
    for label in ("LPG #1", "LPG #2", "A2C", "untrained rule"):
        report = chain["learners"][label]
        assert np.asarray(report["final"], float).shape == (3, 2) and len(report["level_scores"]) == 3
        assert len(report["selection"]) == 2 and report["learning_rate"] in (10.0, 20.0, 40.0)
        assert report["non_finite_lifetimes"] == 0 and len(report["curve_mean"]) == 3
        assert sum(n for _, n in report["solved_by_length"].values()) == 3
        assert report["inactive_units_mean"] is None  # tables have no hidden units
        # Chains pay ±1 at the end, random 0, optimal 1: the score is the final return.
        np.testing.assert_allclose(report["level_scores"], np.mean(np.asarray(report["final"], float), 1))
    iqm = results["suite_scores"]["A2C"]
    assert iqm["iqm_ci95"][0] <= iqm["iqm"] <= iqm["iqm_ci95"][1] and iqm["levels_scored"] == 3
    assert set(chain["score_ratio_to_A2C"]) == {"LPG #1", "LPG #2", "LPG (pooled)", "untrained rule"}
    for png in ("suite.png", "curves.png", "curves_chain_heldout.png"):
        assert (out / png).stat().st_size > 1000
    text = capsys.readouterr().out
    assert "| LPG (pooled) |" in text and "levels solved" in text

    # A rerun with the same settings resumes: nothing is recomputed and the numbers are the same.
    evaluate_cmd.main(["--rule", *rules, "--envs", "chain_heldout", "--seeds", "2", "--levels", "3",
                       "--curve-points", "3", "--bootstrap", "200"])
    assert "chain_heldout: done in an earlier run" in capsys.readouterr().err
    again = json.loads((out / "results.json").read_text())
    assert again["envs"] == results["envs"] and again["suite_scores"] == results["suite_scores"]
    # Other settings in the same folder are refused with the differing key named, as one line.
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cmd.main(["--rule", *rules, "--envs", "chain_heldout", "--seeds", "2", "--set", "levels=2",
                           "--curve-points", "3", "--bootstrap", "200"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the notes on learning rates
    assert exit_info.value.code == 2 and "levels: 3 there, 2 here" in err and "--no-resume" in err

    # --from-results rebuilds the suite scores of a saved run with this code: here a results.json
    # from before the paired differences (their keys removed) gets back exactly the run's own numbers.
    old_run = {**results, "suite_scores": {k: {f: v for f, v in r.items() if not f.startswith("iqm_minus")}
                                           for k, r in results["suite_scores"].items()}}
    (tmp_path / "old.json").write_text(json.dumps(old_run))
    evaluate_cmd.main(["--from-results", str(tmp_path / "old.json"), "--run-dir", str(tmp_path / "re"),
                       "--bootstrap", "200"])
    rebuilt = json.loads((tmp_path / "re" / "results.json").read_text())
    assert rebuilt["suite_scores"] == results["suite_scores"] and rebuilt["envs"] == results["envs"]
    assert "iqm_minus_A2C" in rebuilt["suite_scores"]["LPG (pooled)"] and "rebuilt from" in rebuilt["notes"][-1]
    table = (tmp_path / "re" / "summary.md").read_text()
    assert table.split("## Whole suite")[1] == (out / "summary.md").read_text().split("## Whole suite")[1]
    with pytest.raises(SystemExit):
        evaluate_cmd.main(["--from-results", str(tmp_path / "old.json")])
    assert "needs --run-dir or --out" in capsys.readouterr().err


@pytest.mark.slow  # default-suite time (session 30): ~12 s; PPO's own tests (test_ppo.py) and evaluate's end-to-end test stay
def test_evaluate_command_with_ppo_as_a_second_baseline(tiny_rule, tmp_path, capsys):
    flags = ["--rule", str(tiny_rule), "--envs", "chain_heldout", "--levels", "2", "--seeds", "2", "--updates", "4",
             "--rollout-len", "50", "--lpg-lrs", "20", "40", "--a2c-lrs", "20", "40", "--curve-points", "2",
             "--bootstrap", "100", "--baselines", "A2C", "PPO"]
    evaluate_cmd.main([*flags, "--num-envs", "4", "--untrained", "false", "--out", str(tmp_path / "eval")])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["baselines"] == ["A2C", "PPO"] and results["untrained_rule"] is None
    assert set(results["suite_scores"]) == {"LPG", "A2C", "PPO"}
    assert results["ppo_learning_rates"]["tabular"] == [2.5, 10.0]  # the default range, spread to LPG's 2
    chain = results["envs"]["chain_heldout"]
    assert chain["ppo"]["epochs"] == 4 and chain["ppo"]["optimizer"] == "sgd"
    ppo = chain["learners"]["PPO"]
    assert set(ppo["selection"]) == {"2.5", "10"} and ppo["learning_rate"] in (2.5, 10.0)
    # Chains pay ±1 at the end, random 0, optimal 1: the score is the final return.
    np.testing.assert_allclose(ppo["level_scores"], np.mean(np.asarray(ppo["final"], float), 1))
    assert "PPO" in results["suite_scores"] and "PPO" not in chain["score_ratio_to_A2C"]
    assert "| PPO |" in (tmp_path / "eval" / "summary.md").read_text()
    # PPO splits a lifetime's environments into 4 minibatches: 6 cannot be split, and that is said.
    for bad, message in ((["--baselines", "PPO"], "must include A2C"), (["--labels", "PPO"], "'PPO' is not allowed"),
                         (["--baselines", "A2C", "PPO", "--num-envs", "6"], "multiple of minibatches"),
                         (["--untrained", "maybe"], "expected true or false, got 'maybe'")):
        with pytest.raises(SystemExit):
            evaluate_cmd.parse_args(["--rule", str(tiny_rule), *bad])
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_on_a_network_agent(tiny_rule, tmp_path):
    out = tmp_path / "eval"
    evaluate_cmd.main(["--rule", str(tiny_rule), "--envs", "Catch-bsuite", "--updates", "4", "--seeds", "2",
                       "--levels", "2", "--num-envs", "4", "--rollout-len", "10", "--lpg-lrs-network", "1e-3",
                       "--a2c-lrs-network", "3e-3", "--out", str(out)])
    catch = json.loads((out / "results.json").read_text())["envs"]["Catch-bsuite"]
    assert catch["tabular"] is False and catch["single_level"] is True and catch["optimizer"] == "adam"
    assert catch["reference"]["kind"] == "best A2C"
    assert all(r["final_mean"] is not None for r in catch["learners"].values())
    assert all(0.0 <= r["inactive_units_mean"] <= 1.0 for r in catch["learners"].values() if "final" in r)
    # One candidate each: no selection lifetimes, and 1 is A2C's own reported lifetimes.
    assert all(r["selection"] == {} for r in catch["learners"].values())
    # (One level copied: every group's reference is the mean over all of A2C's lifetimes.)
    a2c_final = np.asarray(catch["learners"]["A2C"]["final"], float)  # [groups, seeds]; nan: no episode ended
    np.testing.assert_allclose(np.asarray(catch["reference"]["optimal"], float), np.nanmean(a2c_final))


def test_commands_reject_a_missing_rule_and_an_unknown_env(tiny_rule, tmp_path, capsys):
    for command in (evaluate_cmd, analyse_y):
        with pytest.raises(SystemExit):
            command.main(["--rule", str(tmp_path / "nope.msgpack")])
        assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_cmd.main(["--rule", str(tiny_rule), "--envs", "chain_short", "no_such_env"])
    assert "unknown environment 'no_such_env'" in capsys.readouterr().err


@pytest.mark.slow
def test_analyse_y_command_end_to_end(tiny_rule, tmp_path, capsys):
    out = tmp_path / "y"
    analyse_y.main(["--rule", str(tiny_rule), "--env", "tabular_small", "--updates", "20", "--seeds", "2",
                    "--num-envs", "8", "--rollout-len", "10", "--min-visits", "1", "--out", str(out)])
    results = json.loads((out / "y_analysis.json").read_text())
    assert results["eval_discounts"] == [0.995, 0.99, 0.95, 0.9]
    for r in results["r2"].values():
        assert np.asarray(r["r2_per_seed"]).shape == (2, 4)
    assert (out / "y_fits.png").exists() and (out / "y_r2.png").exists()
    # The same settings again: shown, not redone; other settings there: refused, naming the key.
    argv = ["--rule", str(tiny_rule), "--env", "tabular_small", "--updates", "20", "--seeds", "2",
            "--num-envs", "8", "--rollout-len", "10", "--min-visits", "1", "--out", str(out)]
    analyse_y.main(argv)
    assert "already done with these settings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        analyse_y.main(argv + ["--set", "pairs=2"])
    assert exit_info.value.code == 2 and "pairs: 3 there, 2 here" in capsys.readouterr().err


@pytest.mark.slow  # default-suite time (session 30): ~25 s; evaluate's command tests above stay
def test_lifetime_lengths_command_is_evaluate_at_each_length(tmp_path, capsys):
    rules = []
    for name, config in (("plain", RuleConfig(hidden=8, y_size=4)),
                         ("cond", RuleConfig(hidden=8, y_size=4, lifetime_inputs=True))):
        path = tmp_path / name / "rule.msgpack"
        path.parent.mkdir()
        save_rule(path, init_rule(config, jax.random.PRNGKey(0)), config)
        (path.parent / "config.json").write_text(json.dumps({"envs": ["chain_short"], "lifetime_updates": 4}))
        rules.append(str(path))
    flags = ["--rule", *rules, "--labels", "plain", "n/N", "--envs", "chain_heldout", "--seeds", "2", "--levels", "2",
             "--num-envs", "2", "--rollout-len", "50", "--curve-points", "2", "--bootstrap", "100",
             "--lpg-lrs", "20", "--a2c-lrs", "20"]
    lifetime_lengths.main(["--lengths", "6", "2", *flags])
    out = tmp_path / "plain" / "lifetime_lengths"  # beside the first rule
    sweep = json.loads((out / "results.json").read_text())
    assert sweep["lengths"] == [2, 6]
    # Each length is exactly the evaluation command run at that length.
    evaluate_cmd.main([*flags, "--updates", "2", "--out", str(tmp_path / "direct")])
    direct = json.loads((tmp_path / "direct" / "results.json").read_text())
    per_length = json.loads((out / "updates_2" / "results.json").read_text())
    for results in (per_length, direct):
        results["envs"]["chain_heldout"].pop("seconds")
    assert per_length["lifetime"]["num_updates"] == 2 and per_length["envs"] == direct["envs"]
    assert sweep["suite_scores"]["2"] == direct["suite_scores"]
    assert json.loads((out / "updates_6" / "results.json").read_text())["lifetime"]["num_updates"] == 6
    text = (out / "summary.md").read_text()
    iqm = direct["suite_scores"]["n/N"]["iqm"]
    assert f"| n/N | 4 | {evaluate_cmd.fmt_ci(iqm, direct['suite_scores']['n/N']['iqm_ci95'])} |" in text
    assert (out / "lengths.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        lifetime_lengths.main(["--lengths", "2", *flags, "--updates", "3"])
    assert "--lengths gives each evaluation's updates" in capsys.readouterr().err


def test_network_flag_sets_every_learners_torso_and_the_resume_fingerprint(tiny_rule, capsys):
    """--network mlp gives LPG's agents and A2C's (and PPO's) an MLP on a map environment, where
    auto gives them the conv torso; only a non-default torso changes the resume fingerprint."""
    ev = evaluate.eval_env("random_small", 1, jax.random.PRNGKey(0))
    kinds = {}
    for network in ("auto", "mlp", "conv"):
        args = evaluate_cmd.parse_args(["--rule", str(tiny_rule), "--envs", "random_small", "--network", network,
                                        "--baselines", "A2C", "PPO"])
        s = evaluate_cmd.settings_for(ev, args)
        params = ev.level(0)
        lpg_agent = make_lpg_agent(ev.env, params, load_rule(tiny_rule)[1], agent=s.agent, optimizer=s.optimizer,
                                   hidden=s.hidden)  # as ev_lib.lpg_lifetimes builds it
        nets = (lpg_agent.network, actor_critic_network(ev.env, params, s.a2c), actor_critic_network(ev.env, params, s.ppo))
        kinds[network] = {type(net) for net in nets}
        results = {"rules": {"LPG": str(tiny_rule)}, "networks": {"kind": args.network, "hidden": args.hidden}}
        kinds[network, "fingerprint"] = evaluate_cmd.fingerprint(args, results)
    assert kinds["auto"] == kinds["conv"] == {agents.ConvAgent} and kinds["mlp"] == {agents.MLPAgent}
    assert "networks" not in kinds["auto", "fingerprint"]  # as before the flag: old run dirs still resume
    assert kinds["mlp", "fingerprint"]["networks"] == {"kind": "mlp"}
    with pytest.raises(SystemExit):
        evaluate_cmd.parse_args(["--rule", str(tiny_rule), "--network", "tabular"])
    assert "network must be one of ['auto', 'mlp', 'conv'], got 'tabular'" in capsys.readouterr().err
