"""Planners over a world model's latent rollouts: gradient MPC, CEM and MPPI.

See ``jepa_jax.planning.base`` for the shared interface (``make_planner``, ``Planner.plan``)
and ``jepa_jax.planning.sharded`` for batches of problems split across devices;
``jepa_jax.planning.ensemble`` plans through every predictor of an ensemble.
"""

from jepa_jax.planning.base import (
    COMMON_DEFAULTS,
    PLANNER_NAMES,
    Planner,
    PlannerState,
    WorldModelLike,
    clip_by_norm,
    default_config,
    make_planner,
    rollout,
    shift_plan,
)
from jepa_jax.planning.ensemble import EnsembleModel, planning_model
from jepa_jax.planning.sharded import make_sharded_plan

__all__ = [
    "COMMON_DEFAULTS",
    "EnsembleModel",
    "PLANNER_NAMES",
    "Planner",
    "PlannerState",
    "WorldModelLike",
    "clip_by_norm",
    "default_config",
    "make_planner",
    "make_sharded_plan",
    "planning_model",
    "rollout",
    "shift_plan",
]
