"""Choosing a run's rule by a validation set: the set shares nothing with the suite, and the
selection picks the snapshot that solves the validation chains over one that does not."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import select_rule
from experiments.presets import META_PRESETS, SELECT_ARGS
from lpg.update_rule import init_rule, load_rule, save_rule
from lpg.validation import ValidationConfig, Validator

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "lpg" / "gatecarry" / "rules" / "seed0"  # session 11's rule (`cpu100`), trained with y_init lecun


@pytest.mark.parametrize("envs, message", [
    (("chain_heldout",), "chain_heldout"),
    (("chain_long",), "overlapping 'chain_heldout'"),
    (("generated_heldout",), "generated_heldout"),
    (("chain_medium", "DeepSea-bsuite"), "DeepSea-bsuite"),
    (("no_such_env",), "unknown environment"),
])
def test_validation_sets_that_touch_the_suite_are_refused(envs, message):
    with pytest.raises(ValueError, match=message):
        ValidationConfig(envs=envs)


def test_validation_needs_exact_references():
    _, config = load_rule(COMMITTED / "rule.msgpack")
    with pytest.raises(ValueError, match="no exact MDP"):
        Validator(ValidationConfig(envs=("CartPole-v1",)), config, 40.0, 1e-2, 0.995, 0.5)


def test_selection_picks_the_snapshot_that_solves_the_validation_chains(tmp_path, capsys):
    """A run whose snapshot at step 100 is the committed rule (it solves delayed chains) and at
    step 200 an untrained rule: the selection must pick step 100, although a tie would go to the
    later step, and scores are exact-normalised (the learned rule near 1, the untrained near 0)."""
    run = tmp_path / "run"
    good = COMMITTED / "rule.msgpack"
    params, config = load_rule(good)
    for step, rule in ((100, params), (200, init_rule(config, jax.random.PRNGKey(7)))):
        save_rule(run / "rules" / f"step{step:05d}" / "rule.msgpack", rule, config)
    shutil.copyfile(COMMITTED / "config.json", run / "config.json")
    argv = [str(run), "--set", "envs=chain_medium", "--set", "levels=4", "--set", "seeds=1",
            "--set", "num_updates=100", "--y-init", "zeros"]

    chosen = select_rule.main(argv)[str(run)]
    assert chosen["step"] == 100
    rows = {json.loads(line)["step"]: json.loads(line) for line in (run / "selection" / "scores.jsonl").open()}
    assert rows[100]["score"] > 0.8 and rows[200]["score"] < 0.3, rows
    assert rows[100]["non_finite"] == rows[200]["non_finite"] == 0
    selected, selected_config = load_rule(run / "rule_selected" / "rule.msgpack")
    assert jax.tree.all(jax.tree.map(np.array_equal, selected, params))
    assert selected_config.y_init == "zeros" and config.y_init != "zeros"  # validated as used, and recorded so
    assert "| 100 (chosen) |" in (run / "selection" / "summary.md").read_text()

    capsys.readouterr()
    select_rule.main(argv)  # same settings: nothing is scored again
    assert "step 100: score" not in capsys.readouterr().err
    assert len((run / "selection" / "scores.jsonl").read_text().splitlines()) == 2


def test_preset_selection_recipes_parse(tmp_path):
    """meta_train tells users to run `select_rule RUN <SELECT_ARGS[preset]>`: each recipe must name a
    meta-training preset and be accepted by select_rule as written; `cpu`'s must reproduce the
    settings recorded with the committed rules it made (results/lpg/selected/annealnt3k/rules/), and
    `cpu_flat_entropy`'s those of the rules committed before (results/lpg/selected/rules/); each preset,
    at the rule's seed, is the config those rules were meta-trained with."""
    from lpg.runs import config_to_dict

    (tmp_path / "config.json").write_text("{}")
    for preset, recipe in SELECT_ARGS.items():
        assert preset in META_PRESETS, preset
        select_rule.parse_args([str(tmp_path), *recipe.split()])
    selected = ROOT / "results" / "lpg" / "selected"
    for preset, committed in (("cpu", selected / "annealnt3k" / "rules"), ("cpu_flat_entropy", selected / "rules")):
        args = select_rule.parse_args([str(tmp_path), *SELECT_ARGS[preset].split()])
        for seed in (0, 3):
            folder = committed / f"seed{seed}"
            selection = json.loads((folder / "selection.json").read_text())
            run_config = json.loads((folder / "config.json").read_text())
            assert select_rule.settings_record(args, run_config) == selection["settings"], folder
            assert selection["step"] % args.every == 0
            preset_config = json.loads(json.dumps(config_to_dict(dataclasses.replace(META_PRESETS[preset], seed=seed))))
            defaults = {f.name: f.default for f in dataclasses.fields(META_PRESETS[preset])}
            added_since = {k for k in set(preset_config) - set(run_config) if preset_config[k] == defaults[k]}
            assert {k: v for k, v in preset_config.items() if k not in added_since} == run_config, (preset, seed)


def test_wait_holds_on_a_run_extended_after_it_finished(tmp_path):
    """A finished run resumed with more meta-steps keeps its old rule.msgpack until it ends: --wait
    must go on until the snapshot of the new last step is there, not stop at the old final rule."""
    run = tmp_path / "run"
    params, config = load_rule(COMMITTED / "rule.msgpack")
    save_rule(run / "rule.msgpack", params, config)
    save_rule(run / "rules" / "step00200" / "rule.msgpack", params, config)
    run_config = json.loads((COMMITTED / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**run_config, "num_meta_steps": 200}))
    assert select_rule.run_finished(run)
    (run / "config.json").write_text(json.dumps({**run_config, "num_meta_steps": 300}))  # extended
    assert not select_rule.run_finished(run)
    save_rule(run / "rules" / "step00300" / "rule.msgpack", params, config)
    assert select_rule.run_finished(run)
    (run / "rule.msgpack").unlink()  # a run not yet at its end has no final rule
    assert not select_rule.run_finished(run)
