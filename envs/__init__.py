"""Environments for learning update rules, all gymnax environments.

`make(name, **overrides) -> (env, env_params)` serves the LPG grids, the delayed
chains, the RL² task distributions, the transfer checks (`envs.transfer`) and any gymnax name; `register` adds your own.
`envs.sources.level_sampler(name)` gives per-lifetime level samplers for meta-training.
`check(env, params)` catches the common mistakes in a user environment before training.
"""

from envs import bandits, hidden_goal, transfer
from envs.check import check
from envs.registry import make, names, register

for _name, _factory in {**bandits.ENVIRONMENTS, **hidden_goal.ENVIRONMENTS, **transfer.ENVIRONMENTS}.items():
    register(_name, _factory)

__all__ = ["check", "make", "names", "register"]
