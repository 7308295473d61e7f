#!/usr/bin/env bash
# The `full` preset end to end (about 1.5 hours on a 2-core CPU): train the world model
# (under an hour), fit the agent's critic and Mode-1, evaluate gradient MPC with the critic's
# cost on 100 episodes, and measure the agent's targets (issue #6).
#   bash experiments/run_full.sh [WORKDIR]   (default: runs/full)
# Every step resumes or redoes only its own part: re-running after an interruption resumes
# training, and the later steps are cheap to repeat.
set -euo pipefail
WORKDIR=${1:-runs/full}
cd "$(dirname "$0")/.."
python -m jepa_jax.train --config experiments/two_rooms.py:full --workdir "$WORKDIR"
python -m jepa_jax.train_agent --workdir "$WORKDIR"          # critic (~7 min), Mode-1 (~3 min)
python -m jepa_jax.evaluate --workdir "$WORKDIR" --planner gradient --episodes 100 \
  --critic-weight 1 --config.planning.gradient.horizon=48    # 97-99% measured
python benchmarks/agent.py --workdir "$WORKDIR" --reuse \
  --out "$WORKDIR/agent_benchmark.json"                      # the agent's targets
