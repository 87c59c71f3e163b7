"""Return of fixed (state-independent) policies on Freeway-MinAtar: what a network whose policy
ignores the screen can score there (session 29; ad hoc, not the protocol).

    python results/minatar/annealnt3k/diag/freeway_fixed.py    # freeway_fixed.txt
"""
import jax
import jax.numpy as jnp
import gymnax

EPISODES = 64


def fixed_policy_return(probs, key):
    env, params = gymnax.make("Freeway-MinAtar")
    probs = jnp.asarray(probs)

    def episode(key):
        key, k0 = jax.random.split(key)
        obs, state = env.reset(k0, params)

        def step(carry, _):
            state, key, total, done = carry
            key, ka, ks = jax.random.split(key, 3)
            action = jax.random.choice(ka, probs.size, p=probs)
            out = env.step(ks, state, action, params)  # gymnax 1.0: obs, state, reward, terminated, truncated, info
            state, reward, d = out[1], out[2], out[3] | out[4]
            total = total + jnp.where(done, 0.0, reward)
            return (state, key, total, done | d), None

        (_, _, total, done), _ = jax.lax.scan(step, (state, key, 0.0, False), None, length=2600)
        return total, done

    totals, done = jax.jit(jax.vmap(episode))(jax.random.split(key, EPISODES))
    return float(totals.mean()), float(totals.std()), bool(done.all())


if __name__ == "__main__":
    env, params = gymnax.make("Freeway-MinAtar")
    print(f"# Freeway-MinAtar, {EPISODES} episodes per policy; actions {env.action_set.tolist()} (MinAtar's noop, up, down); "
          f"episode limit {params.max_steps_in_episode} steps")
    for name, probs in (("uniform", [1 / 3] * 3), ("always up (action 1)", [0, 1, 0]), ("always down (action 2)", [0, 0, 1]),
                        ("up w.p. 0.95, others 0.025", [0.025, 0.95, 0.025]),
                        ("up w.p. 0.9, others 0.05", [0.05, 0.9, 0.05]),
                        ("up w.p. 0.8, others 0.1", [0.1, 0.8, 0.1]),
                        ("up w.p. 0.7, others 0.15", [0.15, 0.7, 0.15])):
        mean, sd, ended = fixed_policy_return(probs, jax.random.PRNGKey(0))
        print(f"{name:34s} return {mean:6.2f} ± {sd:5.2f} (sd over episodes); every episode ended: {ended}")
