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


def make_collector(planner: Planner, env: two_rooms.EnvParams, length: int,
                   margin: float = 2.6) -> Callable[[Any, jax.Array, int],
                                                    offline.Trajectories]:
    """Returns ``collect(params, key, num) -> Trajectories`` (num, length, ...).

    Each trajectory: a start and a goal in opposite rooms (the evaluation's distribution),
    one plan from the start's observation, its first ``length - 1`` actions executed open
    loop in the world. ``num`` is static (one compile per value).
    """
    if length - 1 > planner.horizon:
        raise ValueError(f"online trajectories of {length} frames need a planner horizon of "
                         f"at least {length - 1}, got {planner.horizon}")

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
        pos, actions = batched(params, eps.start, eps.goal, eps.layout,
                               jax.random.split(k_plan, num))
        return offline.Trajectories(pos=pos, layout=eps.layout, actions=actions)

    return collect
