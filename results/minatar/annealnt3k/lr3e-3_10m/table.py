"""Session 31: the 10M-step tables of `results/minatar/README.md` ("Session 30" and "Session 31"),
printed from the committed results.json files so that every number can be traced to a run.

    python results/minatar/annealnt3k/lr3e-3_10m/table.py > results/minatar/annealnt3k/lr3e-3_10m/table.md

Per game: each meta-seed's final return (one lifetime each), their mean with a 95% Student-t
interval over the five meta-seeds (`lpg.evaluate.confidence_interval`), A2C's final return at every
rate run at 10M, and the scores (0 = uniform random, 1 = A2C) against A2C at the shared rate 3e-3 and
against the best A2C lifetime run at 10M (conv unless marked; the share of its torso's hidden units
that are off on every observation at the end of the lifetime is shown, 100% meaning a fixed policy). Then the issue's goal, checked on the meta-seed mean (and median).
"""
import json
from pathlib import Path

import numpy as np

from lpg.evaluate import confidence_interval

HERE = Path(__file__).parent
GAMES = {  # folder, gymnax name, published grid-trained LPG and PPO at 10M steps (../../shared/REFERENCE.md)
    "SpaceInvaders": ("spaceinvaders", 105, 131),
    "Asterix": ("asterix", 12, 15),
    "Breakout": ("breakout", 4.8, 28),
    "Freeway": ("freeway", 6, 58),
}
EXTRA_A2C = "a2c_*"  # folders of A2C-at-another-rate runs inside a game's folder


def game_rows(name, folder):
    path = HERE / folder / "results.json"
    if not path.exists():
        return None
    env = f"{name}-MinAtar"
    e = json.loads(path.read_text())["envs"][env]
    random = e["reference"]["random"][0]
    learners = e["learners"]
    finals = np.array([learners[f"LPG #{k}"]["final_mean"] for k in range(1, 6)])
    a2c = {"3e-3": a2c_entry(learners["A2C"], "auto")}
    for extra in sorted((HERE / folder).glob(EXTRA_A2C)):
        x = json.loads((extra / "results.json").read_text())
        a2c[f"{x['envs'][env]['learners']['A2C']['learning_rate']:g}" + ("" if x["networks"]["kind"] == "auto" else
            f", {x['networks']['kind']}")] = a2c_entry(x["envs"][env]["learners"]["A2C"], x["networks"]["kind"])
    return finals, random, a2c


def a2c_entry(learner, kind):
    """(final return, share of hidden units off at the end) of an A2C lifetime."""
    return learner["final_mean"], learner["inactive_units_mean"]


def score(x, random, ref):
    return (x - random) / (ref - random)


print("| game | LPG final return, meta-seeds 0-4 | mean [95% CI over meta-seeds] (median) | A2C final return (rate) "
      "| score of the mean: vs A2C 3e-3 / vs best A2C | seeds ≥ 0.8x best A2C | published grid-LPG / PPO |")
print("| --- | --- | --- | --- | --- | --- | --- |")
goal_beat, goal_beat_median, goal_ratio = [], [], []
for name, (folder, lpg_pub, ppo_pub) in GAMES.items():
    rows = game_rows(name, folder)
    if rows is None:
        print(f"| {name} | not run at 10M | | | | | {lpg_pub} / {ppo_pub} |")
        goal_beat.append(None)
        goal_beat_median.append(None)
        continue
    finals, random, a2c = rows
    mean, half = confidence_interval(finals)
    best = max(final for final, _ in a2c.values())
    s_shared, s_best = score(mean, random, a2c["3e-3"][0]), score(mean, random, best)
    n_08 = int(np.sum(score(finals, random, best) >= 0.8))
    a2c_text = ", ".join(f"{final:.2f} ({k}; {off:.0%} of units off)" for k, (final, off) in a2c.items())
    print(f"| {name} | {' / '.join(f'{f:.2f}' for f in finals)} | {mean:.2f} [{mean - half:.2f}, {mean + half:.2f}] ({np.median(finals):.2f}) "
          f"| {a2c_text} | {s_shared:.2f} / {s_best:.2f} | {n_08} of 5 | {lpg_pub} / {ppo_pub} |")
    goal_beat.append(bool(mean > lpg_pub))
    goal_beat_median.append(bool(np.median(finals) > lpg_pub))
    goal_ratio.append(bool(s_best >= 0.8))
print()
print(f"Goal, on the mean over meta-seeds: beats the published grid-trained LPG on "
      f"{sum(b is True for b in goal_beat)} of {len(GAMES)} games ({sum(b is None for b in goal_beat)} not run); "
      f"≥ 0.8x the best A2C run at 10M on {sum(goal_ratio)} (needs 2). On the median meta-seed: beats it on "
      f"{sum(b is True for b in goal_beat_median)}.")
