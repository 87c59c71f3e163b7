"""Writes the rule of every kept checkpoint of a meta-training run: OUT/step<meta-step>/rule.msgpack.

    PYTHONPATH=. python results/lpg/batch16/checkpoint_rules.py RUN_DIR CHECKPOINT_DIR OUT     (ad hoc, session 8)

CHECKPOINT_DIR: copies of RUN_DIR/checkpoints/<chunk> taken while the run went (a run keeps only its last two).
"""
import json
import sys
from pathlib import Path

import orbax.checkpoint as ocp

from lpg.update_rule import RuleConfig, save_rule

run, ckpts, out = map(Path, sys.argv[1:4])
config = json.loads((run / "config.json").read_text())
rule_config = RuleConfig(**config["rule"])
for d in sorted(ckpts.iterdir(), key=lambda p: int(p.name)):
    state = ocp.StandardCheckpointer().restore((d / "default").absolute())
    step = int(state["step"])
    path = save_rule(out / f"step{step:04d}" / "rule.msgpack", state["rule_params"], rule_config)
    (path.parent / "config.json").write_text((run / "config.json").read_text())  # evaluate reads lifetimes from it
    print(path)
