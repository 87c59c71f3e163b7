"""The command-line contract shared by the entry points: one-line user errors (exit 2), run
directories that name what differs, SIGINT/SIGTERM that checkpoint and resume exactly, finished
runs that do nothing, `--help` listing the `--set` fields and `--list`."""

from __future__ import annotations

import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cli, evaluate as evaluate_cmd, meta_train, train
from lpg import runs
from lpg.meta import MetaConfig


def _one_line_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return err.splitlines()[-1]  # lines before it are progress; the error is one line


@pytest.mark.parametrize("argv,expected", [
    (["--set", "meta_lr=-1"], "meta_lr=-1.0"),
    (["--set", "lifetimes_per_env=x"], "lifetimes_per_env: expected an int, got 'x'"),
    (["--set", "rule.hiden=3"], "RuleConfig has no field 'hiden'"),
    (["--set", "envs=tabular_dense,nowhere"], "unknown level source 'nowhere'"),
    (["--set", "noequals"], "--set takes key=value"),
    (["--set", "entropy_anneal=2"], "entropy_anneal must be in [0, 1]"),
])
def test_bad_settings_end_as_one_line_naming_the_field(capsys, argv, expected):
    err = _one_line_error(capsys, meta_train.main, ["--preset", "tiny", *argv])
    assert expected in err


def test_validation_names_only_the_fields_in_question():
    with pytest.raises(ValueError) as info:
        MetaConfig(meta_lr=-1.0)
    assert "meta_lr=-1.0" in str(info.value) and "envs=" not in str(info.value)


def test_a_run_dir_with_another_config_names_the_keys_that_differ(tmp_path, capsys):
    runs.RunDir(tmp_path, MetaConfig(meta_lr=1e-3)).close()
    with pytest.raises(runs.RunDirError) as info:
        runs.RunDir(tmp_path, MetaConfig(meta_lr=2e-3, rule=MetaConfig().rule.__class__(hidden=4)))
    assert "meta_lr: 0.001 there, 0.002 here" in str(info.value)
    assert "rule.hidden: 256 there, 4 here" in str(info.value)
    assert runs.config_differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    # A run saved before a field existed resumes when that field is asked for at its default only.
    saved = tmp_path / "old"
    runs.RunDir(saved, MetaConfig()).close()
    config_json = saved / "config.json"
    config_json.write_text(config_json.read_text().replace('"remat": false,', ""))
    runs.RunDir(saved, MetaConfig()).close()
    config_json.write_text(config_json.read_text().replace('"remat": false,', ""))
    with pytest.raises(runs.RunDirError, match="remat: not in the saved config, True here"):
        runs.RunDir(saved, MetaConfig(remat=True))
    err = _one_line_error(capsys, meta_train.main, ["--preset", "tiny", "--run-dir", str(tmp_path)])
    assert "holds a run with another config" in err and "--no-resume" in err
    err = _one_line_error(capsys, train.main, ["--run-dir", str(tmp_path), "--updates", "1"])
    assert "holds another kind of run" in err


class _Counter:
    """A host-loop job whose state is a running sum; `signal_at` sends a signal during that chunk."""

    def __init__(self, signal_at: int | None = None, signum: int = signal.SIGINT):
        self.calls, self.signal_at, self.signum = 0, signal_at, signum

    def __call__(self, state):
        self.calls += 1
        if self.calls == self.signal_at:
            os.kill(os.getpid(), self.signum)
        state = {"total": state["total"] + state["step"], "step": state["step"] + 1}  # jax arrays
        return state, {"total": np.asarray([state["total"]])}


def _job(run, job, start=0, state=None):
    state = state or {"total": jnp.int32(0), "step": jnp.int32(1)}
    return runs.host_loop(run, state, job, 6, lambda c, m: [{"step": c + 1, "total": m["total"][0]}],
                          lambda row: "", checkpoint_every=3, start_chunk=start, quiet=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_running_chunk_and_the_resumed_run_is_exact(tmp_path, signum):
    full = _job(None, _Counter())
    # the handlers the process had (a background job may start with SIGINT ignored)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run = runs.RunDir(tmp_path, MetaConfig())
    with pytest.raises(runs.Interrupted, match="after chunk 2/6: checkpoint saved"):
        _job(run, _Counter(signal_at=2, signum=signum))
    assert run.latest_step() == 2  # saved although checkpoint_every is 3
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    run.close()
    run = runs.RunDir(tmp_path, MetaConfig())
    state, start = run.restore({"total": jnp.int32(0), "step": jnp.int32(1)})
    resumed = _job(run, _Counter(), start, state)
    assert int(resumed["total"]) == int(full["total"]) == 21
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4, 5, 6]
    run.close()


