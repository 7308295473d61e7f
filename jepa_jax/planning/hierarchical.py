"""Hierarchical planning with H-JEPA: level 2 sets subgoals, level 1 reaches them.

Every ``plan`` call (receding horizon at both levels):

1. encode the observation and the goal image at level 1 (``s1``, ``g1``) and level 2
   (``s2``, ``g2``);
2. **level 2** plans ``high_horizon`` abstract actions ``u_1..u_M`` by gradient descent
   through its predictor (``jepa_jax.planning.gradient.optimize``: parallel restarts, Adam,
   projection onto ``|u| <= high_action_bound``), minimising the discounted distance of the
   abstract rollout to ``g2``; the first predicted abstract state is the **subgoal** (an
   embedding, k level-1 steps ahead);
3. **level 1** plans ``horizon`` concrete actions by gradient MPC through the level-1
   predictor, minimising the distance of the level-2 encoding of its rollout to the subgoal
   (the higher level's output is the lower level's cost target), plus ``goal_weight``
   times the level-1 distance to the goal itself;
4. both plans, shifted, warm-start the next call.

Same interface as the flat planners: ``plan(params, obs, goal_obs, key, state) ->
(actions (H, 2), info)`` with ``params = {"l1": level-1 params, "l2": level-2 params}``; it
jits and vmaps, and its carried state has a fixed shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax import cost as cost_lib
from jepa_jax.hierarchy import Level2Model
from jepa_jax.planning import gradient
from jepa_jax.planning.base import (
    COMMON_DEFAULTS,
    check_float,
    check_int,
    clip_by_norm,
    merged_config,
    shift_plan,
)

DEFAULTS: dict[str, Any] = {
    "high_horizon": 6,  # M abstract steps (k level-1 steps each)
    "high_iters": 30,
    "high_restarts": 16,
    "high_learning_rate": 0.3,
    "high_action_bound": 3.0,  # norm bound of an abstract action (its prior is N(0, I))
    "high_discount": 0.7,  # dense level-2 goal cost weights (jepa_jax.cost.horizon_weights)
    "horizon": 12,  # level-1 actions per plan
    "num_iters": 20,
    "num_restarts": 8,
    "learning_rate": 0.3,
    "restart_init": "segments",
    "goal_weight": 0.2,  # level-1 distance to the goal itself, added to the subgoal cost
    "low_discount": 0.9,
    "action_bound": 1.2,
    "shift": 4,  # = replan_every
    "cost_raw_pixels": True,  # False: raw pixel dims (Level2Model.cost_mask) not compared
}


@struct.dataclass
class HierarchicalState:
    """Warm starts carried between calls: level-1 actions (H, A), abstract actions (M, U)."""

    actions: jax.Array
    abstract: jax.Array


def _gradient_cfg(**values) -> ml_collections.FrozenConfigDict:
    cfg = {**COMMON_DEFAULTS, **gradient.DEFAULTS, **values}
    gradient.validate(cfg)
    return ml_collections.FrozenConfigDict(cfg)


def plan_level1(c: Any, wm: Any, p1: Any, s1: jax.Array, g1: jax.Array,
                subgoal_cost: Any, init_actions: jax.Array, key: jax.Array,
                low_weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array, Any]:
    """Level 1's gradient MPC towards level 2's target, shared by the hierarchical planners.

    Minimises ``sum_t w_t (subgoal_cost(traj)_t + goal_weight * |traj_t - g1|^2)`` over
    ``c.horizon`` actions (``w_t`` discounted by ``c.low_discount``, the goal term's dims
    weighted by ``low_weights``), with ``c.num_restarts`` x ``c.num_iters`` Adam steps.

    Args:
      c: the planner config (level-1 keys of ``DEFAULTS``).
      subgoal_cost: ``(traj (H, D1)) -> (H,)`` distance of the rollout to the target.
      init_actions: (H, A) warm start.

    Returns:
      ``(actions (H, A) within the bound, cost_per_iter, objective)``.
    """
    low_w = cost_lib.horizon_weights(c.horizon, c.low_discount)
    w1 = low_weights if low_weights is not None else 1.0

    def objective(actions):
        traj = wm.rollout(p1, s1, actions)  # (H, D1)
        goal = jnp.sum(w1 * jnp.square(traj - g1), -1)
        return jnp.sum(low_w * (subgoal_cost(traj) + c.goal_weight * goal))

    low_cfg = _gradient_cfg(
        horizon=c.horizon, action_bound=c.action_bound, num_iters=c.num_iters,
        num_restarts=c.num_restarts, learning_rate=c.learning_rate,
        restart_init=c.restart_init)
    actions, costs, _ = gradient.optimize(low_cfg, objective, init_actions, key)
    return clip_by_norm(actions, c.action_bound), costs, objective


def validate_level1(cfg: dict[str, Any]) -> None:
    """One-line ValueError on a bad level-1 key of a hierarchical planner's config."""
    for key in ("horizon", "num_iters", "num_restarts"):
        check_int(cfg, key, 1)
    check_int(cfg, "shift", 0)
    for key in ("learning_rate", "action_bound"):
        check_float(cfg, key, strict=True)
    for key in ("low_discount", "goal_weight"):
        check_float(cfg, key)
    if cfg["restart_init"] not in gradient.RESTART_INITS:
        raise ValueError(f"unknown restart_init {cfg['restart_init']!r}; valid values: "
                         f"{', '.join(gradient.RESTART_INITS)}")
    if cfg["shift"] > cfg["horizon"]:
        raise ValueError(f"shift ({cfg['shift']}) exceeds the level-1 horizon "
                         f"({cfg['horizon']})")


