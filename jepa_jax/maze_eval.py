"""Closed-loop evaluation on held-out mazes: flat gradient MPC against hierarchical planning.

``python -m jepa_jax.evaluate --workdir W --planner gradient|hierarchical`` on a maze
workdir (``config.env.name == "mazes"``) lands here. Episodes: ``planning.heldout_layouts``
held-out layouts (``planning.layouts="train"`` uses the training layouts instead), start and
goal near cell centres at least ``planning.min_cells`` (at most ``planning.max_cells``, if
> 0) cells apart along the corridors;
``planning.env_steps`` steps, replanning every ``planning.replan_every``; success when the
agent comes within ``planning.success_radius`` px of the goal. The planners see only the
rendered observation and goal image; the true state scores the episode afterwards. Both
planners run the very same episodes (same seed). Writes ``W/eval_<planner>.json`` and a PNG
of a few mazes with the executed path (and, for ``hierarchical``, the level-2 subgoals of
the first plan: positions for the grid level 2, decoded by a linear probe for the MLP one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax import cost as cost_lib
from jepa_jax import evaluation, hierarchy
from jepa_jax.envs import mazes
from jepa_jax.hjepa_training import PARAMS_FILE, load_trained, position_probe
from jepa_jax.planning import make_planner
from jepa_jax.planning.hierarchical import make_hierarchical_planner
from jepa_jax.planning.hierarchical_grid import make_grid_hierarchical_planner

MAZE_PLANNERS = ("gradient", "hierarchical")


def make_episodes(key: jax.Array, num: int, env: mazes.MazeParams, seeds,
                  min_cells: int, max_cells: int = 0) -> evaluation.Episodes:
    """``num`` start-goal problems, layouts cycling through ``seeds``; start and goal cells
    ``min_cells`` to ``max_cells`` (0: any) cells apart along the corridors."""
    seeds = np.asarray(seeds, np.int32)
    walls = mazes.layouts(jnp.asarray(seeds[np.arange(num) % len(seeds)]), env)
    start, goal = jax.vmap(lambda k, w: mazes.sample_start_goal(
        k, w, env, min_cells, max_cells=max_cells))(
        jax.random.split(key, num), walls)
    return evaluation.Episodes(start=start, goal=goal, layout=walls)


def make_episode_fn(planner, env: mazes.MazeParams, env_steps: int, replan_every: int):
    """``run(params, start, goal, walls, key) -> (positions (env_steps+1, 2), extra)`` for one
    episode, where ``extra`` is each round's subgoals (hierarchical) or predicted states."""
    if not 1 <= replan_every <= planner.horizon:
        raise ValueError(f"replan_every must lie in [1, horizon={planner.horizon}], got "
                         f"{replan_every}")
    rounds = -(-env_steps // replan_every)

    def run(params, start, goal, walls, key):
        goal_obs = mazes.render(goal, walls, env)
        state = planner.init_state(action_dim=2)

        def round_fn(carry, k):
            pos, st = carry
            actions, info = planner.plan(params, mazes.render(pos, walls, env), goal_obs, k, st)

            def env_step(p, a):
                p = mazes.transition(p, a, walls, env)
                return p, p

            pos, traj = jax.lax.scan(env_step, pos, actions[:replan_every])
            extra = info["subgoals"] if "subgoals" in info else info["states"]
            return (pos, info["state"]), (traj, extra)

        _, (trajs, extra) = jax.lax.scan(round_fn, (start, state),
                                         jax.random.split(key, rounds))
        return jnp.concatenate([start[None], trajs.reshape(-1, 2)[:env_steps]], 0), extra

    return run


def build_planner(config, wm, l2, name: str, params):
    """``(planner, planner_params)`` for ``name`` with the settings of ``config.planning``."""
    pc = config.planning
    # planning.cost_raw_pixels=False leaves the raw pixel dims (glimpse, map) out of both
    # planners' costs; True (the default) compares the whole latent.
    raw = ((0, 0) if pc.get("cost_raw_pixels", True)
           else hierarchy.raw_pixel_dims(config.model, wm.obs_shape))
    w1 = hierarchy.level1_cost_weights(wm.latent_dim, raw)
    if name == "gradient":
        pcfg = pc.gradient.to_dict()
        pcfg.update(action_bound=float(config.env.action_bound), shift=int(pc.replan_every))
        base = cost_lib.make_cost(pc.cost.to_dict())

        def cost_fn(states, actions, goal):
            return base(states * w1, actions, goal * w1)

        return make_planner("gradient", wm, cost_fn, pcfg), params["l1"]
    if name == "hierarchical" and l2.kind == "grid":
        pcfg = pc.hierarchical_grid.to_dict()
        pcfg.update(action_bound=float(config.env.action_bound), shift=int(pc.replan_every))
        return make_grid_hierarchical_planner(wm, l2, pcfg, low_weights=w1), params
    if name == "hierarchical":
        pcfg = pc.hierarchical.to_dict()
        pcfg.update(action_bound=float(config.env.action_bound), shift=int(pc.replan_every),
                    cost_raw_pixels=bool(pc.get("cost_raw_pixels", True)))
        return make_hierarchical_planner(wm, l2, pcfg, low_weights=w1), params
    raise ValueError(f"unknown maze planner {name!r}; expected one of "
                     f"{', '.join(MAZE_PLANNERS)}")


def time_plan_call(planner, pparams, env, episodes, repeats: int = 5) -> dict[str, float]:
    """Median ms of one compiled single-problem plan call (compilation excluded)."""
    walls = episodes.layout[0]
    obs = mazes.render(episodes.start[0], walls, env)
    goal = mazes.render(episodes.goal[0], walls, env)
    state = planner.init_state(action_dim=2)
    compiled = jax.jit(planner.plan).lower(pparams, obs, goal, jax.random.key(0),
                                           state).compile()
    out = compiled(pparams, obs, goal, jax.random.key(0), state)
    jax.block_until_ready(out)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        out = compiled(pparams, obs, goal, jax.random.key(i + 1), out[1]["state"])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    return {"ms_per_plan": 1e3 * float(np.median(times))}


def score(positions: np.ndarray, episodes, radius: float) -> dict[str, Any]:
    dist = np.linalg.norm(positions - np.asarray(episodes.goal)[:, None], axis=-1)
    success = (dist < radius).any(1)
    first = np.where(success, np.argmax(dist < radius, axis=1), -1)
    return {"success_rate": float(success.mean()), "num_episodes": int(len(success)),
            "mean_final_distance_px": float(dist[:, -1].mean()),
            "mean_steps_to_success": float(first[success].mean()) if success.any() else None,
            "success": success.tolist()}


def evaluate_workdir(workdir, planner_name: str, *, episodes: int | None = None,
                     seed: int | None = None, overrides=(), write: bool = True,
                     plot: bool = True, progress: bool = False) -> dict[str, Any]:
    """Runs the evaluation; writes ``eval_<planner>.json`` (and ``.png``). ``progress`` and
    the resume file ``eval_<planner>.partial.npz``: as ``planning_eval.evaluate_workdir``."""
    workdir = Path(workdir)
    config, env, wm, l2, params = load_trained(workdir, overrides)
    pc = config.planning
    n = pc.episodes if episodes is None else episodes
    if n < 1:
        raise ValueError(f"--episodes must be >= 1, got {n}")
    which = pc.get("layouts", "heldout")
    if which not in ("heldout", "train"):
        raise ValueError(f"planning.layouts must be 'heldout' or 'train', got {which!r}")
    seeds = (mazes.heldout_seeds(env, pc.heldout_layouts) if which == "heldout"
             else mazes.train_seeds(env))
    eps = make_episodes(jax.random.key(pc.seed if seed is None else seed), n, env, seeds,
                        pc.min_cells, pc.get("max_cells", 0))
    planner, pparams = build_planner(config, wm, l2, planner_name, params)
    fn = make_episode_fn(planner, env, pc.env_steps, pc.replan_every)
    timing = time_plan_call(planner, pparams, env, eps)
    timing["ms_per_action"] = timing["ms_per_plan"] / pc.replan_every
    partial = workdir / f"eval_{planner_name}.partial.npz"
    # The episodes and keys are in run_evaluation's own stamp; this adds model and settings.
    fingerprint = json.dumps({"params": evaluation.newest_mtime(workdir / PARAMS_FILE),
                              "planning": pc.to_dict(), "planner": dict(planner.config)},
                             sort_keys=True, default=str)
    positions, extra, secs = evaluation.run_evaluation(
        fn, pparams, eps, jax.random.key(1), batch_size=min(pc.batch_size, n),
        progress=evaluation.print_progress if progress else None,
        resume=partial if write else None, fingerprint=fingerprint)
    result = score(positions, eps, pc.success_radius)
    success = result.pop("success")
    goal_dist = [float(mazes.cell_distances(eps.layout[i], mazes.cell_of(eps.goal[i], env),
                                            env)[int(np.asarray(
                                                mazes.cell_of(eps.start[i], env)) @
                                                np.array([env.grid, 1]))])
                 for i in range(n)]
    result.update(timing, eval_seconds=secs, layouts=which,
                  mean_corridor_cells=float(np.mean(goal_dist)),
                  min_steps_lower_bound=float(np.mean(goal_dist)) * env.cell_px
                  / env.action_bound,
                  budget={"planner": planner_name, "episodes": n, "env_steps": pc.env_steps,
                          "replan_every": pc.replan_every, "min_cells": pc.min_cells,
                          "max_cells": pc.get("max_cells", 0),
                          **dict(planner.config)},
                  workdir=str(workdir), uses_true_state="only to score each episode")
    if write:
        (workdir / f"eval_{planner_name}.json").write_text(json.dumps(result, indent=2))
        partial.unlink(missing_ok=True)
        if plot:
            plot_episodes(workdir / f"eval_{planner_name}.png", config, env, wm, l2, params,
                          eps, positions, extra, success, planner_name, result)
    return result


def plot_episodes(path, config, env, wm, l2, params, eps, positions, extra, success, name,
                  result, num: int = 4) -> None:
    """Mazes with the executed path; for ``hierarchical`` the first plan's level-2 subgoals
    (and each later round's first subgoal) decoded to positions by a linear probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hier = name == "hierarchical"
    if hier and l2.kind == "grid":  # its subgoals are pixel positions
        def probe(x):
            return x
    elif hier:
        probe, _ = position_probe(config, env, wm, params, l2)
    else:
        probe, _ = position_probe(config, env, wm, params["l1"])
    num = min(num, positions.shape[0])
    fig, axes = plt.subplots(1, num, figsize=(3 * num, 3.2))
    axes = np.atleast_1d(axes)
    for i, ax in enumerate(axes):
        img = np.asarray(mazes.render_walls(eps.layout[i], env))
        ax.imshow(img, cmap="Greys", origin="upper", vmin=0, vmax=1.5)
        ax.plot(positions[i, :, 0], positions[i, :, 1], "b-", lw=1, label="executed")
        first = np.asarray(probe(jnp.asarray(extra[i, 0])))
        label = "level-2 subgoals (1st plan)" if hier else "1st plan (probed)"
        ax.plot(first[:, 0], first[:, 1], "mo--", ms=3, lw=0.8, label=label)
        if hier:
            later = np.asarray(probe(jnp.asarray(extra[i, :, 0])))
            ax.plot(later[:, 0], later[:, 1], "m.", ms=2, alpha=0.5,
                    label="first subgoal, every round")
        ax.plot(*np.asarray(eps.start[i]), "go", ms=5)
        ax.plot(*np.asarray(eps.goal[i]), "r*", ms=9)
        ax.set_title("success" if success[i] else "failure", fontsize=8)
        ax.set_xlim(-0.5, env.img_size - 0.5)
        ax.set_ylim(env.img_size - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=5, loc="lower left")
    fig.suptitle(f"{name}: success {result['success_rate']:.0%} over "
                 f"{result['num_episodes']} held-out episodes"
                 if result.get("layouts") == "heldout" else
                 f"{name}: success {result['success_rate']:.0%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
