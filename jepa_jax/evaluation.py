"""Closed-loop evaluation: receding-horizon planning in the pure-JAX Two-Rooms world.

PLDM's Two-Rooms protocol: start and goal in opposite rooms, ``env_steps`` (200) environment
steps, success when the mean over x and y of the squared position error falls below 1 px^2
at some step (within 1.41 px). The planner sees only rendered observations (the current one
and the goal image); the true state is read after the episode, to score it.

Everything runs under one ``jit``: ``vmap`` over episodes, ``lax.scan`` over replanning
rounds and over the ``replan_every`` environment steps executed from each plan. Shapes are
fixed, so memory does not grow over an episode.

Any world of :mod:`jepa_jax.envs` works; in a stochastic one the environment's randomness
comes from keys folded out of each replanning round's key (the planner's own draws are
unchanged).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jepa_jax import envs
from jepa_jax.envs import two_rooms
from jepa_jax.planning.base import Planner, PlannerState

SUCCESS_THRESHOLD_PX2 = 1.0


@struct.dataclass
class Episodes:
    """Start and goal problems: start (N, 2), goal (N, 2), layout (N, 2) = (wall_x, door_y)."""

    start: jax.Array
    goal: jax.Array
    layout: jax.Array


def make_episodes(key: jax.Array, num: int, env: two_rooms.EnvParams,
                  margin: float = 1.0) -> Episodes:
    """``num`` problems with start and goal drawn uniformly in opposite rooms."""
    def one(k):
        kl, ks, kg, kside = jax.random.split(k, 4)
        wall_x, door_y = envs.sample_layout(kl, env)
        side = jax.random.bernoulli(kside).astype(jnp.int32)
        start = envs.sample_free_position(ks, wall_x, env, side, margin)
        goal = envs.sample_free_position(kg, wall_x, env, 1 - side, margin)
        return start, goal, jnp.stack([wall_x, door_y])

    start, goal, layout = jax.vmap(one)(jax.random.split(key, num))
    return Episodes(start=start, goal=goal, layout=layout)


def _render(pos, layout, env):
    return envs.render(two_rooms.make_state(pos, layout[0], layout[1]), env)


def make_episode_fn(planner: Planner, env: two_rooms.EnvParams, env_steps: int,
                    replan_every: int):
    """Returns ``run(params, start, goal, layout, key) -> (positions (env_steps+1, 2),
    plans (rounds, H, A))`` for one episode; vmap it over episodes."""
    if replan_every < 1:
        raise ValueError(f"replan_every must be >= 1, got {replan_every}")
    if replan_every > planner.horizon:
        raise ValueError(f"replan_every ({replan_every}) exceeds the planner horizon "
                         f"({planner.horizon})")
    rounds = -(-env_steps // replan_every)

    def run(params, start, goal, layout, key):
        goal_obs = _render(goal, layout, env)
        pstate = planner.init_state(action_dim=2)

        def round_fn(carry, k):
            pos, ps = carry
            obs = _render(pos, layout, env)
            actions, info = planner.plan(params, obs, goal_obs, k, ps)
            if envs.is_stochastic(env):
                def env_step_key(p, inputs):
                    a, ke = inputs
                    p = envs.transition(p, a, layout[0], layout[1], env, ke)
                    return p, p

                env_keys = jax.random.split(jax.random.fold_in(k, 1), replan_every)
                pos, traj = jax.lax.scan(env_step_key, pos,
                                         (actions[:replan_every], env_keys))
                return (pos, info["state"]), (traj, actions)

            def env_step(p, a):
                p = two_rooms.transition(p, a, layout[0], layout[1], env)
                return p, p

            pos, traj = jax.lax.scan(env_step, pos, actions[:replan_every])
            return (pos, info["state"]), (traj, actions)

        keys = jax.random.split(key, rounds)
        _, (trajs, plans) = jax.lax.scan(round_fn, (start, pstate), keys)
        positions = jnp.concatenate([start[None], trajs.reshape(-1, 2)[:env_steps]], 0)
        return positions, plans

    return run


def make_straight_episode_fn(env: two_rooms.EnvParams, env_steps: int):
    """The no-model baseline: walk straight toward the goal's true position."""
    def run(params, start, goal, layout, key):
        del params
        if envs.is_stochastic(env):
            def env_step_key(p, ke):
                p = envs.transition(p, goal - p, layout[0], layout[1], env, ke)
                return p, p

            _, traj = jax.lax.scan(env_step_key, start, jax.random.split(key, env_steps))
            return jnp.concatenate([start[None], traj], 0), jnp.zeros((1, 1, 2))

        def env_step(p, _):
            p = two_rooms.transition(p, goal - p, layout[0], layout[1], env)
            return p, p

        _, traj = jax.lax.scan(env_step, start, None, length=env_steps)
        return jnp.concatenate([start[None], traj], 0), jnp.zeros((1, 1, 2))

    return run


