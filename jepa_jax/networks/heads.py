"""Goal-conditioned heads on latents: the critic ``V(s, g)`` and the Mode-1 policy ``pi(s, g)``.

Both read ``[s, g, s - g]`` (the goal latent and the offset to it), so they are the same
function of a state and goal wherever the pair sits in latent space. Shapes: s (..., D),
g (..., D).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jepa_jax.networks.activations import gelu


def _features(s: jax.Array, g: jax.Array) -> jax.Array:
    if s.shape[-1] != g.shape[-1]:
        raise ValueError(f"state has dimension {s.shape[-1]}, goal has {g.shape[-1]}")
    return jnp.concatenate([s, g, s - g], -1)


class CriticNet(nn.Module):
    """``V(s, g) = v_max * sigmoid(MLP([s, g, s - g]))``: a bounded cost-to-go.

    With per-step costs in [0, 1] and discount gamma, the discounted cost-to-go lies in
    ``[0, 1 / (1 - gamma)]``; ``v_max`` is that bound, so the output never leaves the range
    its targets live in. Returns (...,).
    """

    hidden: Sequence[int] = (256, 256)
    v_max: float = 1.0

    @nn.compact
    def __call__(self, s: jax.Array, g: jax.Array) -> jax.Array:
        h = _features(s, g)
        for width in self.hidden:
            h = gelu(nn.Dense(width)(h))
        logit = nn.Dense(1)(h)[..., 0]
        return self.v_max * jax.nn.sigmoid(logit)


class PolicyNet(nn.Module):
    """``pi(s, g) -> a``, an action inside the norm ball of radius ``action_bound``.

    The MLP's output ``u`` is mapped radially, ``a = b tanh(|u| / b) u / |u|`` (the
    gradient planner's ``squash``), so every action is feasible and the map is smooth.
    Returns (..., action_dim).
    """

    action_dim: int = 2
    hidden: Sequence[int] = (256, 256)
    action_bound: float = 2.45

    @nn.compact
    def __call__(self, s: jax.Array, g: jax.Array) -> jax.Array:
        h = _features(s, g)
        for width in self.hidden:
            h = gelu(nn.Dense(width)(h))
        u = nn.Dense(self.action_dim)(h)
        r2 = jnp.sum(jnp.square(u), -1, keepdims=True)
        r = jnp.sqrt(jnp.where(r2 > 0, r2, 1.0))
        b = self.action_bound
        return u * jnp.where(r2 > 0, b * jnp.tanh(r / b) / r, 1.0)
