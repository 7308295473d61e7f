"""Closed-loop evaluation of the agent on tasks: ``python -m jepa_jax.evaluate --planner agent``.

Task families (each a task specification for the configurator plus per-episode geometry):

* ``reach``: PLDM's protocol, start and goal in opposite rooms (the familiar task: Mode-1
  was distilled on it);
* ``avoid``: start and goal in the same room, at least ``min_dist`` px apart, with a
  forbidden circle on the straight line between them (radius ``clip(dist / 4, 3, 5)`` px);
  success means reaching the goal and never entering the circle;
* ``stay_in``: start and goal in the same room; success means reaching the goal and never
  leaving the room.

Success is PLDM's (within 1.41 px of the goal at some step); for constrained tasks it also
needs zero steps in violation over the whole episode (true positions, no margin), and the
entry rate is reported apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax import agent as agent_lib
from jepa_jax import agent_training, evaluation
from jepa_jax.envs import two_rooms

TASKS = {
    "reach": {"reach": {}},
    "avoid": {"reach": {}, "avoid": {"shape": "circle"}},
    "stay_in": {"reach": {}, "stay_in": {}},
}


def make_task_episodes(name: str, key: jax.Array, num: int, env: two_rooms.EnvParams,
                       margin: float = 2.6, min_dist: float = 16.0
                       ) -> tuple[evaluation.Episodes, agent_lib.TaskParams]:
    """``num`` problems of task family ``name`` and their geometry (``TaskParams``)."""
    _check_task(name)
    if name == "reach":
        eps = evaluation.make_episodes(key, num, env, margin=margin)
        return eps, agent_lib.empty_task_params((num,))

    def one(k):
        kl, kside, ks, kg = jax.random.split(k, 4)
        wall_x, door_y = two_rooms.sample_layout(kl, env)
        side = jax.random.bernoulli(kside).astype(jnp.int32)
        start = two_rooms.sample_free_position(ks, wall_x, env, side, margin)
        # The farthest of 16 candidate goals in the same room (>= min_dist in practice).
        cands = jax.vmap(lambda kk: two_rooms.sample_free_position(kk, wall_x, env, side,
                                                                   margin))(
            jax.random.split(kg, 16))
        dist = jnp.linalg.norm(cands - start, axis=-1)
        ok = dist >= min_dist
        goal = cands[jnp.where(jnp.any(ok), jnp.argmax(ok), jnp.argmax(dist))]
        d = jnp.linalg.norm(goal - start)
        mid = 0.5 * (start + goal)
        radius = jnp.clip(d / 4.0, 3.0, 5.0)
        lo = jnp.where(side == 0, env.low, wall_x + env.wall_half_width)
        hi = jnp.where(side == 0, wall_x - env.wall_half_width, env.high)
        room = jnp.stack([lo, jnp.float32(env.low), hi, jnp.float32(env.high)])
        avoid = jnp.stack([mid[0], mid[1], radius, 0.0])
        return start, goal, jnp.stack([wall_x, door_y]), avoid, room

    start, goal, layout, avoid, room = jax.vmap(one)(jax.random.split(key, num))
    eps = evaluation.Episodes(start=start, goal=goal, layout=layout)
    if name == "avoid":
        return eps, agent_lib.TaskParams(avoid=avoid, stay=jnp.zeros_like(avoid))
    return eps, agent_lib.TaskParams(avoid=jnp.zeros_like(room), stay=room)


def score_task(name: str, positions: np.ndarray, episodes: evaluation.Episodes,
               task: agent_lib.TaskParams) -> dict[str, Any]:
    """``evaluation.score`` plus, for constrained tasks, the violation of the true path."""
    result = evaluation.score(positions, episodes)
    reached = np.asarray(result.pop("success"))
    if name == "reach":
        return {**result, "success": reached.tolist()}
    spec = agent_lib.make_task(TASKS[name])
    viol = np.asarray(jax.vmap(jax.vmap(
        lambda p, tp: agent_lib.region_violation(spec, tp, p, with_margin=False),
        (0, None)))(jnp.asarray(positions), task))  # (N, T+1)
    entered = (viol > 0).any(axis=1)
    success = reached & ~entered
    return {**result, "reach_rate": float(reached.mean()),
            "violation_rate": float(entered.mean()),
            "mean_violation_steps": float((viol > 0).sum(axis=1).mean()),
            "success_rate": float(success.mean()), "success": success.tolist()}


def run_task(config, exp, wm_params, mods: agent_training.AgentModules, name: str,
             episodes: int, seed: int, timing: bool = True, progress=None, **overrides: Any
             ) -> dict[str, Any]:
    """Builds the agent for task family ``name`` (configurator ``overrides``), runs
    ``episodes`` problems from ``seed`` and scores them; with ``timing``, also the ms per
    action of one unbatched episode (see ``time_task``). ``progress``: as in
    ``agent.run_episodes``."""
    agent, key, eps, task = _task_setup(config, exp, mods, name, episodes, seed, overrides)
    params = mods.params(wm_params)
    positions, infos, _, secs = agent_lib.run_episodes(
        agent, params, exp.env, config.planning.env_steps, eps.start, eps.goal, eps.layout,
        task, jax.random.fold_in(key, 1), batch_size=config.planning.batch_size,
        progress=progress)
    result = score_task(name, positions, eps, task)
    result.update(
        task=name, mode=agent.config.mode, mode2_share=float(np.mean(infos["mode2"])),
        plans_per_episode=float(np.mean(np.sum(infos["planned"], axis=1))),
        eval_seconds=secs,
        configuration={"cost": agent.config.cost, "planner": agent.config.planner,
                       "planner_config": agent.config.planner_config,
                       "use_critic": agent.config.use_critic, **agent.config.settings})
    if timing:
        result.update(_time_first_episode(agent, params, config, exp.env, eps, task))
    return result


def time_task(config, exp, wm_params, mods: agent_training.AgentModules, name: str,
              episodes: int, seed: int, **overrides: Any) -> dict[str, float]:
    """``agent.time_per_action`` of the agent ``run_task`` builds, on the first of its
    episodes (the one ``run_task`` times), without running the others."""
    agent, _, eps, task = _task_setup(config, exp, mods, name, episodes, seed, overrides)
    return _time_first_episode(agent, mods.params(wm_params), config, exp.env, eps, task)


def _task_setup(config, exp, mods, name, episodes, seed, overrides):
    """``(agent, key, episodes, task params)`` for task family ``name`` from ``seed``."""
    _check_task(name)
    agent = agent_training.build_agent(config, exp, mods, TASKS[name], **overrides)
    key = jax.random.key(seed)
    eps, task = make_task_episodes(name, key, episodes, exp.env,
                                   margin=config.planning.start_goal_margin)
    return agent, key, eps, task


def _time_first_episode(agent, params, config, env, eps, task) -> dict[str, float]:
    one = jax.tree.map(lambda x: x[0], task)
    return agent_lib.time_per_action(agent, params, env, config.planning.env_steps,
                                     eps.start[0], eps.goal[0], eps.layout[0], one)


def evaluate_agent(workdir: str | Path, task: str = "reach", *, episodes: int | None = None,
                   seed: int | None = None, overrides=(), write: bool = True,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluates the agent trained in ``workdir/agent``; writes ``eval_agent.json`` (task
    ``reach``) or ``eval_agent_<task>.json``. ``progress`` prints a line per batch."""
    _check_task(task)
    config, exp, wm_params = agent_training.load_context(workdir, overrides)
    n = episodes if episodes is not None else config.planning.episodes
    if n < 1:
        raise ValueError(f"--episodes must be >= 1, got {n}")
    ccfg = config.agent.configurator
    need = ["policy"] if ccfg.mode != "mode2" else []
    if ccfg.use_critic:
        need.append("critic")
    mods = agent_training.load_modules(workdir, exp.wm.latent_dim, need=need)
    result = run_task(config, exp, wm_params, mods, task, n,
                      config.planning.seed if seed is None else seed,
                      progress=evaluation.print_progress if progress else None)
    success = result.pop("success")
    result.update(workdir=str(workdir), env_steps=config.planning.env_steps,
                  uses_true_state="only to score the outcome after each episode",
                  num_success=int(np.sum(success)))
    if write:
        name = "eval_agent.json" if task == "reach" else f"eval_agent_{task}.json"
        Path(workdir, name).write_text(json.dumps(result, indent=2, default=_json))
    return result


def _check_task(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")


def _json(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple | list):
        return list(x)
    return str(x)