def score(positions: np.ndarray, episodes: Episodes, env: Any = None) -> dict[str, Any]:
    """Outcome metrics from executed positions (N, T+1, 2).

    With a Windy Two-Rooms ``env`` also ``pit_rate``, the fraction of episodes that ended in
    a pit, split by how the agent got there: ``pit_from_bridge_rate`` (it stood on the
    bridge the step before, so a gust or its own move threw it off) and
    ``pit_walked_in_rate`` (it walked in from a room: the pits are visible, so that is the
    model's or the planner's error, not bad luck); ``stalled_rate``, the episodes that
    ended in neither a pit nor success in the start room; and ``bridge_rate``, the episodes
    that set foot on the bridge (with a calm door, the ones that took the windy way)."""
    goal = np.asarray(episodes.goal)[:, None]
    sq = np.mean((positions - goal) ** 2, axis=-1)  # (N, T+1): mean over x and y
    success = (sq < SUCCESS_THRESHOLD_PX2).any(axis=1)
    wall_x = np.asarray(episodes.layout[:, 0])
    final = positions[:, -1]
    goal_room = np.asarray(episodes.goal[:, 0]) > wall_x
    final_room = final[:, 0] > wall_x
    dist = np.linalg.norm(final - goal[:, 0], axis=-1)
    first = np.where(success, np.argmax(sq < SUCCESS_THRESHOLD_PX2, axis=1), -1)
    out = {
        "success_rate": float(success.mean()),
        "goal_room_rate": float((goal_room == final_room).mean()),
        "mean_final_distance_px": float(dist.mean()),
        "median_final_distance_px": float(np.median(dist)),
        "mean_steps_to_success": float(first[success].mean()) if success.any() else None,
        "num_episodes": int(len(success)),
        "success": success.tolist(),
    }
    if env is not None and envs.is_stochastic(env):  # Windy Two-Rooms: how many fell
        from jepa_jax.envs import windy_rooms

        walls = jnp.asarray(wall_x)[:, None]
        pit = np.asarray(windy_rooms.in_pit(jnp.asarray(positions), walls, env))  # (N, T+1)
        bridge = np.asarray(windy_rooms.in_wind(jnp.asarray(positions), walls, env))
        fell = pit[:, -1]
        entry = np.argmax(pit, axis=1)  # first step in a pit (0 if it never was)
        rows = np.arange(len(fell))
        from_bridge = fell & (entry > 0) & bridge[rows, np.maximum(entry - 1, 0)]
        out["pit_rate"] = float(fell.mean())
        out["pit_from_bridge_rate"] = float(from_bridge.mean())
        out["pit_walked_in_rate"] = float((fell & ~from_bridge).mean())
        out["stalled_rate"] = float((~success & ~fell & (goal_room != final_room)).mean())
        out["bridge_rate"] = float(bridge.any(axis=1).mean())
    return out


def paired_comparison(a, b) -> dict[str, Any]:
    """Two planners' per-episode successes ``a``, ``b`` (N,) on the same episodes and keys:
    the episodes only ``a`` solved, only ``b`` solved, both solved, and the exact two-sided
    sign-test (McNemar) p-value of the split between the first two. Pairing removes the
    episodes' own difficulty from the comparison, which a difference of two success rates
    over 100 episodes (standard error about 7 points) does not."""
    if len(a) != len(b):
        raise ValueError(f"paired_comparison needs the same episodes: {len(a)} != {len(b)}")
    pairs = list(zip(a, b, strict=True))
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"only_first": only_a, "only_second": only_b,
            "both": sum(x and y for x, y in pairs), "sign_test_p": p}



