"""Critic targets by value iteration over sampled states of the world.

Why: the TD critic (``jepa_jax.critic.train_critic``) evaluates the policy that collected
its data. On Two-Rooms that policy, a short-horizon planner, fails on the episodes that need
a long walk to the door, so its cost-to-go ranks the true (geodesic) distance to the goal
poorly (Spearman 0.33 on the default model) and planning on top of it gains little.
Value iteration computes the *optimal* cost-to-go of the same intrinsic cost instead.

For each of many layouts, ``num_states`` states are drawn from the world together with their
successors under a fixed action set (8 directions at the action bound, and standing still),
by the world's own transition: experience, as the offline data are. All are rendered and
encoded by the world model's encoder. Each successor is snapped to the nearest sampled state
*in latent space* (the agent's own measure; positions are not used), which makes a finite
decision process over the sampled states. Its cost is the intrinsic reach cost
``c(s', g) = 1 - exp(-|s' - g|^2 / reach_scale)`` of the successor's latent to each goal
(goals are a random subset of the sampled states), and

    V_{k+1}(i, g) = min_a [ c(s'_{i,a}, g) + gamma * V_k(snap(i, a), g) ],   V_0 = 0,

after k sweeps exact for every path of at most k steps. The critic network is then regressed
on ``(s_i, s_g) -> V(i, g)``: it sees latents only, so it plans from images like the rest of
the agent. ::

    tables = value_tables(wm, params, env, key, cfg, reach_scale, gamma)
    critic_params, metrics = fit_critic(critic, critic.init(key), tables, cfg, key)
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jepa_jax.cost import step_reach_cost
from jepa_jax.critic import critic_loss
from jepa_jax.envs import two_rooms

DEFAULTS: dict[str, Any] = {
    "vi_layouts": 256,  # layouts to sample states in
    "vi_states": 1024,  # states per layout
    "vi_goals": 256,  # goals per layout (a subset of its states)
    "vi_sweeps": 100,  # value-iteration sweeps (>= the longest optimal path, in steps)
    "vi_directions": 8,  # actions: this many directions at the bound, plus standing still
    "vi_door_fraction": 0.05,  # share of states drawn inside the door's gap
    "vi_fit_steps": 10000,  # Adam updates of the regression
    "vi_batch_size": 1024,  # (state, goal) pairs per update
}


@dataclasses.dataclass
class ValueTables:
    """Value-iteration results, one row per layout (NumPy, host memory).

    Attributes:
      latents: (L, N, D) latents of the sampled states.
      goal_index: (L, G) which states are the goals.
      values: (L, N, G) optimal discounted cost-to-go from state n to goal g.
      snap_cross_rate: share of successors snapped to a state that the world's wall separates
        from them (a diagnostic of the latent snapping; read from the simulator, never used).
    """

    latents: np.ndarray
    goal_index: np.ndarray
    values: np.ndarray
    snap_cross_rate: float


def validate(cfg: Mapping[str, Any]) -> None:
    """One-line errors for bad value-iteration settings."""
    for key in ("vi_layouts", "vi_states", "vi_goals", "vi_sweeps", "vi_directions",
                "vi_fit_steps", "vi_batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"agent.critic.{key} must be >= 1, got {cfg[key]}")
    if int(cfg["vi_goals"]) > int(cfg["vi_states"]):
        raise ValueError(f"agent.critic.vi_goals ({cfg['vi_goals']}) must be <= vi_states "
                         f"({cfg['vi_states']}): goals are a subset of the sampled states")
    if not 0.0 <= float(cfg["vi_door_fraction"]) <= 1.0:
        raise ValueError(f"agent.critic.vi_door_fraction must be in [0, 1], got "
                         f"{cfg['vi_door_fraction']}")


def action_set(bound: float, num_directions: int = 8) -> jax.Array:
    """(num_directions + 1, 2): evenly spaced directions at norm ``bound``, then zero."""
    th = np.linspace(0.0, 2.0 * np.pi, num_directions, endpoint=False)
    dirs = bound * np.stack([np.cos(th), np.sin(th)], 1)
    return jnp.asarray(np.concatenate([dirs, np.zeros((1, 2))]), jnp.float32)


def snap(latents: jax.Array, next_latents: jax.Array) -> jax.Array:
    """Index of the nearest state in latent space for every successor.

    Args:
      latents: (N, D) sampled states.
      next_latents: (N, K, D) their successors under K actions.
    Returns:
      (N, K) int indices into ``latents``.
    """
    d = (jnp.sum(jnp.square(next_latents), -1)[..., None]
         - 2.0 * jnp.einsum("nkd,md->nkm", next_latents, latents)
         + jnp.sum(jnp.square(latents), -1))
    return jnp.argmin(d, -1)


def tabular_values(latents: jax.Array, next_latents: jax.Array, goal_index: jax.Array,
                   gamma: float, reach_scale: float, num_sweeps: int,
                   successors: jax.Array | None = None) -> jax.Array:
    """Value iteration on the snapped decision process (see the module docstring).

    Args:
      latents: (N, D) sampled states.
      next_latents: (N, K, D) successors under K actions.
      goal_index: (G,) indices of the goal states.
      gamma: discount in [0, 1).
      reach_scale: scale of the intrinsic reach cost.
      num_sweeps: sweeps of ``V <- min_a c + gamma V[snap]`` from ``V = 0``.
      successors: ``snap(latents, next_latents)`` when the caller already has it.
    Returns:
      (N, G) discounted cost-to-go.
    """
    nxt = snap(latents, next_latents) if successors is None else successors  # (N, K)
    goals = latents[goal_index]  # (G, D)
    c = step_reach_cost(next_latents[:, :, None], goals[None, None], reach_scale)  # (N, K, G)

    def sweep(_, v):
        return jnp.min(c + gamma * v[nxt], axis=1)

    return jax.lax.fori_loop(0, num_sweeps, sweep, jnp.zeros((latents.shape[0],
                                                               goals.shape[0]), c.dtype))


def _layout_fn(wm, env: two_rooms.EnvParams, cfg: Mapping[str, Any], gamma: float,
               reach_scale: float) -> Callable:
    n, num_goals = int(cfg["vi_states"]), int(cfg["vi_goals"])
    actions = action_set(float(env.action_bound), int(cfg["vi_directions"]))
    door_fraction, sweeps = float(cfg["vi_door_fraction"]), int(cfg["vi_sweeps"])

    @jax.jit
    def one_layout(params, key):
        kl, kp, kg = jax.random.split(key, 3)
        wall_x, door_y = two_rooms.sample_layout(kl, env)
        pos = two_rooms.sample_positions_or_door(kp, wall_x, door_y, env, n,
                                                 door_fraction)  # (N, 2)
        succ = jax.vmap(lambda p: jax.vmap(
            lambda a: two_rooms.transition(p, a, wall_x, door_y, env))(actions))(pos)
        lat = wm.encode(params, two_rooms.render_positions(pos, wall_x, door_y, env))
        lat_next = wm.encode(params, two_rooms.render_positions(succ, wall_x, door_y, env))
        goal_index = jax.random.choice(kg, n, (num_goals,), replace=False)
        j = snap(lat, lat_next)
        values = tabular_values(lat, lat_next, goal_index, gamma, reach_scale, sweeps,
                                successors=j)
        # Diagnostic only: does a snap jump across the wall?
        cross = jax.vmap(jax.vmap(lambda p, q: two_rooms.blocked_by_middle_wall(
            p, q, wall_x, door_y, env)))(succ, pos[j])
        return lat, goal_index, values, jnp.mean(cross)

    return one_layout


def value_tables(wm, params: Any, env: Any, key: jax.Array, cfg: Mapping[str, Any],
                 reach_scale: float, gamma: float,
                 log: Callable[[str], None] = print) -> ValueTables:
    """Samples ``vi_layouts`` layouts and runs value iteration in each (one compile).

    Only Two-Rooms worlds (``jepa_jax.envs.two_rooms.EnvParams``) are supported."""
    if not isinstance(env, two_rooms.EnvParams):
        raise ValueError(f"value-iteration critic targets need a Two-Rooms world, got "
                         f"{type(env).__name__}; use agent.critic.method='td'")
    validate(cfg)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    one_layout = _layout_fn(wm, env, cfg, float(gamma), float(reach_scale))
    num_layouts = int(cfg["vi_layouts"])
    lats, goals, values, cross = [], [], [], []
    t0 = time.perf_counter()
    for i in range(num_layouts):
        lat, gi, v, c = one_layout(params, jax.random.fold_in(key, i))
        lats.append(np.asarray(lat))
        goals.append(np.asarray(gi))
        values.append(np.asarray(v))
        cross.append(float(c))
        if (i + 1) % max(1, num_layouts // 4) == 0 or i + 1 == num_layouts:
            log(f"value iteration: {i + 1}/{num_layouts} layouts "
                f"({time.perf_counter() - t0:.0f} s)")
    return ValueTables(latents=np.stack(lats), goal_index=np.stack(goals),
                       values=np.stack(values), snap_cross_rate=float(np.mean(cross)))


def fit_critic(critic, params: Any, tables: ValueTables, cfg: Mapping[str, Any],
               key: jax.Array, heldout_layouts: int | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """Regresses ``critic.value(s_n, s_g)`` on ``tables.values`` (MSE, Adam, cosine decay
    from ``learning_rate`` over ``vi_fit_steps`` updates of ``vi_batch_size`` pairs).

    The last ``heldout_layouts`` layouts (default: an eighth, at least one when there are
    two or more) are kept out of training and scored after it. Returns ``(params, metrics)``
    with the RMSE (in cost units, about steps) on training and held-out layouts.
    """
    num_layouts = tables.values.shape[0]
    if heldout_layouts is None:
        heldout_layouts = max(1, num_layouts // 8) if num_layouts >= 2 else 0
    num_train = num_layouts - heldout_layouts
    steps, batch = int(cfg["vi_fit_steps"]), int(cfg["vi_batch_size"])
    lat = jnp.asarray(tables.latents)
    goal_lat = jnp.take_along_axis(lat, jnp.asarray(tables.goal_index)[..., None], axis=1)
    values = jnp.asarray(tables.values)
    n, g = values.shape[1], values.shape[2]
    opt = optax.adam(optax.cosine_decay_schedule(float(cfg["learning_rate"]), max(steps, 1)))
    opt_state = opt.init(params)

    def loss_fn(p, li, ni, gi):
        return critic_loss(critic, p, lat[li, ni], goal_lat[li, gi], values[li, ni, gi])

    @functools.partial(jax.jit, static_argnums=3)
    def run(p, o, k, num):
        def step(carry, kk):
            p, o = carry
            kl, kn, kg = jax.random.split(kk, 3)
            li = jax.random.randint(kl, (batch,), 0, num_train)
            loss, grads = jax.value_and_grad(loss_fn)(p, li, jax.random.randint(kn, (batch,), 0, n),
                                                      jax.random.randint(kg, (batch,), 0, g))
            updates, o = opt.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss

        (p, o), losses = jax.lax.scan(step, (p, o), jax.random.split(k, num))
        return p, o, losses

    params, opt_state, losses = run(params, opt_state, key, steps)
    if not bool(jnp.all(jnp.isfinite(losses))):
        raise RuntimeError("critic regression produced a non-finite loss")

    def rmse(layouts: range) -> float | None:
        if len(layouts) == 0:
            return None
        err = []
        for i in layouts:
            s = jnp.broadcast_to(lat[i][:, None], (n, g, lat.shape[-1]))
            goal = jnp.broadcast_to(goal_lat[i][None], s.shape)
            err.append(np.asarray(critic.value(params, s, goal) - values[i]))
        return float(np.sqrt(np.mean(np.square(np.stack(err)))))

    tail = np.asarray(losses[-max(1, steps // 20):])
    metrics = {"final_loss": float(tail.mean()),
               "train_rmse": rmse(range(min(num_train, 8))),
               "heldout_rmse": rmse(range(num_train, num_layouts)),
               "num_train_layouts": num_train, "num_heldout_layouts": heldout_layouts,
               "snap_cross_rate": tables.snap_cross_rate,
               "value_mean": float(np.mean(tables.values))}
    return params, metrics


__all__ = ["DEFAULTS", "ValueTables", "action_set", "fit_critic", "snap", "tabular_values",
           "validate", "value_tables"]

