"""A batch of planning problems split across devices: the same ``Planner.plan``, vmapped.

    mesh = parallel.make_mesh(parallel.parallel_config(config))
    plan = make_sharded_plan(planner, mesh)
    state = planner.init_state(action_dim=2, batch_shape=(B,))
    actions, info = plan(params, obs, goal_obs, keys, state)    # actions (B, H, A)

Each device plans ``B / n`` problems; parameters are replicated. Problems are independent
(no statistic spans the batch), so the results equal those of the unsharded
``jax.vmap(planner.plan)`` up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jepa_jax import parallel
from jepa_jax.planning.base import Planner, PlannerState

PlanFn = Callable[..., tuple[jax.Array, dict[str, Any]]]


def make_sharded_plan(planner: Planner, mesh: Mesh, axis: str = "data") -> PlanFn:
    """``plan(params, obs, goal_obs, keys, state)`` over B problems split over ``axis``.

    Args:
      planner: from ``make_planner``.
      mesh: device mesh holding ``axis``.
      axis: mesh axis the problems are split over.

    Returns:
      A function of ``params`` (world-model parameters, replicated), ``obs`` and
      ``goal_obs`` (B, *obs_shape), ``keys`` (B,) PRNG keys and ``state`` (a
      ``PlannerState`` with actions (B, H, A)), returning ``(actions (B, H, A), info)``
      whose entries all lead with B, sharded over ``axis``. It raises a one-line
      ValueError, before tracing, when B is not a multiple of the axis size or the batch
      sizes disagree.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r} (axes: {mesh.axis_names})")
    rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh, axis)
    batched = jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0))
    jitted = jax.jit(batched, in_shardings=(rep, split, split, split, split),
                     out_shardings=split)

    def plan(params: Any, obs: jax.Array, goal_obs: jax.Array, keys: jax.Array,
             state: PlannerState) -> tuple[jax.Array, dict[str, Any]]:
        sizes = {"obs": obs.shape[0], "goal_obs": goal_obs.shape[0], "keys": keys.shape[0],
                 "state.actions": state.actions.shape[0]}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"planning batch sizes disagree: {sizes}")
        parallel.check_divisible(obs.shape[0], mesh, axis, "the number of planning problems")
        # Inputs may live on one device (e.g. restored parameters): lay them out first.
        args = jax.device_put((params, obs, goal_obs, keys, state), (rep, split, split, split,
                                                                     split))
        return jitted(*args)

    return plan