def test_a_finished_run_runs_no_chunk(tmp_path, capsys):
    run = runs.RunDir(tmp_path, MetaConfig())
    job = _Counter()
    _job(run, job)
    _job(run, job, start=6)
    assert job.calls == 6
    run.close()


def test_help_lists_the_set_fields_and_list_shows_names(capsys):
    with pytest.raises(SystemExit):
        meta_train.main(["--help"])
    out = capsys.readouterr().out
    assert "rule.hidden=64" in out and "meta_lr=0.001" in out and "hypers.discounts=0.997,0.995,0.99" in out
    for main in (meta_train.main, train.main, evaluate_cmd.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["--list"] if main is not evaluate_cmd.main else ["--rule", "x", "--list"])
        out = capsys.readouterr().out
        assert exit_info.value.code == 0 and "chain_short" in out and "Catch-bsuite" in out and "presets" in out


def test_evaluate_takes_set_and_its_flags_as_the_same_fields(tmp_path):
    rule = tmp_path / "rule.msgpack"
    rule.write_bytes(b"")
    args = evaluate_cmd.parse_args(["--rule", str(rule), "--preset", "quick", "--set", "seeds=4", "--levels", "5"])
    assert (args.levels, args.seeds, args.envs) == (5, 4, ["generated_heldout", "chain_heldout"])
    assert cli.settable_fields(evaluate_cmd.EVAL_PRESETS["quick"])[1] == ("levels", 2)
    args = evaluate_cmd.parse_args(["--rule", str(rule), "--y-init", "zeros", "--pi-hat-baseline", "adam_step_mean"])
    assert (args.y_init, args.pi_hat_baseline) == ("zeros", "adam_step_mean")


@pytest.mark.parametrize("flag,allowed", [("--y-init", "lecun"), ("--pi-hat-baseline", "adam_step_mean")])
def test_evaluate_refuses_an_unknown_way_of_using_a_rule(tmp_path, capsys, flag, allowed):
    rule = tmp_path / "rule.msgpack"
    rule.write_bytes(b"")
    with pytest.raises(SystemExit):
        evaluate_cmd.parse_args(["--rule", str(rule), flag, "normal"])
    assert allowed in capsys.readouterr().err


def test_every_set_example_in_the_docs_names_a_real_field():
    """`--set key=...` in an entry point's docstring or the README names a field `--set` accepts."""
    import re
    from pathlib import Path

    from experiments import analyse_y, rl2, rl2_sweep
    from experiments.presets import A2C_PRESETS, META_PRESETS

    configs = {"train": A2C_PRESETS["quick"][1], "meta_train": META_PRESETS["quick"],
               "rl2": rl2.PRESETS["quick"], "evaluate": evaluate_cmd.EVAL_PRESETS["heldout"],
               "analyse_y": analyse_y.ANALYSIS_PRESETS["default"], "rl2_sweep": rl2_sweep.PRESETS["swapped"]}
    modules = {"train": train, "meta_train": meta_train, "rl2": rl2, "evaluate": evaluate_cmd, "analyse_y": analyse_y,
               "rl2_sweep": rl2_sweep}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    checked = 0
    for name, config in configs.items():
        fields = {field for field, _ in cli.settable_fields(config)}
        lines = modules[name].__doc__.splitlines() + [
            line for line in readme.splitlines() if f"experiments.{name} " in line]
        for line in lines:
            for key in re.findall(r"--set ([\w.]+)=", line):
                if key == "key":  # the generic "--set key=value"
                    continue
                assert key in fields, f"{name}: --set {key} in {line.strip()!r} is not a field"
                checked += 1
    assert checked >= 4
