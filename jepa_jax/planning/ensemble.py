"""Plan through an ensemble of predictors: a plan must work in every member's future.

Why: a planner optimises against the model, so it finds the places where the model is wrong.
On Two-Rooms a trained predictor lets roughly one push in ten leak through the middle wall
from a contact state; gradient MPC finds such a push, the real agent stays pressed against
the wall, and every later plan from there finds it again (26 of 31 failures of a 68% run
ended so). Predictors trained on the same latents leak in different places: of 7 plans that
crossed the wall in one model, another model agreed on 0 to 5. A plan scored by the sum of
every member's goal cost only looks good when all members agree that it works (the same
reason PETS and MOPO plan through ensembles).

``EnsembleModel`` presents the K predictors of a ``WorldModel`` with ``num_predictors = K``
to the planners as one world model whose latent is the K member latents side by side,
(K * D,): ``encode`` repeats the encoder's latent K times, ``predict`` steps member k on
block k. Planners, costs and the closed loop need no change: a goal cost summed over the
latent sums the members' costs. Parameters are the world model's own params dict::

    model = EnsembleModel(wm)                   # wm.num_predictors = K
    s = model.encode(params, obs)               # (K * D,)
    s_next = model.predict(params, s, a)        # (K * D,)
    blocks = model.members(s)                   # (K, D)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnsembleModel:
    """A ``WorldModelLike`` over every predictor of ``wm`` (see the module docstring)."""

    wm: Any = struct.field(pytree_node=False)

    @property
    def num_members(self) -> int:
        return self.wm.num_predictors

    @property
    def latent_dim(self) -> int:
        return self.num_members * self.wm.latent_dim

    @property
    def action_dim(self) -> int:
        return self.wm.action_dim

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.wm.obs_shape

    def members(self, s: jax.Array) -> jax.Array:
        """(..., K * D) -> (..., K, D)."""
        return s.reshape(*s.shape[:-1], self.num_members, self.wm.latent_dim)

    def encode(self, params: Any, obs: jax.Array) -> jax.Array:
        """(..., *obs_shape) -> (..., K * D): the encoder's latent once per member."""
        s = self.wm.encode(params, obs)
        return jnp.concatenate([s] * self.num_members, -1)

    def predict(self, params: Any, s: jax.Array, a: jax.Array, z: Any = None) -> jax.Array:
        """(..., K * D), (..., A) -> (..., K * D): member k steps block k."""
        if z is not None:
            raise ValueError("an ensemble of predictors takes no latent variable z")
        if s.shape[-1] != self.latent_dim:
            raise ValueError(f"ensemble latent has dimension {s.shape[-1]}, expected "
                             f"{self.num_members} x {self.wm.latent_dim} = {self.latent_dim}")
        blocks = jnp.moveaxis(self.members(s), -2, 0)  # (K, ..., D)
        stacked = self.wm.predictor_members(params)

        def one(p, sk):
            return self.wm.predict({**params, "predictor": p}, sk, a)

        out = jax.vmap(one)(stacked, blocks)  # (K, ..., D)
        return jnp.moveaxis(out, 0, -2).reshape(s.shape)


def planning_model(wm: Any) -> Any:
    """What planners should plan through: ``wm`` itself, or its ``EnsembleModel`` when it
    has several predictors."""
    return EnsembleModel(wm) if getattr(wm, "num_predictors", 1) > 1 else wm


__all__ = ["EnsembleModel", "planning_model"]
