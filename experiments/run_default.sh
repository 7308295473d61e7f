#!/usr/bin/env bash
# The README's main job: train the default Two-Rooms world model (or resume / skip if done),
# then evaluate each planner on 100 closed-loop episodes and print the success rates.
#   bash experiments/run_default.sh [WORKDIR]   (default: runs/default)
set -euo pipefail
WORKDIR=${1:-runs/default}
cd "$(dirname "$0")/.."
python -m jepa_jax.train --config experiments/two_rooms.py --workdir "$WORKDIR"
python -m jepa_jax.evaluate --workdir "$WORKDIR" --planner straight --episodes 100
python -m jepa_jax.evaluate --workdir "$WORKDIR" --planner gradient --episodes 100
# The critic (value iteration over sampled states, a few minutes), then the gradient planner
# with the critic's cost (reach cost over the horizon + terminal value) at horizon 48.
python -m jepa_jax.train_agent --workdir "$WORKDIR" --stages critic
python -m jepa_jax.evaluate --workdir "$WORKDIR" --planner gradient --episodes 100 \
  --critic-weight 1 --config.planning.gradient.horizon=48
# The sampling baselines at eb_jepa's settings (horizon 90, 200 samples x 20 iterations) cost
# ~0.45 s per plan call here, so they replan every 20 steps (about 7 minutes each).
for planner in mppi cem; do
  python -m jepa_jax.evaluate --workdir "$WORKDIR" --planner "$planner" --episodes 100 \
    --config.planning.replan_every=20
done
python - "$WORKDIR" <<'PY'
import json, pathlib, sys
w = pathlib.Path(sys.argv[1])
m = json.loads((w / "final_metrics.json").read_text())
print(f"\nworld model: probe R^2 {m['probe_r2']:.4f}, 16-step rollout error "
      f"{m['rollout_px_h16']:.2f} px, wall violations {m['wall_violation_rate']:.1%}")
print(f"{'planner':>15} {'success':>8} {'goal room':>10} {'ms/plan':>8}")
for p in ("straight", "gradient", "gradient_critic", "mppi", "cem"):
    r = json.loads((w / f"eval_{p}.json").read_text())
    p = p.replace("_critic", "+critic")
    ms = r.get("ms_per_plan")
    print(f"{p:>15} {r['success_rate']:>8.0%} {r['goal_room_rate']:>10.0%} "
          f"{'-' if ms is None else f'{ms:.1f}':>8}")
PY
