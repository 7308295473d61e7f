"""Hierarchical planning with the spatial level 2: value iteration sets subgoals, level-1
gradient MPC reaches them.

Every ``plan`` call (receding horizon at both levels):

1. encode the observation and the goal image at level 1 (``s1``, ``g1``) and read the
   abstract state (occupancy and wall map, :mod:`jepa_jax.hierarchy_grid`);
2. **level 2** builds the predictor's transition kernels for its abstract actions
   (``high_directions`` directions at each of ``high_steps`` times the action bound), runs
   value iteration on
   them (the cost-to-go, in abstract steps, from every grid point to the goal), and rolls
   the greedy policy out from the agent's occupancy for ``high_horizon`` abstract steps:
   the predicted occupancies' mean positions are the **subgoals**;
3. **level 1** plans ``horizon`` concrete actions by gradient MPC through the level-1
   predictor, minimising the distance of its rollout's agent keypoint to the first subgoal
   (to the goal itself once the goal is less than ``near_goal`` abstract steps away), plus
   ``goal_weight`` times the level-1 latent distance to the goal;
4. the level-1 plan, shifted, warm-starts the next call.

Why not gradient descent at level 2, as in :mod:`jepa_jax.planning.hierarchical`: a
distance-to-goal cost in a maze has a local minimum in every dead end, and descent
through the predictor follows it into the wall (measured: 6-8% success); value iteration
over the learned kernels is exact search on the level-2 model, and cheap on a small grid.

Same interface as the other planners: ``plan(params, obs, goal_obs, key, state) ->
(actions (H, 2), info)`` with ``params = {"l1": ..., "l2": ...}``; it jits and vmaps.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax.hierarchy_grid import GridLevel2, propagate, value_iteration
from jepa_jax.planning.base import check_float, check_int, merged_config, shift_plan
from jepa_jax.planning.hierarchical import plan_level1, validate_level1

DEFAULTS: dict[str, Any] = {
    "high_directions": 8,  # abstract actions: this many directions ...
    "high_steps": (0.4, 0.2, 0.1),  # ... at each of these fractions of the action bound
    # (mean per level-1 step); short steps let level 2 land in the goal's square
    "vi_sweeps": 60,  # value-iteration sweeps (>= the longest path, in abstract steps)
    "high_horizon": 6,  # subgoals rolled out (the first is level 1's target)
    "near_goal": 1.5,  # below this cost-to-go (abstract steps) level 1 targets the goal
    "horizon": 12,  # level-1 actions per plan
    "num_iters": 20,
    "num_restarts": 8,
    "learning_rate": 0.3,
    "restart_init": "segments",
    "goal_weight": 0.0,  # level-1 latent distance to the goal, added to the subgoal cost
    "low_discount": 0.9,
    "action_bound": 1.2,
    "shift": 4,  # = replan_every
}


@struct.dataclass
class GridPlannerState:
    """Warm start carried between calls: level-1 actions (H, A)."""

    actions: jax.Array


def abstract_actions(directions: int, steps) -> jax.Array:
    """(len(steps) * directions, 2) abstract actions (fractions of the action bound):
    ``directions`` evenly spread over the circle at each length in ``steps``."""
    ang = 2 * math.pi * jnp.arange(directions) / directions
    unit = jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    return jnp.concatenate([step * unit for step in steps], 0)


@struct.dataclass
class GridHierarchicalPlanner:
    """Built by :func:`make_grid_hierarchical_planner`; see the module docstring."""

    world_model: Any = struct.field(pytree_node=False)
    level2: GridLevel2 = struct.field(pytree_node=False)
    config: ml_collections.FrozenConfigDict = struct.field(pytree_node=False)
    name: str = struct.field(pytree_node=False, default="hierarchical")
    low_weights: Any = None  # (D1,) weights of the level-1 goal term, or None (all 1)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def init_state(self, action_dim: int, batch_shape: tuple[int, ...] = ()
                   ) -> GridPlannerState:
        return GridPlannerState(actions=jnp.zeros((*batch_shape, self.config.horizon,
                                                   action_dim), jnp.float32))

    def value(self, params2: Any, walls: jax.Array, goal_pos: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
        """Cost-to-go (G, G) to ``goal_pos`` (2,) px on the wall map (G+1, G+1), and the
        candidate actions' kernels (A, G, G, K)."""
        c, l2 = self.config, self.level2
        us = abstract_actions(c.high_directions, c.high_steps)
        kernels = l2.kernels(params2, walls, us)
        goal = l2.occupancy(goal_pos)
        goal = goal / jnp.max(goal)
        return value_iteration(kernels, goal, l2.radius, c.vi_sweeps), kernels

    def plan(self, params: Any, obs: jax.Array, goal_obs: jax.Array, key: jax.Array,
             state: GridPlannerState) -> tuple[jax.Array, dict[str, Any]]:
        c, wm, l2 = self.config, self.world_model, self.level2
        p1, p2 = params["l1"], params["l2"]
        s1, g1 = wm.encode(p1, obs), wm.encode(p1, goal_obs)
        pos, goal_pos = l2.positions(s1), l2.positions(g1)
        v, kernels = self.value(p2, l2.wall_map(s1), goal_pos)

        def greedy(occ, _):
            nxt = propagate(occ[None], kernels, l2.radius)  # (A, G, G)
            lost = 1.0 - jnp.sum(nxt, (-1, -2))  # mass the kernels moved off the grid
            q = jnp.sum(nxt * (1.0 + v), (-1, -2)) + lost * c.vi_sweeps
            best = jnp.argmin(q)
            return nxt[best], (l2.to_pixels(nxt[best]), q[best])

        occ = l2.occupancy(pos)
        _, (subgoals, qs) = jax.lax.scan(greedy, occ, None, length=c.high_horizon)
        to_go = jnp.sum(occ * v)
        target = jnp.where(to_go < c.near_goal, goal_pos, subgoals[0])
        target_kp = target / l2.keypoint_scale

        def subgoal_cost(traj):  # the rollout's agent keypoint against the target
            return jnp.sum(jnp.square(traj[:, :2] - target_kp), -1)

        actions, low_costs, low_objective = plan_level1(
            c, wm, p1, s1, g1, subgoal_cost, state.actions, key, self.low_weights)
        info = {
            "subgoals": subgoals,  # (M, 2) pixels
            "target": target,
            "cost_to_go": to_go,
            "high_costs": qs,
            "states": wm.rollout(p1, s1, actions),
            "final_cost": low_objective(actions),
            "cost_per_iter": low_costs,
            "state": GridPlannerState(actions=shift_plan(actions, c.shift)),
        }
        return actions, info


def validate(cfg: dict[str, Any]) -> None:
    """One-line ValueError on a bad grid hierarchical-planner config."""
    for key in ("high_directions", "vi_sweeps", "high_horizon"):
        check_int(cfg, key, 1)
    check_float(cfg, "near_goal")
    steps = cfg["high_steps"]
    if (isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or not steps
            or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in steps)):
        raise ValueError(f"high_steps must be a non-empty list of fractions of the action "
                         f"bound in (0, 1], got {steps!r}")
    validate_level1(cfg)


def make_grid_hierarchical_planner(world_model: Any, level2: GridLevel2, config: Any = None,
                                   low_weights: jax.Array | None = None
                                   ) -> GridHierarchicalPlanner:
    """Validates ``config`` (a mapping over ``DEFAULTS``) and builds the planner."""
    cfg = merged_config(config, DEFAULTS, "grid hierarchical planner")
    validate(cfg)
    return GridHierarchicalPlanner(world_model=world_model, level2=level2,
                                   config=ml_collections.FrozenConfigDict(cfg),
                                   low_weights=low_weights)
