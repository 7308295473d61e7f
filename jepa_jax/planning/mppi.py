"""MPPI: move the mean to the softmax(-cost / temperature)-weighted average of noisy samples.

Each of ``num_iters`` iterations (a ``lax.scan``) draws ``num_samples`` sequences
``clip(mean + sigma_i * eps)`` (sample 0 is the mean itself) with
``sigma_i = noise_std * noise_decay**i``, and sets the mean to their weighted average with
weights ``softmax(-cost / temperature)``. The average of points in the norm ball stays in it.
The temperature is in cost units: small values approach picking the best sample. The mean
starts at the warm start; the returned plan is the lowest-cost mean seen, including the final
one. PLDM's Two-Rooms setting is one iteration of 2000 samples, sigma 12, temperature 0.005.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jepa_jax.planning.base import Objective, check_float, check_int, clip_by_norm

DEFAULTS: dict[str, Any] = {
    "num_iters": 5,
    "num_samples": 256,
    "temperature": 0.01,  # lambda, in cost units
    "noise_std": 1.0,  # sigma of the sampling noise, in action units
    "noise_decay": 1.0,  # sigma multiplier per iteration, in (0, 1]
}


def validate(cfg: dict[str, Any]) -> None:
    """Raises a one-line ValueError on a bad MPPI config."""
    check_int(cfg, "num_iters", 1)
    check_int(cfg, "num_samples", 1)
    check_float(cfg, "temperature", strict=True)
    check_float(cfg, "noise_std")
    check_float(cfg, "noise_decay", strict=True)
    if cfg["noise_decay"] > 1:
        raise ValueError(f"noise_decay must be in (0, 1], got {cfg['noise_decay']!r}")


def optimize(
    cfg: Any, objective: Objective, init_actions: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """MPPI over action sequences.

    Args:
      cfg: validated config (see ``DEFAULTS`` and ``base.COMMON_DEFAULTS``).
      objective: ``(actions (H, A)) -> scalar``.
      init_actions: (H, A) warm start (initial mean).
      key: PRNG key.

    Returns:
      ``(actions (H, A), cost_per_iter (num_iters,), {})``; ``cost_per_iter[i]`` is the cost of
      the mean at the start of iteration i.
    """
    bound = cfg.action_bound
    mean0 = clip_by_norm(init_actions, bound)
    cost_dtype = jax.eval_shape(objective, mean0).dtype
    sigmas = cfg.noise_std * cfg.noise_decay ** jnp.arange(cfg.num_iters, dtype=mean0.dtype)

    def step(carry, xs):
        mean, best_a, best_c = carry
        step_key, sigma = xs
        eps = jax.random.normal(step_key, (cfg.num_samples, *mean.shape), mean.dtype)
        samples = clip_by_norm(mean + sigma * eps, bound).at[0].set(mean)
        costs = jax.vmap(objective)(samples)
        costs = jnp.where(jnp.isnan(costs), jnp.inf, costs)  # zero weight for NaN samples
        better = costs[0] < best_c
        best_a = jnp.where(better, mean, best_a)
        best_c = jnp.where(better, costs[0], best_c)
        # Shift by the min so the exponent is <= 0: no overflow at small temperatures.
        w = jax.nn.softmax(-(costs - jnp.min(costs)) / cfg.temperature)
        mean = jnp.tensordot(w.astype(mean.dtype), samples, axes=1)
        return (mean, best_a, best_c), costs[0]

    carry = (mean0, mean0, jnp.asarray(jnp.inf, cost_dtype))
    (mean, best_a, best_c), cost_per_iter = jax.lax.scan(
        step, carry, (jax.random.split(key, cfg.num_iters), sigmas)
    )
    better = objective(mean) < best_c  # the last update has not been scored yet
    return jnp.where(better, mean, best_a), cost_per_iter, {}
