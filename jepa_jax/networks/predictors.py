"""Action-conditioned latent predictor ``s' = Pred(s, a, z)`` and small auxiliary heads.

``dtype`` is the compute dtype of the dense layers (e.g. bfloat16); parameters, the
residual state and the outputs stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLPPredictor(nn.Module):
    """Residual MLP predictor: ``s' = s + MLP([s, a * action_scale, z])``.

    ``z`` is the latent variable for what the observation cannot tell about the future; with
    ``z_dim == 0`` (the default) the predictor is deterministic and ``z`` must be None or empty.

    ``input_gain`` multiplies ``s`` on its way into the MLP (not the residual path). Why: a
    rule such as "the wall stops the agent unless it is within the door" is a step in the
    latent coordinates a fraction of a unit wide; Adam moves each weight by about the
    learning rate per step, so weights large enough for that step take thousands of steps
    at gain 1, and proportionally fewer at a larger gain.

    Shapes: s (..., D), a (..., A), z (..., z_dim) -> (..., D).
    """

    hidden: Sequence[int] = (256, 256, 256)
    action_scale: float = 1.0
    z_dim: int = 0
    dtype: Any = jnp.float32
    input_gain: float = 1.0

    @nn.compact
    def __call__(self, s: jax.Array, a: jax.Array, z: jax.Array | None = None) -> jax.Array:
        parts = [s * self.input_gain, a * self.action_scale]
        if self.z_dim:
            if z is None:
                raise ValueError(f"predictor has z_dim={self.z_dim} but z is None")
            if z.shape[-1] != self.z_dim:
                raise ValueError(f"z has last dimension {z.shape[-1]}, predictor expects "
                                 f"{self.z_dim}")
            parts.append(z)
        elif z is not None and z.shape[-1] != 0:
            raise ValueError(f"predictor has z_dim=0 but got z of shape {z.shape}")
        h = jnp.concatenate(parts, -1)
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width, dtype=self.dtype)(h))
        delta = nn.Dense(s.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
        # The residual sum in s's dtype: many bfloat16 steps would round the state away.
        return s + delta.astype(s.dtype)


class InverseDynamics(nn.Module):
    """Predicts the action from two consecutive latents: (..., D), (..., D) -> (..., A)."""

    action_dim: int = 2
    hidden: Sequence[int] = (128,)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, s: jax.Array, s_next: jax.Array) -> jax.Array:
        h = jnp.concatenate([s, s_next], -1)
        for width in self.hidden:
            h = nn.gelu(nn.Dense(width, dtype=self.dtype)(h))
        return nn.Dense(self.action_dim, dtype=self.dtype)(h).astype(jnp.float32)
