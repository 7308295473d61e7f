"""Online data for the predictor: plan with the model, execute the plan in the world, and
train on what really happened.

A planner optimises against the model, so it finds exactly the action sequences where the
model is wrong: measured on the default model, its plans walked through the middle wall
far from the door although the wall-push diagnostic (random pushes) saw only 11% of
violations. Executing those plans in the pure-JAX world gives the true outcome (the agent
stopped at the wall); training the predictor on it removes the exploit the planner found.
This is the "online training" of arXiv 2512.09929, here in a few seconds per round because
the world, the planner and the encoder all run under one ``jit``.

The collected data is an ``offline.Trajectories`` like the offline data set (true positions,
layouts and actions; images are rendered from them), so it is small enough to live in the
checkpointed train state, which keeps resuming exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jepa_jax import evaluation
from jepa_jax.data import offline
from jepa_jax.envs import two_rooms
from jepa_jax.planning.base import Planner


def round_steps(predictor_steps: int, rounds: int) -> list[int]:
    """Predictor-phase steps (0-based) at which each collection round runs: evenly spread,
    the first after the predictor has had 1/(rounds+1) of its training."""
    return [(r + 1) * predictor_steps // (rounds + 1) for r in range(rounds)]


def empty(capacity: int, length: int) -> offline.Trajectories:
    """A zero-filled buffer for ``capacity`` trajectories of ``length`` frames."""
    return offline.Trajectories(pos=jnp.zeros((capacity, length, 2), jnp.float32),
                                layout=jnp.zeros((capacity, 2), jnp.float32),
                                actions=jnp.zeros((capacity, length - 1, 2), jnp.float32))


def write(buffer: offline.Trajectories, trajs: offline.Trajectories,
          start: int) -> offline.Trajectories:
    """``buffer`` with rows ``[start, start + len(trajs))`` replaced by ``trajs``."""
    return jax.tree.map(lambda b, t: jax.lax.dynamic_update_slice_in_dim(b, t, start, 0),
                        buffer, trajs)


def near_wall_starts(key: jax.Array, starts: jax.Array, layouts: jax.Array,
                     env: two_rooms.EnvParams, fraction: float,
                     band: tuple[float, float]) -> jax.Array:
    """``starts`` (N, 2) with a ``fraction`` of them moved next to the middle wall, on their
    own side, at a distance from its face uniform in ``band`` = (lo, hi) px (y kept).

    Closed-loop planning spends its failures pressed against the wall away from the door,
    replanning from there; starting collection plans from such states puts the model's
    errors about them in front of the training data.
    """
    k_pick, k_dist = jax.random.split(key)
    n = starts.shape[0]
    pick = jax.random.uniform(k_pick, (n,)) < fraction
    lo, hi = band
    dist = env.wall_half_width + jax.random.uniform(k_dist, (n,), minval=lo, maxval=hi)
    wall_x = layouts[:, 0]
    x = jnp.where(starts[:, 0] < wall_x, wall_x - dist, wall_x + dist)
    return jnp.where(pick[:, None], jnp.stack([x, starts[:, 1]], -1), starts)


def make_collector(planner: Planner, env: two_rooms.EnvParams, length: int,
                   margin: float = 2.6, near_wall_fraction: float = 0.0,
                   near_wall_band: tuple[float, float] = (0.5, 6.0),
                   ) -> Callable[[Any, jax.Array, int], offline.Trajectories]:
    """Returns ``collect(params, key, num) -> Trajectories`` (num, length, ...).

    Each trajectory: a start and a goal in opposite rooms (the evaluation's distribution;
    a ``near_wall_fraction`` of the starts moved next to the wall, see
    :func:`near_wall_starts`), one plan from the start's observation, its first
    ``length - 1`` actions executed open loop in the world. ``num`` is static (one compile
    per value).
    """
    if length - 1 > planner.horizon:
        raise ValueError(f"online trajectories of {length} frames need a planner horizon of "
                         f"at least {length - 1}, got {planner.horizon}")
    if not 0.0 <= near_wall_fraction <= 1.0:
        raise ValueError(f"near_wall_fraction must be in [0, 1], got {near_wall_fraction}")
    if not 0.0 <= near_wall_band[0] <= near_wall_band[1]:
        raise ValueError(f"near_wall_band must be (lo, hi) with 0 <= lo <= hi, got "
                         f"{tuple(near_wall_band)}")

    def one(params, start, goal, layout, key):
        render = lambda p: two_rooms.render(two_rooms.make_state(p, layout[0], layout[1]), env)  # noqa: E731
        actions, _ = planner.plan(params, render(start), render(goal), key,
                                  planner.init_state(action_dim=2))
        actions = actions[:length - 1]

        def step(p, a):
            p = two_rooms.transition(p, a, layout[0], layout[1], env)
            return p, p

        _, traj = jax.lax.scan(step, start, actions)
        return jnp.concatenate([start[None], traj], 0), actions

    batched = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))

    def collect(params, key, num):
        k_ep, k_plan = jax.random.split(key)
        eps = evaluation.make_episodes(k_ep, num, env, margin=margin)
        start = eps.start
        if near_wall_fraction > 0:  # else the draws are exactly those of earlier versions
            start = near_wall_starts(jax.random.fold_in(k_ep, 1), start, eps.layout, env,
                                     near_wall_fraction, tuple(near_wall_band))
        pos, actions = batched(params, start, eps.goal, eps.layout,
                               jax.random.split(k_plan, num))
        return offline.Trajectories(pos=pos, layout=eps.layout, actions=actions)

    return collect
