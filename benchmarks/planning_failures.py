"""Why gradient MPC fails on Two-Rooms: are the failures the model's errors or the optimiser's?

    python benchmarks/planning_failures.py --workdir runs/default [--episodes 100]

Runs the closed-loop evaluation of ``python -m jepa_jax.evaluate --planner gradient`` (same
episodes, same budget), then, for every failed episode, plans once more from the state
where it ended and rolls that plan out twice: through the model (positions read by a
linear probe of the latents) and through the true world. A failure is a **model exploit**
when the model's rollout crosses the middle wall and the world's does not: the planner has
found actions that the model wrongly believes lead through the wall. It is an **optimiser**
failure when the model's rollout stays on its side (the model blocks the wall, and the
search did not find the door). Writes ``W/planning_failures.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import jax

    from jepa_jax import diagnostics, evaluation
    from jepa_jax.envs import two_rooms
    from jepa_jax.planning_eval import build_planner
    from jepa_jax.training.loop import load_trained

    config, exp, params = load_trained(args.workdir)
    pc, env = config.planning, exp.env
    eps = evaluation.make_episodes(jax.random.key(pc.seed), args.episodes, env,
                                   margin=pc.start_goal_margin)
    planner = build_planner(exp, config, "gradient")
    fn = evaluation.make_episode_fn(planner, env, pc.env_steps, pc.replan_every)
    t0 = time.perf_counter()
    positions, _, _ = evaluation.run_evaluation(fn, params, eps, jax.random.key(1),
                                                batch_size=min(pc.batch_size, args.episodes))
    scored = evaluation.score(positions, eps, env)
    success = np.asarray(scored.pop("success"))
    failed = np.where(~success)[0]
    print(f"success {success.mean():.0%} over {args.episodes} episodes; replanning from the "
          f"{len(failed)} failures' final states", flush=True)

    probe = diagnostics.fit_position_probe(exp.wm, params, env, exp.policy,
                                           jax.random.key(config.diagnostics.seed))

    def replan(pos, goal, layout, key):
        obs = evaluation._render(pos, layout, env)
        actions, _ = planner.plan(params, obs, evaluation._render(goal, layout, env), key,
                                  planner.init_state(action_dim=2))
        predicted = exp.wm.rollout(params, exp.wm.encode(params, obs), actions)

        def step(p, a):
            p = two_rooms.transition(p, a, layout[0], layout[1], env)
            return p, p

        _, true = jax.lax.scan(step, pos, actions)
        return predicted, true

    final = positions[failed, -1]
    layout, goal = np.asarray(eps.layout)[failed], np.asarray(eps.goal)[failed]
    predicted, true = jax.jit(jax.vmap(replan))(final, goal, layout,
                                                jax.random.split(jax.random.key(2), len(failed)))
    probed, true = np.asarray(probe(predicted)), np.asarray(true)
    side = final[:, 0] > layout[:, 0]
    model_cross = ((probed[..., 0] > layout[:, None, 0]) != side[:, None]).any(1)
    world_cross = ((true[..., 0] > layout[:, None, 0]) != side[:, None]).any(1)
    gap = np.abs(np.abs(final[:, 0] - layout[:, 0]) - env.wall_half_width)
    away = np.abs(final[:, 1] - layout[:, 1]) > env.door_half_width
    in_goal_room = (final[:, 0] > layout[:, 0]) == (goal[:, 0] > layout[:, 0])
    result = {
        "workdir": str(args.workdir), "episodes": args.episodes,
        "success_rate": float(success.mean()), "failures": int(len(failed)),
        "failures_in_goal_room": int(in_goal_room.sum()),
        "failures_at_wall_away_from_door": int(((gap < 2.5) & away & ~in_goal_room).sum()),
        "model_exploits": int((model_cross & ~world_cross).sum()),
        "optimiser_failures": int((~model_cross).sum()),
        "world_crossings_of_replans": int(world_cross.sum()),
        "median_wall_gap_px_of_failures": float(np.median(gap)) if len(failed) else None,
        "budget": {"planner": "gradient", **dict(planner.config),
                   "replan_every": pc.replan_every, "env_steps": pc.env_steps},
        "seconds": time.perf_counter() - t0,
    }
    out = Path(args.workdir) / "planning_failures.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "budget"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
