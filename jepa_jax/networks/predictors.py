"""Action-conditioned latent predictor ``s' = Pred(s, a, z)``, the amortised posterior
``q(z | s, a, s')`` of its latent variable, and small auxiliary heads.

``dtype`` is the compute dtype of the predictor and inverse-dynamics dense layers (e.g.
bfloat16); parameters, the residual state and the outputs stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jepa_jax.networks.activations import gelu


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
            h = gelu(nn.Dense(width, dtype=self.dtype)(h))
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
            h = gelu(nn.Dense(width, dtype=self.dtype)(h))
        return nn.Dense(self.action_dim, dtype=self.dtype)(h).astype(jnp.float32)


class ZPosterior(nn.Module):
    """Amortised inference of the latent variable: ``q(z | s, a, s') = N(mean, diag(var))``.

    Sees the transition ``(s, a, s' - s)``; with a KL penalty towards the prior N(0, I) it
    is pushed to encode only what ``s`` and ``a`` do not already determine about ``s'``.
    The last layer starts at zero, so that q starts as the prior.

    Shapes: s (..., D), a (..., A), s_next (..., D) -> mean (..., z_dim), log_var (..., z_dim).
    """

    z_dim: int
    hidden: Sequence[int] = (128, 128)
    action_scale: float = 1.0

    @nn.compact
    def __call__(self, s: jax.Array, a: jax.Array,
                 s_next: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.concatenate([s, a * self.action_scale, s_next - s], -1)
        for width in self.hidden:
            h = gelu(nn.Dense(width)(h))
        out = nn.Dense(2 * self.z_dim, kernel_init=nn.initializers.zeros)(h)
        mean, log_var = jnp.split(out, 2, axis=-1)
        return mean, log_var


class ZPrior(nn.Module):
    """Learned prior of the latent variable: ``p(z | s)``, a mixture of ``num_components``
    diagonal Gaussians (a mixture density network).

    Fitted to samples of the posterior ``q(z | s, a, s')`` so that planning draws z with
    the frequencies the world showed in each state (e.g. a gust on a windy bridge, and
    nothing elsewhere), modes included, which a single Gaussian cannot represent.

    Shapes: s (..., D) -> logits (..., M), means (..., M, z_dim), log_stds (..., M, z_dim).
    """

    z_dim: int
    num_components: int = 4
    hidden: Sequence[int] = (128, 128)
    min_log_std: float = -5.0
    max_log_std: float = 2.0

    @nn.compact
    def __call__(self, s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        m, z = self.num_components, self.z_dim
        h = s
        for width in self.hidden:
            h = gelu(nn.Dense(width)(h))
        out = nn.Dense(m + 2 * m * z)(h)
        logits = out[..., :m]
        means = out[..., m:m + m * z].reshape(*s.shape[:-1], m, z)
        log_stds = jnp.clip(out[..., m + m * z:].reshape(*s.shape[:-1], m, z),
                            self.min_log_std, self.max_log_std)
        return logits, means, log_stds
