"""Gradient MPC: optimise the action sequence by backpropagating the cost through the rollout.

``num_restarts`` sequences are optimised in parallel with ``jax.vmap``: restart 0 starts from
the warm start, restart k >= 1 from the warm start plus a random constant offset
``c_k ~ N(0, restart_std^2 I_A)`` (a straight-line push in a random direction of random
magnitude), projected to the bound (``restart_init="offset"``), or, with
``restart_init="segments"``, from a random two-segment path: full-bound steps in one random
direction for a random number of steps, then in another (a detour shape, which a path
around an obstacle needs and a straight push cannot give). Each takes ``num_iters`` optax
steps in a ``lax.scan``; bounds hold by projection after every step
(``bound_mode="project"``) or by the radial reparametrisation
``a = b tanh(|u|/b) u/|u|`` (``"tanh"``), optionally with Gaussian noise of std
``action_noise`` added to the iterate after every step (peers use ~0.003, see
PLANNING-NOTES.md). Every restart remembers its lowest-cost iterate (noise and Adam can make
the last one worse); the restart with the lowest such cost wins.

With a latent-variable world model (see ``base``), ``z_resample=True`` (the default) takes
each gradient step on K futures drawn afresh for that step (a stochastic gradient of the
risk measure), while iterates and restarts are scored on one fixed set of K futures drawn
independently. With fixed futures for both (``z_resample=False``), the optimiser and the
choice among restarts learn the particular draws: measured on Windy Two-Rooms, plans chosen
that way cost 40-60% more on fresh futures than on their own.

The final choice (``num_perturbations`` > 0, or ``select_samples`` > 0 with a latent
variable): the restarts' best iterates, the warm start as given and ``num_perturbations``
detour-shaped variants of the best restart and of the warm start (``detour_perturbations``:
a stretch of the path moved sideways and back) are scored together, by the objective for a
deterministic model, or on ``select_samples`` futures drawn afresh for the choice (64 say:
few futures reward a risky plan whose draws happened to be kind). Why: a sampled future that
falls into a trap and stays there has no gradient towards safety, so every restart drifts to
where the trap is likely (on Windy Two-Rooms, the corner of the bridge); the variants try
other lanes, the fresh futures rank them by what they risk, and the warm start carries a
safe lane found by an earlier call past the drift of this one.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jepa_jax.cost import RISK_MEASURES
from jepa_jax.planning.base import (
    Objective,
    check_choice,
    check_float,
    check_int,
    clip_by_norm,
)

OPTIMIZERS = ("adam", "adamw", "sgd")
BOUND_MODES = ("project", "tanh")

DEFAULTS: dict[str, Any] = {
    "num_iters": 30,
    "num_restarts": 8,
    "optimizer": "adam",  # "adam", "adamw" or "sgd"
    "learning_rate": 0.1,
    "weight_decay": 1e-4,  # adamw only
    "momentum": 0.0,  # sgd only; 0 is plain gradient descent
    "bound_mode": "project",  # "project" (clip after each step) or "tanh" (reparametrise)
    "action_noise": 0.0,  # std of Gaussian noise added to the iterate after each step
    "restart_std": 1.0,  # std of the constant offset of restarts k >= 1 ("offset" init)
    "restart_init": "offset",  # "offset" or "segments" (see module docstring)
    "z_resample": True,  # latent-variable models: fresh futures for every gradient step
    "num_perturbations": 0,  # extra final candidates: detour-shaped perturbations (below)
    "select_samples": 0,  # latent-variable models: futures that score the final candidates
    "select_risk": "",  # risk measure of the final choice ("": the same as ``risk``)
}

RESTART_INITS = ("offset", "segments")

# tanh mode: warm-start actions on the bound would map to |u| = inf, where tanh has no
# gradient; capping |a|/b at 0.95 keeps sech^2 around 0.1 so they can still move.
_TANH_MAX_RATIO = 0.95


def validate(cfg: dict[str, Any]) -> None:
    """Raises a one-line ValueError on a bad gradient-planner config."""
    check_int(cfg, "num_iters", 1)
    check_int(cfg, "num_restarts", 1)
    check_choice(cfg, "optimizer", OPTIMIZERS)
    check_float(cfg, "learning_rate", strict=True)
    check_float(cfg, "weight_decay")
    check_float(cfg, "momentum")
    if cfg["momentum"] >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {cfg['momentum']!r}")
    check_choice(cfg, "bound_mode", BOUND_MODES)
    check_float(cfg, "action_noise")
    check_float(cfg, "restart_std")
    check_choice(cfg, "restart_init", RESTART_INITS)
    if not isinstance(cfg["z_resample"], bool):
        raise ValueError(f"z_resample must be a bool, got {cfg['z_resample']!r}")
    check_int(cfg, "num_perturbations", 0)
    check_int(cfg, "select_samples", 0)
    if cfg.get("select_risk", ""):
        check_choice(cfg, "select_risk", RISK_MEASURES)


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """The optax optimizer named by ``cfg.optimizer``."""
    if cfg.optimizer == "adam":
        return optax.adam(cfg.learning_rate)
    if cfg.optimizer == "adamw":
        return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    return optax.sgd(cfg.learning_rate, momentum=cfg.momentum or None)


def squash(u: jax.Array, bound: float) -> jax.Array:
    """Radial tanh map of R^A onto the open ball of radius ``bound``, identity near 0.

    Args:
      u: (..., A) unconstrained parameters.
      bound: radius; ``math.inf`` gives the identity.

    Returns:
      (..., A) actions ``bound * tanh(|u| / bound) * u / |u|``.
    """
    if math.isinf(bound):
        return u
    r2 = jnp.sum(jnp.square(u), axis=-1, keepdims=True)
    r = jnp.sqrt(jnp.where(r2 > 0, r2, 1.0))  # safe norm: finite gradient at u = 0
    return u * jnp.where(r2 > 0, bound * jnp.tanh(r / bound) / r, 1.0)


def unsquash(a: jax.Array, bound: float) -> jax.Array:
    """Inverse of ``squash`` with ``|a| / bound`` capped at 0.95 (see ``_TANH_MAX_RATIO``).

    Args:
      a: (..., A) actions.
      bound: radius; ``math.inf`` gives the identity.

    Returns:
      (..., A) parameters u.
    """
    if math.isinf(bound):
        return a
    r2 = jnp.sum(jnp.square(a), axis=-1, keepdims=True)
    r = jnp.sqrt(jnp.where(r2 > 0, r2, 1.0))
    ratio = jnp.minimum(r / bound, _TANH_MAX_RATIO)
    return a * jnp.where(r2 > 0, bound * jnp.arctanh(ratio) / r, 1.0)


def _segment_inits(key: jax.Array, num: int, init_actions: jax.Array, bound: float,
                   scale: float) -> jax.Array:
    """(num, H, A) two-segment sequences: direction d1 for the first n steps, then d2.

    Step length is ``bound`` (or ``scale`` when the bound is infinite); directions uniform
    on the circle for A = 2 (Gaussian directions otherwise), n uniform in [1, H].
    """
    horizon, dim = init_actions.shape
    k1, k2, k3 = jax.random.split(key, 3)

    def unit(k):
        v = jax.random.normal(k, (num, 1, dim), init_actions.dtype)
        return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-9)

    length = scale if math.isinf(bound) else bound
    switch = jax.random.randint(k3, (num, 1, 1), 1, horizon + 1)
    t = jnp.arange(horizon)[None, :, None]
    return length * jnp.where(t < switch, unit(k1), unit(k2))


def detour_perturbations(key: jax.Array, bases: jax.Array, bound: float,
                         scale: float) -> jax.Array:
    """(P, H, A) detour-shaped variants of the sequences ``bases`` (P, H, A).

    Each adds ``+v`` for ``n`` steps from a random step ``t0`` and ``-v`` for the next ``n``:
    the middle of the path moves sideways by up to ``n |v|`` and the rest is kept (a lane
    change, which neither a constant offset nor white noise on the actions gives). ``v`` has
    a uniform direction and a length uniform in [0, ``bound``] (``scale`` when unbounded);
    ``n`` is uniform in [1, max(1, H // 4)]; results are clipped to the bound.
    """
    num, horizon, dim = bases.shape
    k_dir, k_len, k_t0, k_n = jax.random.split(key, 4)
    d = jax.random.normal(k_dir, (num, 1, dim), bases.dtype)
    d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    length = scale if math.isinf(bound) else bound
    v = length * jax.random.uniform(k_len, (num, 1, 1), bases.dtype) * d
    t0 = jax.random.randint(k_t0, (num, 1, 1), 0, horizon)
    n = jax.random.randint(k_n, (num, 1, 1), 1, max(1, horizon // 4) + 1)
    t = jnp.arange(horizon)[None, :, None]
    sign = jnp.where((t >= t0) & (t < t0 + n), 1.0, 0.0) - jnp.where(
        (t >= t0 + n) & (t < t0 + 2 * n), 1.0, 0.0)
    return clip_by_norm(bases + sign.astype(bases.dtype) * v, bound)


def optimize(
    cfg: Any, objective: Objective, init_actions: jax.Array, key: jax.Array,
    sample_objective: Any = None, select: Any = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Gradient descent on the action sequence with parallel restarts.

    Args:
      cfg: validated config (see ``DEFAULTS`` and ``base.COMMON_DEFAULTS``).
      objective: ``(actions (H, A)) -> scalar``; scores iterates and restarts.
      init_actions: (H, A) warm start.
      key: PRNG key.
      sample_objective: optional ``(actions, key) -> scalar``, a random estimate of the
        objective (fresh sampled futures per key); if given, gradient steps follow it.
      select: optional ``(candidates (N, H, A), key) -> (N,) costs``; if given, the plan is
        chosen by it among the restarts' best iterates, the warm start as given and
        ``num_perturbations`` detour-shaped variants (``detour_perturbations``) of the best
        restart and of the warm start, alternately. Why: a pathwise gradient does not see
        a cost that jumps (a sampled future that falls into a trap and stays there), so
        restarts drift to where the jump is likely; candidates compared by ``select``
        (e.g. many fresh futures) can still move away from it, and the warm start keeps
        what an earlier call found.

    Returns:
      ``(actions (H, A), cost_per_iter (num_iters,), extra)``; ``cost_per_iter`` belongs
      to the restart with the lowest objective; ``extra["restart_costs"]`` (num_restarts,)
      and, with ``select``, ``extra["selection_costs"]`` (N,) and ``extra["selected"]``
      (the winner's index: restarts first, then the warm start, then perturbations).
    """
    bound = cfg.action_bound
    tanh = cfg.bound_mode == "tanh"
    tx = make_optimizer(cfg)

    def to_actions(u):
        return squash(u, bound) if tanh else u

    def loss(u):
        return objective(to_actions(u))

    k_init, k_run = jax.random.split(key)
    if cfg.restart_init == "segments":
        inits = _segment_inits(k_init, cfg.num_restarts, init_actions, bound, cfg.restart_std)
    else:
        offsets = cfg.restart_std * jax.random.normal(
            k_init, (cfg.num_restarts, 1, init_actions.shape[-1]), init_actions.dtype
        )
        inits = init_actions[None] + offsets
    inits = inits.at[0].set(init_actions)  # restart 0 is the warm start itself
    inits = clip_by_norm(inits, bound)  # (R, H, A)
    u_inits = unsquash(inits, bound) if tanh else inits

    def one_restart(u0, key):
        def step(carry, step_key):
            u, opt_state, best_u, best_c = carry
            if sample_objective is None:
                c, g = jax.value_and_grad(loss)(u)
            else:
                step_key, k_sample = jax.random.split(step_key)
                c = loss(u)
                g = jax.grad(lambda v: sample_objective(to_actions(v), k_sample))(u)
            better = c < best_c  # False for NaN: a diverged iterate is never kept
            best_u = jnp.where(better, u, best_u)
            best_c = jnp.where(better, c, best_c)
            updates, opt_state = tx.update(g, opt_state, u)
            u = optax.apply_updates(u, updates)
            if cfg.action_noise > 0:
                u = u + cfg.action_noise * jax.random.normal(step_key, u.shape, u.dtype)
            if not tanh:
                u = clip_by_norm(u, bound)
            return (u, opt_state, best_u, best_c), c

        best_c0 = jnp.asarray(jnp.inf, jax.eval_shape(loss, u0).dtype)  # carry dtype = cost's
        carry = (u0, tx.init(u0), u0, best_c0)
        (u, _, best_u, best_c), costs = jax.lax.scan(
            step, carry, jax.random.split(key, cfg.num_iters)
        )
        c_last = loss(u)  # the last update has not been scored yet
        better = c_last < best_c
        return (
            to_actions(jnp.where(better, u, best_u)),
            costs,
            jnp.where(better, c_last, best_c),
        )

    actions, costs, finals = jax.vmap(one_restart)(
        u_inits, jax.random.split(k_run, cfg.num_restarts)
    )
    best = jnp.argmin(jnp.where(jnp.isnan(finals), jnp.inf, finals))
    if select is None:
        return actions[best], costs[best], {"restart_costs": finals}
    k_pert, k_select = jax.random.split(jax.random.fold_in(key, 1))
    warm = inits[0]  # the warm start, clipped to the bound
    candidates = [actions, warm[None]]
    if cfg.num_perturbations:
        bases = jnp.stack([actions[best], warm])[jnp.arange(cfg.num_perturbations) % 2]
        candidates.append(detour_perturbations(k_pert, bases, bound, cfg.restart_std))
    candidates = jnp.concatenate(candidates, 0)
    sel_costs = select(candidates, k_select)
    win = jnp.argmin(jnp.where(jnp.isnan(sel_costs), jnp.inf, sel_costs))
    return candidates[win], costs[best], {"restart_costs": finals,
                                          "selection_costs": sel_costs, "selected": win}
