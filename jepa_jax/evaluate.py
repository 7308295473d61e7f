"""Closed-loop planning evaluation of a trained world model.

    python -m jepa_jax.evaluate --workdir W --planner gradient|cem|mppi|straight --episodes N

Loads the model trained in ``W`` (its ``config.json`` and latest checkpoint), runs N
Two-Rooms episodes with start and goal in opposite rooms, and writes ``W/eval_<planner>.json``
(success rate, goal-room rate, final distance, ms per plan call, memory, and the full budget)
and ``W/eval_<planner>.png``. ``--config.planning.<planner>.<key>=value`` overrides planner
settings, e.g. ``--config.planning.gradient.num_iters=10``.
"""

from __future__ import annotations

import argparse
import sys

from jepa_jax import runtime

PLANNERS = ("gradient", "cem", "mppi", "straight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_jax.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a trained model")
    parser.add_argument("--planner", required=True, help="|".join(PLANNERS))
    parser.add_argument("--episodes", type=int, default=None,
                        help="number of episodes (default: config.planning.episodes)")
    parser.add_argument("--seed", type=int, default=None, help="episode seed")
    args, overrides = parser.parse_known_args(argv)
    if args.planner not in PLANNERS:
        print(f"error: unknown planner {args.planner!r}; expected one of "
              f"{', '.join(PLANNERS)}", file=sys.stderr)
        return 1
    runtime.setup()
    from jepa_jax.planning_eval import evaluate_workdir

    try:
        result = evaluate_workdir(args.workdir, args.planner, episodes=args.episodes,
                                  seed=args.seed, overrides=overrides)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.planner}: success_rate={result['success_rate']:.3f} "
          f"goal_room_rate={result['goal_room_rate']:.3f} "
          f"mean_final_distance_px={result['mean_final_distance_px']:.2f} "
          f"ms_per_plan={result.get('ms_per_plan', float('nan')):.1f} "
          f"wall_s={result['eval_seconds']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