def time_plan_call(planner: Planner, params: Any, env: two_rooms.EnvParams,
                   episodes: Episodes, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per compiled single-problem plan call (compilation excluded), and the
    compiled call's memory footprint as XLA reports it."""
    obs = _render(episodes.start[0], episodes.layout[0], env)
    goal = _render(episodes.goal[0], episodes.layout[0], env)
    state = planner.init_state(action_dim=2)
    key = jax.random.key(0)
    compiled = jax.jit(planner.plan).lower(params, obs, goal, key, state).compile()
    out = compiled(params, obs, goal, key, state)
    jax.block_until_ready(out)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        out = compiled(params, obs, goal, jax.random.key(i + 1), out[1]["state"])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
    result = {"ms_per_plan": 1e3 * float(np.median(times))}
    try:
        mem = compiled.memory_analysis()
        result["plan_temp_bytes"] = int(mem.temp_size_in_bytes)
        result["plan_total_bytes"] = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                         + mem.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - memory analysis is backend-dependent
        pass
    return result


def run_evaluation(episode_fn, params: Any, episodes: Episodes, key: jax.Array,
                   batch_size: int = 100, *, progress: Callable[[int, int, float], None]
                   | None = None, resume: str | Path | None = None,
                   fingerprint: str = "") -> tuple[np.ndarray, np.ndarray, float]:
    """Runs all episodes in jitted, vmapped batches. Returns (positions, plans, seconds).

    Episode ``i`` always gets ``split(key, N)[i]`` whatever ``batch_size``; batching can
    still change an outcome through floating-point rounding, which closed-loop planning
    can amplify (one episode of 100 on Windy Two-Rooms). ``progress(done, N, seconds)`` is
    called after every batch (and once before the first, with the episodes resumed).

    ``resume``: a ``.npz`` path. After every batch the finished episodes are written there
    (atomically), and a later call with the same file, episodes, key, batch size and
    ``fingerprint`` (the caller's description of everything else that decides the outcome:
    model, planner settings) skips them, so a killed evaluation loses at most one batch.
    A file written for anything else is ignored and overwritten. ``seconds`` counts this
    call's batches only."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fn = jax.jit(jax.vmap(episode_fn, in_axes=(None, 0, 0, 0, 0)))
    n = episodes.start.shape[0]
    keys = jax.random.split(key, n)
    stamp = _resume_stamp(episodes, keys, batch_size, fingerprint)
    positions, plans = _load_resume(resume, stamp) if resume is not None else ([], [])
    if positions and progress is not None:  # say where a resumed evaluation starts
        progress(min(len(positions) * batch_size, n), n, 0.0)
    t0 = time.perf_counter()
    for i in range(len(positions) * batch_size, n, batch_size):
        sl = slice(i, i + batch_size)
        pos, pl = fn(params, episodes.start[sl], episodes.goal[sl], episodes.layout[sl],
                     keys[sl])
        positions.append(np.asarray(pos))
        plans.append(np.asarray(pl))
        if resume is not None:
            _save_resume(resume, stamp, positions, plans)
        if progress is not None:
            progress(min(i + batch_size, n), n, time.perf_counter() - t0)
    return np.concatenate(positions), np.concatenate(plans), time.perf_counter() - t0


def print_progress(done: int, total: int, seconds: float) -> None:
    """A ``progress`` callback for ``run_evaluation`` that prints one line per batch."""
    print(f"  episodes {done}/{total} ({seconds:.0f} s)", flush=True)


def newest_mtime(path: str | Path) -> float:
    """When ``path`` (a file, or the newest entry of a directory) was written; 0 if absent.
    Part of a resume fingerprint: a retrained model or critic is another one."""
    path = Path(path)
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.iterdir()), default=0.0)
    return path.stat().st_mtime if path.exists() else 0.0


def _resume_stamp(episodes: Episodes, keys: jax.Array, batch_size: int,
                  fingerprint: str) -> str:
    """A digest of everything ``run_evaluation`` is given that decides its outcome."""
    h = hashlib.sha256()
    for a in (episodes.start, episodes.goal, episodes.layout, jax.random.key_data(keys)):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    h.update(f"{batch_size}|{fingerprint}".encode())
    return h.hexdigest()


def _load_resume(path: str | Path, stamp: str) -> tuple[list, list]:
    """The finished batches stored at ``path`` for ``stamp``; none if absent or stale."""
    path = Path(path)
    if not path.exists():
        return [], []
    try:
        with np.load(path) as f:
            if str(f["stamp"]) != stamp:
                return [], []
            count = int(f["batches"])
            return ([f[f"positions_{b}"] for b in range(count)],
                    [f[f"plans_{b}"] for b in range(count)])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # corrupt: start afresh
        return [], []


def _save_resume(path: str | Path, stamp: str, positions: list, plans: list) -> None:
    path = Path(path)
    arrays = {f"positions_{b}": p for b, p in enumerate(positions)}
    arrays.update({f"plans_{b}": p for b, p in enumerate(plans)})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, stamp=np.asarray(stamp), batches=np.asarray(len(positions)), **arrays)
    os.replace(tmp, path)


__all__ = ["Episodes", "PlannerState", "make_episodes", "make_episode_fn",
           "make_straight_episode_fn", "newest_mtime", "print_progress", "run_evaluation",
           "score", "time_plan_call"]
