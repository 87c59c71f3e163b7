"""The uniform policy's exact chance of reaching the goal in one episode (envs.planning on each level's MDP), for 64 levels of each one-goal source. Output: uniform_goal_rate.txt."""
import jax, numpy as np
from envs.sources import level_sampler
from envs.planning import episode_return, tabular_mdp
for name in ("generated_sparse_vector", "generated_sparse_long_vector"):
    env, sample = level_sampler(name)
    rates = []
    for k in jax.random.split(jax.random.PRNGKey(0), 64):
        level = sample(k); mdp = tabular_mdp(env, level)
        rates.append(episode_return(mdp, np.full((mdp.num_states, mdp.num_actions), 1 / mdp.num_actions), int(level.max_steps_in_episode)))
    print(f"{name}: uniform policy's exact P(goal) per episode, mean over 64 levels {np.mean(rates):.3f} (range {np.min(rates):.3f}-{np.max(rates):.3f})")
