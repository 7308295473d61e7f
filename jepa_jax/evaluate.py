"""Closed-loop planning evaluation of a trained world model.

    python -m jepa_jax.evaluate --workdir W --planner gradient|cem|mppi|straight --episodes N
    python -m jepa_jax.evaluate --workdir W --planner agent [--task reach|avoid|stay_in]
    python -m jepa_jax.evaluate --workdir W --planner hierarchical|gradient   (maze workdirs)

Loads the model trained in ``W`` (its ``config.json`` and latest checkpoint), runs N
Two-Rooms episodes with start and goal in opposite rooms, and writes ``W/eval_<planner>.json``
(success rate, goal-room rate, final distance, ms per plan call, memory, and the full budget)
and ``W/eval_<planner>.png``. ``--config.planning.<planner>.<key>=value`` overrides planner
settings, e.g. ``--config.planning.gradient.num_iters=10``. Progress is printed after every
batch of ``planning.batch_size`` episodes (``--config.planning.batch_size=20`` for more
often); a killed evaluation started again with the same arguments resumes after its last
finished batch (kept in ``W/eval_<planner>.partial.npz``).

``--planner agent`` runs the autonomous agent (``jepa_jax/agent.py``) whose modules
``python -m jepa_jax.train_agent --workdir W`` trained, and writes ``W/eval_agent.json``
(``eval_agent_<task>.json`` for other tasks): success, share of steps in Mode-2, plan calls
per episode, ms per action. ``--config.agent.configurator.<key>=value`` changes its
settings, e.g. ``--config.agent.configurator.mode=mode1``.
"""

from __future__ import annotations

import argparse
import sys

from jepa_jax import runtime

PLANNERS = ("gradient", "cem", "mppi", "straight", "agent", "hierarchical")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_jax.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a trained model")
    parser.add_argument("--planner", required=True, help="|".join(PLANNERS))
    parser.add_argument("--episodes", type=int, default=None,
                        help="number of episodes (default: config.planning.episodes)")
    parser.add_argument("--seed", type=int, default=None, help="episode seed")
    parser.add_argument("--task", default="reach",
                        help="agent only: reach (default), avoid or stay_in")
    parser.add_argument("--critic-weight", type=float, default=0.0,
                        help="gradient|cem|mppi: add the critic of W/agent to the cost as a "
                             "terminal value with this weight (writes eval_<planner>_critic.json)")
    args, overrides = parser.parse_known_args(argv)
    if args.planner not in PLANNERS:
        print(f"error: unknown planner {args.planner!r}; expected one of "
              f"{', '.join(PLANNERS)}", file=sys.stderr)
        return 1
    runtime.setup()
    if _is_maze_workdir(args.workdir):
        return _maze(args, overrides)
    if args.planner == "hierarchical":
        print("error: --planner hierarchical needs an H-JEPA maze workdir "
              "(experiments/mazes.py)", file=sys.stderr)
        return 1
    if args.planner == "agent":
        return _agent(args, overrides)
    if args.task != "reach":
        print("error: --task applies to --planner agent only", file=sys.stderr)
        return 1
    from jepa_jax.planning_eval import evaluate_workdir

    try:
        result = evaluate_workdir(args.workdir, args.planner, episodes=args.episodes,
                                  seed=args.seed, overrides=overrides,
                                  critic_weight=args.critic_weight, progress=True)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.planner}: success_rate={result['success_rate']:.3f} "
          f"goal_room_rate={result['goal_room_rate']:.3f} "
          f"mean_final_distance_px={result['mean_final_distance_px']:.2f} "
          f"ms_per_plan={result.get('ms_per_plan', float('nan')):.1f} "
          f"wall_s={result['eval_seconds']:.1f}")
    if "pit_rate" in result:  # Windy Two-Rooms: how the failures ended
        print("  " + " ".join(f"{k}={result[k]:.3f}" for k in (
            "pit_rate", "pit_from_bridge_rate", "pit_walked_in_rate", "stalled_rate",
            "bridge_rate")))
    return 0


def _is_maze_workdir(workdir: str) -> bool:
    import json
    from pathlib import Path

    path = Path(workdir) / "config.json"
    try:
        return json.loads(path.read_text()).get("env", {}).get("name") == "mazes"
    except (OSError, ValueError):
        return False


def _maze(args, overrides) -> int:
    """H-JEPA maze workdirs: ``--planner gradient|hierarchical`` on held-out layouts."""
    from jepa_jax.maze_eval import MAZE_PLANNERS, evaluate_workdir

    if args.planner not in MAZE_PLANNERS:
        print(f"error: a maze workdir supports --planner {' or '.join(MAZE_PLANNERS)}, got "
              f"{args.planner!r}", file=sys.stderr)
        return 1
    try:
        r = evaluate_workdir(args.workdir, args.planner, episodes=args.episodes,
                             seed=args.seed, overrides=overrides, progress=True)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.planner} ({r['layouts']} layouts): success_rate={r['success_rate']:.3f} "
          f"mean_final_distance_px={r['mean_final_distance_px']:.2f} "
          f"ms_per_plan={r['ms_per_plan']:.1f} ms_per_action={r['ms_per_action']:.2f} "
          f"wall_s={r['eval_seconds']:.1f}")
    return 0


def _agent(args, overrides) -> int:
    from jepa_jax.agent_eval import evaluate_agent

    try:
        r = evaluate_agent(args.workdir, args.task, episodes=args.episodes, seed=args.seed,
                           overrides=overrides, progress=True)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    extra = (f" violation_rate={r['violation_rate']:.3f}" if "violation_rate" in r else "")
    print(f"agent ({r['task']}, mode {r['mode']}): success_rate={r['success_rate']:.3f}"
          f"{extra} mode2_share={r['mode2_share']:.3f} "
          f"plans_per_episode={r['plans_per_episode']:.1f} "
          f"ms_per_action={r['ms_per_action']:.2f} wall_s={r['eval_seconds']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
