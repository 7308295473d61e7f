"""Train the agent's modules on a trained world model.

    python -m jepa_jax.train_agent --workdir W [--stages critic,policy] [--config.agent.X=V]

Fits the position probe and latent scales, the critic (value iteration over sampled
states, or TD(lambda) on closed-loop memories: ``agent.critic.method``) and Mode-1 (trained
on Mode-2's cost, or behaviour cloning on Mode-2 with DAgger: ``agent.policy.method``), and saves
them under ``W/agent/`` (see ``jepa_jax/agent_training.py``). Then
``python -m jepa_jax.evaluate --workdir W --planner agent`` runs the agent.
"""

from __future__ import annotations

import argparse
import sys

from jepa_jax import runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_jax.train_agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory of a trained model")
    parser.add_argument("--stages", default="critic,policy",
                        help="comma-separated: critic, policy (others are kept if saved)")
    args, overrides = parser.parse_known_args(argv)
    runtime.setup()
    from jepa_jax.agent_training import train_agent

    try:
        log = train_agent(args.workdir, overrides,
                          stages=tuple(s for s in args.stages.split(",") if s))
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"agent trained in {log['seconds']:.0f} s; saved in {args.workdir}/agent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
