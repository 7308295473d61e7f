"""Planning quality against compute: success rate and ms per plan call of each planner at
several budgets, on the same episodes of a trained workdir.

    python benchmarks/planning.py --workdir runs/default [--episodes 50] [--resume]

Writes ``benchmarks/results/planning_budgets.json`` (after every point, so that a killed run
keeps what it measured; ``--resume`` skips the points already there) and
``planning_budgets.png`` (success against milliseconds per plan call). Each budget is a set
of ``--config.planning.*`` overrides; the full budget of every point is stored with it.
The configured budget of each planner (the eb_jepa reference for CEM and MPPI) runs first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BUDGETS = {
    "gradient": [{"num_iters": 20, "num_restarts": 16}, {"num_iters": 5, "num_restarts": 4},
                 {"num_iters": 10, "num_restarts": 8}, {"num_iters": 40, "num_restarts": 32}],
    "cem": [{"num_iters": 20, "num_samples": 200, "num_elites": 20},
            {"num_iters": 5, "num_samples": 50, "num_elites": 5},
            {"num_iters": 10, "num_samples": 100, "num_elites": 10}],
    "mppi": [{"num_iters": 20, "num_samples": 200}, {"num_iters": 5, "num_samples": 50},
             {"num_iters": 10, "num_samples": 100}],
}

# Horizon-90 sampling planners replan every 20 steps (10 calls per episode): at every 4 steps
# one 50-episode CEM point took over 20 minutes on the 2-core CPU.
SAMPLING_REPLAN_EVERY = {"cem": 20, "mppi": 20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--planners", default="gradient,cem,mppi")
    parser.add_argument("--resume", action="store_true",
                        help="keep the points of an existing results file; run the others")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jepa_jax.planning_eval import evaluate_workdir

    out = ROOT / "benchmarks" / "results"
    path = out / "planning_budgets.json"
    points = []
    if args.resume and path.exists():
        old = json.loads(path.read_text())
        if old["workdir"] != args.workdir or old["episodes"] != args.episodes:
            raise SystemExit(f"--resume: {path} is for {old['workdir']} with "
                             f"{old['episodes']} episodes")
        points = old["points"]
    for name in args.planners.split(","):
        for budget in BUDGETS[name]:
            if any(p["planner"] == name and p["overrides"] == budget for p in points):
                continue
            overrides = [f"--config.planning.{name}.{k}={v}" for k, v in budget.items()]
            if name in SAMPLING_REPLAN_EVERY:  # as in experiments/run_default.sh
                overrides.append(f"--config.planning.replan_every={SAMPLING_REPLAN_EVERY[name]}")
            r = evaluate_workdir(args.workdir, name, episodes=args.episodes,
                                 overrides=overrides, write=False)
            point = {"planner": name, "success_rate": r["success_rate"],
                     "ms_per_plan": r["ms_per_plan"], "eval_seconds": r["eval_seconds"],
                     "overrides": budget, "budget": r["budget"]}
            points.append(point)
            path.write_text(json.dumps(
                {"workdir": args.workdir, "episodes": args.episodes, "points": points}, indent=2))
            print(f"{name:>9} {budget}: success {r['success_rate']:.0%}, "
                  f"{r['ms_per_plan']:.1f} ms/plan", flush=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in args.planners.split(","):
        pts = sorted((p for p in points if p["planner"] == name),
                     key=lambda p: p["ms_per_plan"])
        ax.plot([p["ms_per_plan"] for p in pts], [p["success_rate"] for p in pts], "o-",
                label=name)
    ax.set_xscale("log")
    ax.set_xlabel("ms per plan call (batch 1, compiled)")
    ax.set_ylabel(f"success rate ({args.episodes} episodes)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "planning_budgets.png", dpi=100)
    print(f"wrote {out / 'planning_budgets.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