@struct.dataclass
class HierarchicalPlanner:
    """Built by :func:`make_hierarchical_planner`; see the module docstring."""

    world_model: Any = struct.field(pytree_node=False)
    level2: Level2Model = struct.field(pytree_node=False)
    config: ml_collections.FrozenConfigDict = struct.field(pytree_node=False)
    name: str = struct.field(pytree_node=False, default="hierarchical")
    low_weights: Any = None  # (D1,) weights of the level-1 goal term, or None (all 1)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def init_state(self, action_dim: int, batch_shape: tuple[int, ...] = ()
                   ) -> HierarchicalState:
        c = self.config
        return HierarchicalState(
            actions=jnp.zeros((*batch_shape, c.horizon, action_dim), jnp.float32),
            abstract=jnp.zeros((*batch_shape, c.high_horizon, self.level2.action_dim),
                               jnp.float32))

    def plan(self, params: Any, obs: jax.Array, goal_obs: jax.Array, key: jax.Array,
             state: HierarchicalState) -> tuple[jax.Array, dict[str, Any]]:
        c, wm, l2 = self.config, self.world_model, self.level2
        p1, p2 = params["l1"], params["l2"]
        s1, g1 = wm.encode(p1, obs), wm.encode(p1, goal_obs)
        s2, g2 = l2.encode(p2, s1), l2.encode(p2, g1)
        k_high, k_low = jax.random.split(key)

        high_w = cost_lib.horizon_weights(c.high_horizon, c.high_discount)
        w2 = 1.0 if c.cost_raw_pixels else l2.cost_weights()

        def high_objective(us):
            traj = l2.rollout(p2, s2, us)
            return jnp.sum(high_w * jnp.sum(w2 * jnp.square(traj - g2), -1))

        high_cfg = _gradient_cfg(
            horizon=c.high_horizon, action_bound=c.high_action_bound, num_iters=c.high_iters,
            num_restarts=c.high_restarts, learning_rate=c.high_learning_rate,
            restart_init="offset", restart_std=1.0)
        us, high_costs, _ = gradient.optimize(high_cfg, high_objective, state.abstract, k_high)
        us = clip_by_norm(us, c.high_action_bound)
        subgoals = l2.rollout(p2, s2, us)  # (M, D2)
        subgoal = subgoals[0]

        def subgoal_cost(traj):
            return jnp.sum(w2 * jnp.square(l2.encode(p2, traj) - subgoal), -1)

        actions, low_costs, low_objective = plan_level1(
            c, wm, p1, s1, g1, subgoal_cost, state.actions, k_low, self.low_weights)
        info = {
            "subgoals": subgoals,
            "states": wm.rollout(p1, s1, actions),
            "final_cost": low_objective(actions),
            "high_cost_per_iter": high_costs,
            "cost_per_iter": low_costs,
            "state": HierarchicalState(actions=shift_plan(actions, c.shift),
                                       abstract=shift_plan(us, 1) if c.shift >= l2.span
                                       else us),
        }
        return actions, info


def validate(cfg: dict[str, Any], span: int) -> None:
    """One-line ValueError on a bad hierarchical-planner config."""
    for key in ("high_horizon", "high_iters", "high_restarts"):
        check_int(cfg, key, 1)
    for key in ("high_learning_rate", "high_action_bound"):
        check_float(cfg, key, strict=True)
    check_float(cfg, "high_discount")
    validate_level1(cfg)
    del span


def make_hierarchical_planner(world_model: Any, level2: Level2Model, config: Any = None,
                              low_weights: jax.Array | None = None) -> HierarchicalPlanner:
    """Validates ``config`` (a mapping over ``DEFAULTS``) and builds the planner;
    ``low_weights`` (D1,) weights the level-1 goal term's dims (None: all 1)."""
    cfg = merged_config(config, DEFAULTS, "hierarchical planner")
    validate(cfg, level2.span)
    return HierarchicalPlanner(world_model=world_model, level2=level2,
                               config=ml_collections.FrozenConfigDict(cfg),
                               low_weights=low_weights)
