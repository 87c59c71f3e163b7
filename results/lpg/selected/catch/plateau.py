"""Why LPG agents end Catch at ~0.98 where A2C ends at ~0.995: residual randomness or wrong actions?

Trains fresh agents on Catch-bsuite exactly as the suite does (200 updates x 32 envs x 20 steps,
Adam; LPG at the rate the suite chose, A2C at its chosen rate, both `experiments.evaluate`'s
settings), then rolls out each final policy twice through the engine, 256 envs x 200 steps:
sampling from it (as the suite scores it) and acting greedily (argmax of the logits). Also the
policy's mean entropy (nats) on the states the sampled rollout visits, and the probability it gives
the one move that keeps the ball catchable in the states where only one does (`tight_states`);
then what multiplies ∇log π(a|s) in each learner's update there and elsewhere (`push_stats`).

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
from lpg.a2c import advantages, make_a2c
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


def tight_states(obs):
    """Catch's states where one move only keeps the ball catchable: the paddle (bottom row) is as
    many columns from the ball as the ball has rows left to fall (> 0). Returns the mask and that
    move (actions: 0 left, 1 stay, 2 right; gymnax's dx = action - 1)."""
    rows = obs.shape[-2]
    ball = obs[..., : rows - 1, :]  # the ball is never in the paddle's row when observed
    ball_y = jnp.argmax(ball.sum(-1), -1)
    ball_x = jnp.argmax(ball.sum(-2), -1)
    paddle_x = jnp.argmax(obs[..., rows - 1, :], -1)
    gap = ball_x - paddle_x
    return (jnp.abs(gap) == rows - 1 - ball_y) & (gap != 0), jnp.where(gap > 0, 2, 0)


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
                tight, needed = tight_states(traj.obs)
                p_move = jnp.take_along_axis(traj.policy_out["probs"], needed[..., None], -1)[..., 0]
                p_save, share = jnp.sum(p_move * tight) / jnp.maximum(tight.sum(), 1), jnp.mean(tight)
        return out[0], out[1], entropy, p_save, share

    return jax.device_get(jax.jit(jax.vmap(one))(params, jax.random.split(key, jax.tree.leaves(params)[0].shape[0])))


def lpg_push(agent, rule_params, hypers):
    """`(params, traj [T, B]) -> [T, B]`: what multiplies ∇log π(a|s) in an LPG agent's update (π̂
    as the agent uses it, `LPGAgent.pi_hat_used`)."""
    def push(params, traj):
        inputs = jax.vmap(agent.rule_inputs, in_axes=(None, 1, None, None))(params, traj, hypers, jnp.asarray(UPDATES))
        pi_hat, _ = jax.vmap(lambda x: agent.rule.apply(rule_params, x))(inputs)
        return agent.pi_hat_used(pi_hat).T
    return push


def a2c_push(network, config):
    """`(params, traj [T, B]) -> [T, B]`: A2C's advantages, as its loss computes them."""
    return jax.vmap(lambda params, traj: advantages(network.apply, params, traj, config)[2], in_axes=(None, 1),
                    out_axes=1)


def push_stats(ev, learner, push, params, key, rollouts: int = 100):
    """From each final policy (frozen), `rollouts` training-shaped rollouts (ENVS x T, continuing):
    the mean push on the saving move taken in tight states, on a wrong move taken there (and how
    many), and the push's standard deviation over every other state. Per seed."""
    def one(p, k):
        state = engine.reset(ev.env, ev.level(0), k, ENVS, ())

        def body(state, k):
            state, traj = engine.rollout(ev.env, ev.level(0), learner.policy_fn, p, state, k, T, ())
            return state, (push(p, traj), traj.obs, traj.action)

        _, (w, obs, action) = jax.lax.scan(body, state, jax.random.split(k, rollouts))
        tight, needed = tight_states(obs)
        save, wrong, other = tight & (action == needed), tight & (action != needed), ~tight
        mean = lambda mask: jnp.sum(w * mask) / jnp.maximum(mask.sum(), 1)  # noqa: E731
        sd_other = jnp.sqrt(jnp.sum((w - mean(other)) ** 2 * other) / jnp.maximum(other.sum(), 1))
        return mean(save), mean(wrong), wrong.sum(), sd_other

    keys = jax.random.split(key, jax.tree.leaves(params)[0].shape[0])
    return jax.device_get(jax.jit(jax.vmap(one))(params, keys))


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
    a2c_network = agents.make_agent(ev.env, ev.level(0), aux_size=1, kind="auto", hidden=a2c.hidden)
    learners = [(f"A2C (Adam {args.a2c_lr})", make_a2c(ev.env, ev.level(0), a2c, learning_rate=args.a2c_lr),
                 a2c_network, a2c_push(a2c_network, a2c))]
    settings = AgentSettings(agent="auto", optimizer="adam", lpg_discount=0.995, lpg_alpha_y=0.5, a2c=a2c)
    for path in args.rules:
        params, config = load_rule(path)
        agent = make_lpg_agent(ev.env, ev.level(0), config, optimizer="adam")
        hypers = settings.hypers(args.lpg_lr, UPDATES)
        learners.append((f"LPG {path} (Adam {args.lpg_lr})", make_lpg_learner(agent, params, hypers), agent.network,
                         lpg_push(agent, params, hypers)))
    pushes = []
    for name, learner, network, push in learners:
        policy_params, metrics = final_policy(ev, learner, args.seeds, key)
        save, wrong, n_wrong, sd = push_stats(ev, learner, push, policy_params, jax.random.PRNGKey(11))
        pushes.append((name, save, wrong, n_wrong, sd))
        tail = slice(-UPDATES // 10, None)
        r, n = np.asarray(metrics["episode_return"])[:, tail], np.asarray(metrics["episodes"])[:, tail]
        training = float((r * n).sum() / n.sum())
        sampled, greedy, entropy, p_save, share = judge(ev, network, policy_params, jax.random.PRNGKey(7))
        print(f"| {name} | {training:.4f} | {np.mean(sampled):.3f} ({', '.join(f'{x:.3f}' for x in sampled)}) | "
              f"{np.mean(greedy):.3f} ({', '.join(f'{x:.3f}' for x in greedy)}) | {np.mean(entropy):.3f} | "
              f"{np.mean(p_save):.4f} ({np.mean(share):.3f}) |", flush=True)
    print(f"\nWhat multiplies ∇log π(a|s) in each learner's update (LPG: π̂ as used; A2C: its advantage), from each "
          f"final policy, frozen, over 100 rollouts of {ENVS} envs x {T} steps; mean over seeds (wrong moves: pooled)")
    print("| learner | saving move in a tight state | wrong move in a tight state (count) | sd over the other states | "
          "wrong / sd |")
    print("| --- | --- | --- | --- | --- |")
    for name, save, wrong, n_wrong, sd in pushes:
        pooled_wrong = float(np.sum(wrong * n_wrong) / max(np.sum(n_wrong), 1))
        print(f"| {name} | {np.mean(save):+.4f} | {pooled_wrong:+.4f} ({int(np.sum(n_wrong))}) | {np.mean(sd):.4f} | "
              f"{pooled_wrong / np.mean(sd):+.1f} |")


if __name__ == "__main__":
    main()
