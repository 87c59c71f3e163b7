"""Why LPG agents end Catch at ~0.98 where A2C ends at ~0.995: residual randomness or wrong actions?

Trains fresh agents on Catch-bsuite exactly as the suite does (200 updates x 32 envs x 20 steps,
Adam; LPG at the rate the suite chose, A2C at its chosen rate, both `experiments.evaluate`'s
settings), then rolls out each final policy twice through the engine, 256 envs x 200 steps:
sampling from it (as the suite scores it) and acting greedily (argmax of the logits). Also the
policy's mean entropy (nats) on the states the sampled rollout visits, and the probability it gives
the one move that keeps the ball catchable in the states where only one does (`tight_states`).

    python results/lpg/selected/catch/plateau.py RULE... [--seeds 4]
"""

import argparse
import dataclasses

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.evaluate import a2c_config
from lpg import agents
from lpg import rollout as engine
from lpg.a2c import make_a2c
from lpg.evaluate import AgentSettings, eval_env
from lpg.inner import make_lpg_agent, make_lpg_learner
from lpg.learner import make_train
from lpg.update_rule import load_rule

UPDATES, ENVS, T = 200, 32, 20
EVAL_ENVS, EVAL_STEPS = 256, 200


def final_policy(ev, learner, seeds: int, key):
    train = make_train(ev.env, ev.level(0), learner, ENVS, T)

    def one(k):
        state, metrics = train.run(train.init(k), UPDATES)
        return learner.policy_params(state.learner), metrics

    return jax.jit(jax.vmap(one))(jax.random.split(key, seeds))


def tight_states(obs, probs):
    """Catch's states where one move only keeps the ball catchable: the paddle (bottom row) is as
    many columns from the ball as the ball has rows left to fall (> 0). Returns the mean
    probability the policy gives that move there, and the share of visited states that are tight."""
    rows = obs.shape[-2]
    ball = obs[..., : rows - 1, :]  # the ball is never in the paddle's row when observed
    ball_y = jnp.argmax(ball.sum(-1), -1)
    ball_x = jnp.argmax(ball.sum(-2), -1)
    paddle_x = jnp.argmax(obs[..., rows - 1, :], -1)
    gap = ball_x - paddle_x
    tight = (jnp.abs(gap) == rows - 1 - ball_y) & (gap != 0)
    needed = jnp.where(gap > 0, 2, 0)  # actions: 0 left, 1 stay, 2 right (gymnax's dx = action - 1)
    p = jnp.take_along_axis(probs, needed[..., None], -1)[..., 0]
    return jnp.sum(p * tight) / jnp.maximum(tight.sum(), 1), jnp.mean(tight)


def judge(ev, network, params, key):
    """(sampled return, greedy return, mean entropy, P(the saving move) in tight states, their
    share of visited states) per seed, from the final params [seeds, ...]."""
    def act(greedy):
        def policy_fn(p, carry, timestep, k):
            logits = network.apply(p, timestep.obs)[0]
            a = jnp.argmax(logits) if greedy else distrax.Categorical(logits=logits).sample(seed=k)
            return a, {"entropy": distrax.Categorical(logits=logits).entropy(),
                       "probs": jax.nn.softmax(logits)}, carry
        return policy_fn

    def one(p, k):
        out = []
        for greedy in (False, True):
            k_reset, k_roll = jax.random.split(jax.random.fold_in(k, greedy))
            state = engine.reset(ev.env, ev.level(0), k_reset, EVAL_ENVS, ())
            _, traj = engine.rollout(ev.env, ev.level(0), act(greedy), p, state, k_roll, EVAL_STEPS, ())
            stats = engine.completed_episode_stats(traj)
            out.append(stats["episode_return"])
            if not greedy:
                entropy = jnp.mean(traj.policy_out["entropy"])
                p_save, share = tight_states(traj.obs, traj.policy_out["probs"])
        return out[0], out[1], entropy, p_save, share

    return jax.device_get(jax.jit(jax.vmap(one))(params, jax.random.split(key, jax.tree.leaves(params)[0].shape[0])))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rules", nargs="+")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--lpg-lr", type=float, default=0.02)
    parser.add_argument("--a2c-lr", type=float, default=0.01)
    args = parser.parse_args()
    ev = eval_env("Catch-bsuite", 1, jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(2026)
    print(f"Catch-bsuite: {UPDATES} updates x {ENVS} envs x {T} steps, {args.seeds} seeds; final policy rolled out "
          f"{EVAL_ENVS} envs x {EVAL_STEPS} steps")
    print("| learner | training return, last 10% | sampled return | greedy return | entropy (nats) | "
          "P(saving move) in tight states (their share of states) |")
    print("| --- | --- | --- | --- | --- | --- |")
    a2c = dataclasses.replace(a2c_config(False), num_envs=ENVS, rollout_len=T)
    learners = [(f"A2C (Adam {args.a2c_lr})", make_a2c(ev.env, ev.level(0), a2c, learning_rate=args.a2c_lr), None)]
    settings = AgentSettings(agent="auto", optimizer="adam", lpg_discount=0.995, lpg_alpha_y=0.5, a2c=a2c)
    for path in args.rules:
        params, config = load_rule(path)
        agent = make_lpg_agent(ev.env, ev.level(0), config, optimizer="adam")
        hypers = settings.hypers(args.lpg_lr, UPDATES)
        learners.append((f"LPG {path} (Adam {args.lpg_lr})", make_lpg_learner(agent, params, hypers), agent.network))
    for name, learner, network in learners:
        policy_params, metrics = final_policy(ev, learner, args.seeds, key)
        if network is None:  # A2C: its network is the actor-critic one
            network = agents.make_agent(ev.env, ev.level(0), aux_size=1, kind="auto", hidden=a2c.hidden)
        tail = slice(-UPDATES // 10, None)
        r, n = np.asarray(metrics["episode_return"])[:, tail], np.asarray(metrics["episodes"])[:, tail]
        training = float((r * n).sum() / n.sum())
        sampled, greedy, entropy, p_save, share = judge(ev, network, policy_params, jax.random.PRNGKey(7))
        print(f"| {name} | {training:.4f} | {np.mean(sampled):.3f} ({', '.join(f'{x:.3f}' for x in sampled)}) | "
              f"{np.mean(greedy):.3f} ({', '.join(f'{x:.3f}' for x in greedy)}) | {np.mean(entropy):.3f} | "
              f"{np.mean(p_save):.4f} ({np.mean(share):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
