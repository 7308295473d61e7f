"""H-JEPA on mazes (issue 5): hierarchical planning against flat gradient MPC on held-out
layouts, and success against the number of training layouts.

    python benchmarks/hjepa.py --runs /tmp/hjepa [--layouts 20] [--episodes 100]
    python benchmarks/hjepa.py --runs /tmp/hjepa --layouts 5,20,40 --episodes 50
    python benchmarks/hjepa.py --runs /tmp/hjepa --layouts 20 --distances 1,2,4 --episodes 50

For each number of training layouts L: trains ``experiments/mazes.py`` with
``env.num_train_layouts=L`` into ``RUNS/layouts_L`` (skipped if already trained there),
then runs ``python -m jepa_jax.evaluate``'s evaluation for ``gradient`` and
``hierarchical`` on the same held-out episodes, and times both planners' compiled plan
calls alternately in one process (``paired_timing``: the per-episode timings of separate
runs vary with the load of a shared machine). Writes
``benchmarks/results/hjepa_layouts_<L,...>.json`` with, per L, the training time and
metrics and both planners' success rate, mean final distance and ms per action.
Extra ``--config.*`` arguments are passed to training and evaluation alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def paired_timing(workdir, overrides=(), rounds: int = 10, calls: int = 10) -> dict:
    """ms per action of both planners, timed alternately in one process (``rounds`` x
    ``calls`` compiled single-problem plan calls each), so that load from other processes
    hits both alike; medians over rounds."""
    import jax
    import numpy as np

    from jepa_jax.envs import mazes
    from jepa_jax.hjepa_training import load_trained
    from jepa_jax.maze_eval import build_planner, make_episodes

    config, env, wm, l2, params = load_trained(workdir, overrides)
    eps = make_episodes(jax.random.key(0), 1, env, mazes.heldout_seeds(env, 1),
                        config.planning.min_cells)
    obs = mazes.render(eps.start[0], eps.layout[0], env)
    goal = mazes.render(eps.goal[0], eps.layout[0], env)
    fns = {}
    for name in ("gradient", "hierarchical"):
        planner, pparams = build_planner(config, wm, l2, name, params)
        state = planner.init_state(action_dim=2)
        fn = jax.jit(planner.plan).lower(pparams, obs, goal, jax.random.key(0),
                                         state).compile()
        jax.block_until_ready(fn(pparams, obs, goal, jax.random.key(0), state))
        fns[name] = (fn, pparams, state)
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name, (fn, pparams, state) in fns.items():
            t = time.perf_counter()
            for i in range(calls):
                out = fn(pparams, obs, goal, jax.random.key(r * calls + i), state)
            jax.block_until_ready(out)
            times[name].append(1e3 * (time.perf_counter() - t) / calls)
    every = config.planning.replan_every
    res = {f"{n}_ms_per_action": float(np.median(t)) / every for n, t in times.items()}
    res["ratio"] = res["hierarchical_ms_per_action"] / res["gradient_ms_per_action"]
    res["replan_every"] = every
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="directory for the trained workdirs")
    parser.add_argument("--layouts", default="20", help="comma-separated training layouts")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--distances", default="",
                        help="e.g. 1,2,4: success against the corridor distance (start and "
                             "goal exactly that many cells apart; 100 steps) of the run "
                             "RUNS/layouts_<first --layouts>, instead of the layouts sweep")
    parser.add_argument("--add-timing", default="",
                        help="only add paired timings to the rows of this results JSON")
    args, overrides = parser.parse_known_args()
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    if args.add_timing:
        path = Path(args.add_timing)
        out = json.loads(path.read_text())
        for row in out["rows"]:
            row["paired_timing"] = paired_timing(row["workdir"])
            row["targets"]["time_per_action_ratio"] = row["paired_timing"]["ratio"]
            row["targets"]["hierarchical_at_most_3x_flat_time"] = (
                row["paired_timing"]["ratio"] <= 3)
            print(f"layouts={row['train_layouts']}: {row['paired_timing']}", flush=True)
        path.write_text(json.dumps(out, indent=2))
        return 0
    import jax

    from jepa_jax import configs
    from jepa_jax.hjepa_training import train_and_evaluate
    from jepa_jax.maze_eval import evaluate_workdir

    counts = [int(v) for v in args.layouts.split(",")]
    if args.distances:
        return _distances(args, counts[0], overrides, evaluate_workdir, jax)
    rows = []
    for count in counts:
        workdir = Path(args.runs) / f"layouts_{count}"
        train_over = [*overrides, f"--config.env.num_train_layouts={count}"]
        metrics_file = workdir / "train_metrics.json"
        if metrics_file.exists():
            train = json.loads(metrics_file.read_text())
        else:
            config = configs.load_config(f"{ROOT}/experiments/mazes.py:{args.preset}",
                                         train_over)
            train = train_and_evaluate(config, workdir, progress=False)
        row = {"train_layouts": count, "workdir": str(workdir),
               "train_seconds": train["train_seconds"], "probe_r2": train["probe_r2"]}
        eval_over = [o for o in overrides if "planning." in o]
        for name in ("gradient", "hierarchical"):
            t = time.perf_counter()
            r = evaluate_workdir(workdir, name, episodes=args.episodes, overrides=eval_over)
            row[name] = {k: r[k] for k in ("success_rate", "mean_final_distance_px",
                                           "ms_per_plan", "ms_per_action", "eval_seconds",
                                           "mean_corridor_cells", "min_steps_lower_bound")}
            row[name]["budget"] = r["budget"]
            print(f"layouts={count} {name}: success={r['success_rate']:.2f} "
                  f"ms/action={r['ms_per_action']:.2f} ({time.perf_counter() - t:.0f} s)",
                  flush=True)
        g, h = row["gradient"], row["hierarchical"]
        row["paired_timing"] = paired_timing(workdir, eval_over)
        print(f"layouts={count} paired timing: {row['paired_timing']}", flush=True)
        row["targets"] = {
            "hierarchical_success_at_least_0.8": h["success_rate"] >= 0.8,
            "flat_at_most_half_of_hierarchical": g["success_rate"] <= 0.5 * h["success_rate"],
            "time_per_action_ratio": row["paired_timing"]["ratio"],
            "hierarchical_at_most_3x_flat_time": row["paired_timing"]["ratio"] <= 3}
        rows.append(row)
    out = {"benchmark": "hjepa_mazes", "episodes": args.episodes, "preset": args.preset,
           "overrides": overrides, "rows": rows,
           "machine": {"platform": platform.platform(), "backend": jax.default_backend(),
                       "devices": [str(d) for d in jax.devices()]},
           "command": "python benchmarks/hjepa.py " + " ".join(sys.argv[1:])}
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"hjepa_layouts_{'_'.join(map(str, counts))}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


def _distances(args, count, overrides, evaluate_workdir, jax) -> int:
    workdir = Path(args.runs) / f"layouts_{count}"
    rows = []
    for cells in [int(v) for v in args.distances.split(",")]:
        over = [*overrides, f"--config.planning.min_cells={cells}",
                f"--config.planning.max_cells={cells}", "--config.planning.env_steps=100"]
        row = {"corridor_cells": cells}
        for name in ("gradient", "hierarchical"):
            r = evaluate_workdir(workdir, name, episodes=args.episodes, overrides=over,
                                 write=False)
            row[name] = {k: r[k] for k in ("success_rate", "mean_final_distance_px")}
            print(f"cells={cells} {name}: success={r['success_rate']:.2f}", flush=True)
        rows.append(row)
    out = {"benchmark": "hjepa_mazes_distance", "workdir": str(workdir), "train_layouts": count,
           "episodes": args.episodes, "env_steps": 100, "rows": rows,
           "backend": jax.default_backend(),
           "command": "python benchmarks/hjepa.py " + " ".join(sys.argv[1:])}
    path = ROOT / "benchmarks" / "results" / f"hjepa_distance_layouts_{count}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
