"""How well a trained critic knows the way through the door.

    python benchmarks/critic_quality.py --workdir W [--pairs 2048] [--out PATH]

Draws start-goal pairs in opposite rooms of random layouts (start anywhere up to the wall's
face, goal at least 1 px from the walls), encodes both, and compares the critic's
``V(s, g)`` (``W/agent/critic.*``, from ``python -m jepa_jax.train_agent``) with the true
length of the shortest path through the door and with the straight-line distance, by
Spearman rank correlation, over all pairs and over the long detours (path > straight line
+ 15 px). A critic that ranks by the straight line leads a planner into the wall. Writes
``benchmarks/results/critic_quality.json`` (or ``--out``) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spearman(a, b) -> float:
    import numpy as np

    rank = lambda x: np.argsort(np.argsort(x))
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def _method(workdir: Path) -> str:
    """How the saved critic was fitted, from the agent's training log."""
    log = workdir / "agent" / "train_log.json"
    critic = json.loads(log.read_text()).get("critic", {}) if log.exists() else {}
    return critic.get("method", "td" if "rounds" in critic else "unknown")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/critic_quality.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jepa_jax import agent_training
    from jepa_jax.envs import two_rooms

    _, exp, params = agent_training.load_context(args.workdir)
    env = exp.env
    mods = agent_training.load_modules(args.workdir, exp.wm.latent_dim, need=("critic",))

    def pair(key):
        kl, kp, kq = jax.random.split(key, 3)
        wall_x, door_y = two_rooms.sample_layout(kl, env)
        p = two_rooms.sample_free_position(kp, wall_x, env, side=jnp.int32(0), margin=0.02)
        q = two_rooms.sample_free_position(kq, wall_x, env, side=jnp.int32(1), margin=1.0)
        return jnp.stack([p, q]), wall_x, door_y

    pos, wall_x, door_y = jax.jit(jax.vmap(pair))(
        jax.random.split(jax.random.key(args.seed), args.pairs))
    lat = jax.jit(exp.wm.encode)(params, two_rooms.render_positions(
        pos, wall_x[:, None], door_y[:, None], env))
    v = np.asarray(mods.critic.value(mods.critic_params, lat[:, 0], lat[:, 1]))
    pos, wall_x, door_y = map(np.asarray, (pos, wall_x, door_y))
    p, q = pos[:, 0], pos[:, 1]
    hw = env.door_half_width
    ys = door_y[:, None] + np.linspace(-hw + 0.5, hw - 0.5, 15)[None]
    door = np.stack([np.broadcast_to(wall_x[:, None], ys.shape), ys], -1)
    path = (np.linalg.norm(p[:, None] - door, axis=-1)
            + np.linalg.norm(door - q[:, None], axis=-1)).min(1)
    line = np.linalg.norm(p - q, axis=-1)
    far = path - line > 15.0
    result = {"workdir": args.workdir, "pairs": args.pairs, "seed": args.seed,
              "critic_method": _method(Path(args.workdir)),
              "spearman_v_path": _spearman(v, path), "spearman_v_line": _spearman(v, line),
              "detours": int(far.sum()),
              "detours_spearman_v_path": _spearman(v[far], path[far]),
              "detours_spearman_v_line": _spearman(v[far], line[far])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"critic ({result['critic_method']}) vs shortest path through the door: Spearman "
          f"{result['spearman_v_path']:.3f} (vs straight line {result['spearman_v_line']:.3f}); "
          f"on {result['detours']} long detours {result['detours_spearman_v_path']:.3f} "
          f"(vs {result['detours_spearman_v_line']:.3f}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
