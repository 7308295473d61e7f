"""How a trained Two-Rooms model handles contact with the middle wall, per predictor.

    python benchmarks/contact_dynamics.py --workdir W [--num 256] [--out FILE]

Gradient MPC's failures end with the agent pressed against the middle wall, away from the
door (see README "Planning"). From such states two things decide whether a plan through the
door is found, and the random-push diagnostic of training sees neither:

* **slide**: the agent 0.05-4 px from the wall's face, far from the door, moves along the
  wall toward the door at full speed (2.45 px per step) for 5 steps; the real agent moves
  12.25 px. ``slide_ratio`` is the model's (probed) move over the true one: below 1 the wall
  is "sticky" in the model, and a path along the wall to the door looks slower than it is.
* **leak**: from the same states, 20 full-speed pushes straight into the wall; the real
  agent does not move. ``leak_rate`` is the fraction the model carries through the wall.

Layouts are on PLDM's integer grid, as in the data (off-grid walls render differently).
Positions are read by the linear probe of the diagnostics. Prints a table per predictor and
writes JSON (default ``W/contact_dynamics.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DISTANCES = (0.05, 0.5, 1.0, 2.0, 4.0)
SPEED = 2.45
SLIDE_STEPS = 5
PUSH_STEPS = 20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=256, help="states per distance")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from jepa_jax import diagnostics, envs, runtime
    from jepa_jax.training.loop import load_trained

    runtime.setup()
    try:
        config, exp, params = load_trained(args.workdir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    env, wm = exp.env, exp.wm
    probe = diagnostics.fit_position_probe(wm, params, env, exp.policy,
                                           jax.random.key(config.diagnostics.seed))
    rng = np.random.default_rng(0)
    n = args.num
    wall_x = rng.integers(env.wall_x_range[0], env.wall_x_range[1] + 1, n).astype(np.float32)
    door_y = rng.integers(env.door_y_range[0], env.door_y_range[1] + 1, n).astype(np.float32)
    side = rng.choice([-1.0, 1.0], n).astype(np.float32)  # which room the agent is in
    # 10-20 px beyond the door's edge, on the side with room for it.
    far = env.door_half_width + rng.uniform(10.0, 20.0, n)
    y = np.where(door_y > 0.5 * (env.low + env.high), door_y - far, door_y + far)
    y = np.clip(y, env.low + 1.0, env.high - 1.0).astype(np.float32)
    toward_door = np.sign(door_y - y).astype(np.float32)

    members = wm.predictor_members(params)
    num_members = wm.num_predictors

    @jax.jit
    def rollouts(obs, actions):
        s0 = wm.encode(params, obs)

        def member(p):
            q = {**params, "predictor": p}
            return jax.vmap(lambda s, a: wm.rollout(q, s, a))(s0, actions)

        return s0, jax.vmap(member)(members)  # (N, D), (K, N, T, D)

    result: dict = {"workdir": str(args.workdir), "num_states": n, "speed": SPEED,
                    "slide_steps": SLIDE_STEPS, "push_steps": PUSH_STEPS, "rows": []}
    print(f"{'member':>6} {'dist px':>7} {'slide_ratio':>11} {'leak_rate':>9}")
    for d in DISTANCES:
        x = (wall_x - side * (env.wall_half_width + d)).astype(np.float32)
        obs = envs.render_positions(jnp.asarray(np.stack([x, y], -1)), jnp.asarray(wall_x),
                                    jnp.asarray(door_y), env)
        slide = np.zeros((n, SLIDE_STEPS, 2), np.float32)
        slide[..., 1] = (toward_door * SPEED)[:, None]
        push = np.zeros((n, PUSH_STEPS, 2), np.float32)
        push[..., 0] = (side * SPEED)[:, None]
        s0, pred_slide = rollouts(obs, jnp.asarray(slide))
        _, pred_push = rollouts(obs, jnp.asarray(push))
        p0 = np.asarray(probe(s0))
        for k in range(num_members):
            moved = (np.asarray(probe(pred_slide[k]))[:, -1, 1] - p0[:, 1]) * toward_door
            ratio = float(np.mean(moved) / (SPEED * SLIDE_STEPS))
            end_x = np.asarray(probe(pred_push[k]))[:, -1, 0]
            leak = float(np.mean((end_x - wall_x) * side > 0))
            result["rows"].append({"member": k, "distance_px": d, "slide_ratio": ratio,
                                   "leak_rate": leak})
            print(f"{k:>6} {d:>7.2f} {ratio:>11.2f} {leak:>9.1%}", flush=True)
    out = Path(args.out) if args.out else Path(args.workdir) / "contact_dynamics.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
