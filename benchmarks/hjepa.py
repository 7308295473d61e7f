"""H-JEPA on mazes (issue 5): hierarchical planning against flat gradient MPC on held-out
layouts, and success against the number of training layouts.

    python benchmarks/hjepa.py --runs /tmp/hjepa [--layouts 20] [--episodes 100]
    python benchmarks/hjepa.py --runs /tmp/hjepa --layouts 5,20,40 --episodes 50

For each number of training layouts L: trains ``experiments/mazes.py`` with
``env.num_train_layouts=L`` into ``RUNS/layouts_L`` (skipped if already trained there),
then runs ``python -m jepa_jax.evaluate``'s evaluation for ``gradient`` and
``hierarchical`` on the same held-out episodes. Writes
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="directory for the trained workdirs")
    parser.add_argument("--layouts", default="20", help="comma-separated training layouts")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--preset", default="default")
    args, overrides = parser.parse_known_args()
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import jax

    from jepa_jax import configs
    from jepa_jax.hjepa_training import train_and_evaluate
    from jepa_jax.maze_eval import evaluate_workdir

    counts = [int(v) for v in args.layouts.split(",")]
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
        row["targets"] = {
            "hierarchical_success_at_least_0.8": h["success_rate"] >= 0.8,
            "flat_at_most_half_of_hierarchical": g["success_rate"] <= 0.5 * h["success_rate"],
            "time_per_action_ratio": h["ms_per_action"] / g["ms_per_action"],
            "hierarchical_at_most_3x_flat_time": h["ms_per_action"] <= 3 * g["ms_per_action"]}
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


if __name__ == "__main__":
    sys.exit(main())
