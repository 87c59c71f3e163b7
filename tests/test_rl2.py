"""RL²: recurrent state across inner episodes vs tasks, the loss's re-run of the RNN, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import bandits, hidden_goal
from lpg import learner, rl2
from lpg import rollout as engine


def _rollout(env, env_params, config, num_envs, num_steps, seed=0, windows=1):
    agent = rl2.make_rl2(env, env_params, config)
    params = agent.init(jax.random.PRNGKey(seed)).params
    state = engine.reset(env, env_params, jax.random.PRNGKey(seed + 1), num_envs, agent.init_carry)
    run = jax.jit(lambda state, key: engine.rollout(env, env_params, agent.policy_fn, params, state, key,
                                                    num_steps, agent.init_carry))
    trajs = []
    for w in range(windows):
        state, traj = run(state, jax.random.PRNGKey(seed + 2 + w))
        trajs.append(traj)
    return agent, params, trajs


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_carry_kept_across_inner_episodes_and_reset_between_tasks(cell):
    # 3x3 grid, goal in a corner, start in the centre: a random-ish policy finds goals often,
    # so trials of 12 steps contain inner episodes; 30 steps span several trials.
    env, env_params = hidden_goal.make_hidden_goal(size=3, max_steps_in_episode=12)
    config = rl2.RL2Config(cell=cell, hidden=8, num_envs=32, rollout_len=30)
    _, _, (traj,) = _rollout(env, env_params, config, num_envs=32, num_steps=30)
    carry_norm = sum(np.abs(np.asarray(x)).sum(-1) for x in jax.tree.leaves(traj.policy_out["carry"]))
    first = np.asarray(traj.first)
    inner_start = (np.asarray(traj.obs)[..., -1] > 0.5) & ~first  # new inner episode, same task
    assert first[1:].sum() > 0 and inner_start.sum() > 10
    np.testing.assert_array_equal(carry_norm[first], 0.0)  # a new task starts from init_carry
    assert (carry_norm[inner_start] > 1e-3).all()  # a new inner episode keeps the task's memory
    assert (carry_norm[~first] > 1e-3).all()


def test_loss_rerun_matches_acting_across_window_and_trial_boundaries():
    # Trials of 7 pulls, windows of 10 steps: the second window starts mid-trial and holds a
    # trial boundary, so the re-run must start from the stored carry and reset at `first`.
    env, env_params = bandits.make_beta_bandit(max_steps_in_episode=7)
    config = rl2.RL2Config(hidden=16, num_envs=4, rollout_len=10)
    agent, params, (_, traj) = _rollout(env, env_params, config, num_envs=4, num_steps=10, windows=2)
    assert not np.asarray(traj.first)[0].any() and np.asarray(traj.first)[1:].any()
    network = rl2.make_network(env, env_params, config)

    def rerun(stream):
        carry0 = jax.tree.map(lambda x: x[0], stream.policy_out["carry"])
        timesteps = engine.Timestep(stream.obs, stream.policy_out["prev_action"],
                                    stream.policy_out["prev_reward"], stream.first)
        return rl2.unroll(network, params, carry0, timesteps, agent.init_carry)[1]

    logits = jax.jit(jax.vmap(rerun, in_axes=1, out_axes=1))(traj)
    np.testing.assert_allclose(logits, traj.policy_out["logits"], atol=1e-5)
    # the engine's previous action / reward are the last step's unless a trial starts
    np.testing.assert_array_equal(np.asarray(traj.policy_out["prev_action"])[1:],
                                  np.where(traj.first[1:], 0, traj.action[:-1]))


def test_normalised_advantages_rescale_the_policy_gradient_only():
    # Rewards x 10: without normalisation the policy-gradient term grows with the rewards; with
    # it, the advantages it sees are unit-scale either way, while the value loss keeps raw returns.
    env, env_params = bandits.make_beta_bandit(max_steps_in_episode=10)
    config = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10)
    agent, params, (traj,) = _rollout(env, env_params, config, num_envs=32, num_steps=10)
    network = rl2.make_network(env, env_params, config)

    def pg_grad_norm(normalise, scale):
        c = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10, value_cost=0.0, normalise_advantages=normalise)
        scaled = traj._replace(reward=scale * traj.reward)
        loss = lambda p: rl2.rl2_loss(network, p, scaled, agent.init_carry, c, 0.0)  # noqa: E731
        grads, metrics = jax.grad(loss, has_aux=True)(params)
        return float(jnp.sqrt(sum((g**2).sum() for g in jax.tree.leaves(grads)))), metrics

    raw1, m_raw = pg_grad_norm(False, 1.0)
    raw10, _ = pg_grad_norm(False, 10.0)
    norm1, m_norm = pg_grad_norm(True, 1.0)
    norm10, _ = pg_grad_norm(True, 10.0)
    assert raw10 > 5 * raw1  # raw advantages scale with the rewards (the value is small at init)
    assert 0.5 < norm10 / norm1 < 2.0
    np.testing.assert_allclose(m_norm["value_loss"], m_raw["value_loss"], rtol=1e-6)
    np.testing.assert_allclose(m_norm["entropy"], m_raw["entropy"], rtol=1e-6)


def test_scaled_value_loss_is_the_raw_value_gradient_over_the_advantage_std():
    # With scale_value_loss the value term's gradient is the raw one divided by std(A) (a constant
    # for the gradient), so rewards x 10 grow it about as the normalised policy gradient grows:
    # not at all once the advantages are dominated by the rewards (value ~ 0 at init).
    env, env_params = bandits.make_beta_bandit(max_steps_in_episode=10)
    config = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10)
    agent, params, (traj,) = _rollout(env, env_params, config, num_envs=32, num_steps=10)
    network = rl2.make_network(env, env_params, config)

    def value_grads(scale_loss, reward_scale=1.0):
        c = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10, value_cost=1.0, scale_value_loss=scale_loss)
        pg_only = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10, value_cost=0.0)
        scaled = traj._replace(reward=reward_scale * traj.reward)
        grad = lambda cfg: jax.grad(  # noqa: E731
            lambda p: rl2.rl2_loss(network, p, scaled, agent.init_carry, cfg, 0.0)[0])(params)
        grads = jax.tree.map(lambda a, b: a - b, grad(c), grad(pg_only))  # the value term's alone
        logits, v_t, g_t = jax.vmap(rl2.rl2_stream, in_axes=(None, None, 1, None, None))(
            network, params, scaled, agent.init_carry, c)
        return grads, float(jnp.std(g_t - v_t))

    raw, adv_std = value_grads(False)
    scaled, _ = value_grads(True)
    assert adv_std > 0.1
    for r, s in zip(jax.tree.leaves(raw), jax.tree.leaves(scaled)):
        np.testing.assert_allclose(s * adv_std, r, rtol=1e-3, atol=1e-6)
    norm = lambda g: float(jnp.sqrt(sum((x**2).sum() for x in jax.tree.leaves(g))))  # noqa: E731
    raw10, _ = value_grads(False, 10.0)
    scaled10, _ = value_grads(True, 10.0)
    assert norm(raw10) > 5 * norm(raw)
    assert 0.5 < norm(scaled10) / norm(scaled) < 2.0


def test_learning_rate_anneals_linearly_to_its_end_value():
    # SGD without clipping: each update is -lr_n * grad(params_n), lr_n = 0.1, 0.05, then 0 for good.
    env, env_params = bandits.make_beta_bandit(max_steps_in_episode=10)
    config = rl2.RL2Config(hidden=16, num_envs=32, rollout_len=10, optimizer="sgd", max_grad_norm=None,
                           learning_rate=0.1, learning_rate_end=0.0, lr_anneal_updates=2)
    agent, _, (traj,) = _rollout(env, env_params, config, num_envs=32, num_steps=10)
    network = rl2.make_network(env, env_params, config)
    grad = jax.jit(jax.grad(lambda p: rl2.rl2_loss(network, p, traj, agent.init_carry, config,
                                                   config.entropy_cost)[0]))
    update = jax.jit(agent.update)
    state = agent.init(jax.random.PRNGKey(0))
    for lr in (0.1, 0.05, 0.0, 0.0):
        expected = jax.tree.map(lambda p, g: p - lr * g, state.params, grad(state.params))
        state, _ = update(state, traj)
        for e, p in zip(jax.tree.leaves(expected), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-7)
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grad(state.params)))) > 0  # 0 is the rate's doing
    with pytest.raises(ValueError, match="learning_rate_end"):
        rl2.RL2Config(learning_rate_end=-1e-3)


def test_short_training_on_easy_bandit_beats_random():
    # Arms pay Bernoulli(0.1) / Bernoulli(0.9) in unknown order, T = 20: random gets 10, oracle 18.
    T = 20
    env, env_params = bandits.make_swapped_bandit(reward_prob=0.1, max_steps_in_episode=T)
    config = rl2.RL2Config(hidden=32, num_envs=64, rollout_len=T, learning_rate=3e-3,
                           entropy_cost=0.02, entropy_cost_end=0.0, entropy_anneal_updates=200)
    agent = rl2.make_rl2(env, env_params, config)
    trainer = learner.make_train(env, env_params, agent, config.num_envs, config.rollout_len)
    state, _ = jax.jit(trainer.run, static_argnums=1)(jax.jit(trainer.init)(jax.random.PRNGKey(0)), 300)
    network = rl2.make_network(env, env_params, config)
    eval_state = engine.reset(env, env_params, jax.random.PRNGKey(99), 2000, agent.init_carry)
    _, traj = jax.jit(lambda p: engine.rollout(env, env_params, rl2.make_policy(network), p, eval_state,
                                                jax.random.PRNGKey(100), T, agent.init_carry))(
        state.learner.params)
    mean_return = float(traj.reward.sum(0).mean())
    assert mean_return > 15.5, mean_return  # random: 10 ± 0.05 over 2000 trials


def test_features_round_trip_and_config_errors():
    lstm = rl2.RL2Network(num_actions=3, hidden=4, cell="lstm")
    carry = (jnp.arange(4.0), jnp.arange(4.0, 8.0))
    features = rl2.hidden_features(carry)
    back = rl2.carry_from_features(features, lstm.initial_carry())
    np.testing.assert_array_equal(back[0], carry[0])
    np.testing.assert_array_equal(rl2.output_of(back), carry[1])
    with pytest.raises(ValueError, match="cell"):
        rl2.RL2Config(cell="rnn")
    with pytest.raises(ValueError, match="gae_lambda"):
        rl2.RL2Config(gae_lambda=1.5)


def test_experiment_config_errors_are_usage_errors(tmp_path, capsys):
    from experiments import rl2 as experiment

    with pytest.raises(ValueError, match="name"):
        experiment.EnvConfig(name="cartpole")
    with pytest.raises(ValueError, match="eval_seed"):
        experiment.Experiment(train=rl2.TrainConfig(seed=7), analysis=experiment.AnalysisConfig(eval_seed=7))
    # on the command line: one error line and exit code 2, before anything is trained or written
    for args, says in ((["--set", "env.trial_len=101"], "trial_len"), (["--set", "train.seed=10000"], "eval_seed"),
                       (["--set", "agent.cell=rnn"], "cell"), (["--mode", "evaluate"], "no checkpoint")):
        with pytest.raises(SystemExit) as exit_info:
            experiment.main(args + ["--run-dir", str(tmp_path / "run")])
        assert exit_info.value.code == 2
        assert says in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_command_trains_resumes_and_analyses(tmp_path, monkeypatch):
    import json

    from experiments import rl2 as experiment

    monkeypatch.chdir(tmp_path)
    run, out = tmp_path / "runs" / "rl2_quick", tmp_path / "out"
    args = ["--preset", "quick",
            "--set", "train.updates_per_chunk=20", "--set", "train.num_updates=40",
            "--set", "analysis.num_trials=200", "--set", "analysis.probe_trials=100",
            "--set", "analysis.mlp_steps=50", "--set", "analysis.num_pairs=500"]

    def chunks_logged():
        return [json.loads(line)["chunk"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    experiment.main(args)  # the run and its analysis go to runs/rl2_<preset>, nothing elsewhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    for name in ("summary.md", "probe_r2.png", "hidden_pca.png", "regret.png", "checkpoints", "metrics.jsonl"):
        assert (run / name).exists(), name
    analysed = json.loads((run / "summary.json").read_text())
    assert analysed["trained_updates"] == 40 and chunks_logged() == [1, 2]
    # the evaluation is wired to the exact baseline: its Q-values pick its own actions, and its
    # return on the held-out tasks matches the DP value 12.431 (T = 20)
    optimal = analysed["policies"]["bayes_optimal"]
    assert optimal["agreement"] == 1.0
    assert abs(optimal["return"] - 12.431) < 4 * optimal["return_se"], optimal
    assert all(np.isfinite(v["r2"]) for v in analysed["decoding"].values())

    experiment.main(args + ["--mode", "train"])  # resumes at the last checkpoint: nothing left to do
    assert chunks_logged() == [1, 2]
    experiment.main(args + ["--mode", "evaluate", "--out", str(out)])  # the same agent, tasks, returns
    evaluated = json.loads((out / "summary.json").read_text())
    assert evaluated["policies"]["agent"] == analysed["policies"]["agent"]
    assert "decoding" not in evaluated and not (out / "probe_r2.png").exists()


@pytest.mark.slow  # default-suite time (session 30): ~17 s; test_rl2_sweep trains one run per seed in the default suite
def test_several_training_seeds_each_get_a_run_and_the_table_shows_the_spread(tmp_path, capsys):
    import json

    from experiments import rl2 as experiment

    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--preset", "quick", "--set", "train.updates_per_chunk=10", "--set", "train.num_updates=10",
            "--set", "agent.num_envs=16", "--set", "analysis.num_trials=50", "--seeds", "3", "5",
            "--run-dir", str(run), "--out", str(out)]
    experiment.main(args[:-2] + ["--mode", "train"])
    assert sorted(p.name for p in run.iterdir()) == ["seed3", "seed5"]
    assert json.loads((run / "seed5" / "config.json").read_text())["train"]["seed"] == 5
    experiment.main(args + ["--mode", "evaluate"])
    per_seed = {s: json.loads((out / f"seed{s}" / "summary.json").read_text()) for s in (3, 5)}
    ratios = [per_seed[s]["agent_vs_reference"]["regret_ratio_to_exact"] for s in (3, 5)]
    losses = [json.loads((run / f"seed{s}" / "metrics.jsonl").read_text().splitlines()[0])["loss"] for s in (3, 5)]
    assert losses[0] != losses[1]  # two trainings from two seeds
    row = next(line for line in (out / "summary.md").read_text().splitlines()
               if line.startswith("| regret / exact Bayes-optimal regret |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [f"{ratios[0]:.4f}", f"{ratios[1]:.4f}", f"{np.mean(ratios):.4f}",
                         f"{min(ratios):.4f}-{max(ratios):.4f}"]
    saved = json.loads((out / "seeds.json").read_text())["rows"][0]
    assert saved["values"] == {"3": ratios[0], "5": ratios[1]}
    for bad, says in ((["--seeds", "1", "1"], "distinct"), (["--seeds", "0", "10000"], "eval_seed")):
        with pytest.raises(SystemExit):
            experiment.main(["--preset", "quick", "--run-dir", str(tmp_path / "bad")] + bad)
        assert says in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_seed_table_reports_every_seed_and_missing_figures():
    from lpg.rl2_analysis import seed_table

    def summary(ratio, r2=None):
        out = {"agent_vs_reference": {"regret_ratio_to_exact": ratio, "regret_ratio": ratio},
               "policies": {"agent": {"agreement": 0.9}}}
        if r2 is not None:
            out["decoding"] = {"posterior/linear/trained": {"r2": r2}, "posterior/linear/control": {"r2": 0.5}}
        return out

    lines = seed_table({0: summary(1.2, 0.9), 1: summary(1.6), 2: summary(1.0, 0.7)})
    assert lines[2] == "| regret / exact Bayes-optimal regret | 1.2000 | 1.6000 | 1.0000 | 1.2667 | 1.0000-1.6000 |"
    trained = next(line for line in lines if "posterior/linear, trained" in line)
    assert trained == "| probe R², posterior/linear, trained | 0.9000 | – | 0.7000 | 0.8000 | 0.7000-0.9000 |"
