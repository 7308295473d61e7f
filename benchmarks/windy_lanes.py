"""How often does a crossing of Windy Two-Rooms' bridge fall, by lane and by how often the
walker corrects? The true world only (no model): what a perfect planner could hope for.

    python benchmarks/windy_lanes.py [--episodes 20000] [--gust-prob P]

A scripted walker starts 3 px before the bridge, at the height ``lane``, and walks across
(+x) at the action bound for ``steps`` steps, spending up to ``correct`` px of each step's
move on returning to its lane in y (the rest goes forward). It reads its true position
every ``every`` steps and in between acts on where it believed it was (open loop, as a
planner that replans every ``every`` steps). ``correct = 0`` walks straight. Reports the
share of crossings that end in a pit and the share across the bridge after ``steps``
steps, for the world of ``experiments/stochastic_rooms.py``. Pure JAX: seconds on a CPU.

Writes ``benchmarks/results/windy_lanes.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "stochastic_rooms.py"
RESULTS = ROOT / "benchmarks" / "results"
STEPS = 12  # steps per crossing: from 3 px before the bridge to well past it


def crossing_outcomes(env, lane: float, correct: float, every: int, key, episodes: int,
                      steps: int = STEPS):
    """(pit rate, across rate) of ``episodes`` scripted crossings (see module docstring)."""
    import jax
    import jax.numpy as jnp

    from jepa_jax.envs import windy_rooms

    wall_x = jnp.float32(env.wall_x)
    door_y = jnp.float32(env.door_y)
    bound = env.action_bound

    def action(believed):
        dy = jnp.clip(lane - believed[1], -correct, correct)
        return jnp.stack([jnp.sqrt(jnp.maximum(bound**2 - dy**2, 0.0)), dy])

    def one(k):
        start = jnp.array([env.wall_x - env.wind_half_length - 3.0, lane], jnp.float32)

        def body(carry, inputs):
            pos, believed = carry
            t, kt = inputs
            believed = jnp.where(t % every == 0, pos, believed)  # a fresh look
            a = action(believed)
            pos = windy_rooms.transition(pos, a, wall_x, door_y, env, kt)
            return (pos, believed + a), None

        (pos, _), _ = jax.lax.scan(body, (start, start),
                                   (jnp.arange(steps), jax.random.split(k, steps)))
        return (windy_rooms.in_pit(pos, wall_x, env),
                pos[0] > env.wall_x + env.wind_half_length)

    pit, across = jax.jit(jax.vmap(one))(jax.random.split(key, episodes))
    return float(pit.mean()), float(across.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20000)
    parser.add_argument("--gust-prob", type=float, default=None,
                        help="override the experiment's gust probability (each direction)")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    sys.path.insert(0, str(ROOT))
    from jepa_jax import configs, runtime

    runtime.setup()
    import jax

    from jepa_jax.training.loop import env_params_from_config

    cfg = configs.load_config(str(CONFIG))
    if args.gust_prob is not None:
        cfg.env.gust_prob = args.gust_prob
    env = env_params_from_config(cfg.env)
    bound = env.action_bound
    top = env.windy_door_y - env.windy_half_width  # the bridge's upper edge (small y)
    lanes = [top + d for d in (1.0, 3.0, 5.0, 8.0)]  # near the edge ... the middle
    walkers = {"straight, open loop": (0.0, 1), "correct fully, look every 4 steps": (bound, 4),
               "correct up to 1.5 px, look every step": (1.5, 1),
               "correct fully, look every step": (bound, 1)}
    rows = []
    print(f"gust {env.gust} px with probability {env.gust_prob} each way; bridge y "
          f"{env.windy_door_y} +- {env.windy_half_width}; {args.episodes} crossings each")
    for lane in lanes:
        for name, (correct, every) in walkers.items():
            pit, across = crossing_outcomes(env, lane, correct, every, jax.random.key(0),
                                            args.episodes)
            rows.append(dict(lane_y=lane, px_from_edge=lane - top, walker=name,
                             pit_rate=pit, across_rate=across))
            print(f"lane y {lane:4.1f} ({lane - top:.0f} px from the edge), {name:>38}: "
                  f"pit {pit:5.1%}, across {across:5.1%}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "windy_lanes.json"
    out.write_text(json.dumps(dict(
        gust=env.gust, gust_prob=env.gust_prob, windy_door_y=env.windy_door_y,
        windy_half_width=env.windy_half_width, episodes=args.episodes, steps=STEPS, rows=rows,
        command="python benchmarks/windy_lanes.py " + " ".join(sys.argv[1:])), indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
