"""Cross-entropy method: refit a diagonal Gaussian over action sequences to the elite samples.

Each of ``num_iters`` iterations (a ``lax.scan``) draws ``num_samples`` sequences
``clip(mean + std * eps)`` (sample 0 is the mean itself, so the iterate is scored for free),
keeps the ``num_elites`` cheapest and moves mean and std toward their mean and std:
``x <- momentum * x + (1 - momentum) * x_elite`` (momentum 0: plain refit), with
``std >= min_std``. The mean starts at the warm start; the std restarts at ``init_std`` on every
call (a shifted, collapsed std would stop exploration in receding-horizon control). The
returned plan is the lowest-cost mean seen, including the final one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jepa_jax.planning.base import Objective, check_float, check_int, clip_by_norm

DEFAULTS: dict[str, Any] = {
    "num_iters": 10,
    "num_samples": 256,
    "num_elites": 32,
    "init_std": 1.0,  # initial per-coordinate std, in action units
    "min_std": 0.0,  # floor on the std
    "momentum": 0.0,  # smoothing of mean/std updates, in [0, 1)
}


def validate(cfg: dict[str, Any]) -> None:
    """Raises a one-line ValueError on a bad CEM config."""
    check_int(cfg, "num_iters", 1)
    check_int(cfg, "num_samples", 1)
    check_int(cfg, "num_elites", 1)
    if cfg["num_elites"] > cfg["num_samples"]:
        raise ValueError(
            f"num_elites ({cfg['num_elites']}) must be <= num_samples ({cfg['num_samples']})"
        )
    check_float(cfg, "init_std")
    check_float(cfg, "min_std")
    check_float(cfg, "momentum")
    if cfg["momentum"] >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {cfg['momentum']!r}")


def optimize(
    cfg: Any, objective: Objective, init_actions: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """CEM over action sequences.

    Args:
      cfg: validated config (see ``DEFAULTS`` and ``base.COMMON_DEFAULTS``).
      objective: ``(actions (H, A)) -> scalar``.
      init_actions: (H, A) warm start (initial mean).
      key: PRNG key.

    Returns:
      ``(actions (H, A), cost_per_iter (num_iters,), {"std": (H, A) final std})``;
      ``cost_per_iter[i]`` is the cost of the mean at the start of iteration i.
    """
    bound = cfg.action_bound
    m = cfg.momentum
    mean0 = clip_by_norm(init_actions, bound)
    std0 = jnp.full_like(mean0, cfg.init_std)
    cost_dtype = jax.eval_shape(objective, mean0).dtype

    def step(carry, step_key):
        mean, std, best_a, best_c = carry
        eps = jax.random.normal(step_key, (cfg.num_samples, *mean.shape), mean.dtype)
        samples = clip_by_norm(mean + std * eps, bound).at[0].set(mean)
        costs = jax.vmap(objective)(samples)
        costs = jnp.where(jnp.isnan(costs), jnp.inf, costs)  # a NaN is never an elite
        better = costs[0] < best_c
        best_a = jnp.where(better, mean, best_a)
        best_c = jnp.where(better, costs[0], best_c)
        _, idx = jax.lax.top_k(-costs, cfg.num_elites)
        elites = samples[idx]
        mean = m * mean + (1 - m) * jnp.mean(elites, axis=0)
        std = jnp.maximum(m * std + (1 - m) * jnp.std(elites, axis=0), cfg.min_std)
        return (mean, std, best_a, best_c), costs[0]

    carry = (mean0, std0, mean0, jnp.asarray(jnp.inf, cost_dtype))
    (mean, std, best_a, best_c), cost_per_iter = jax.lax.scan(
        step, carry, jax.random.split(key, cfg.num_iters)
    )
    better = objective(mean) < best_c  # the last refit has not been scored yet
    return jnp.where(better, mean, best_a), cost_per_iter, {"std": std}
