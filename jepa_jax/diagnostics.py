"""Model diagnostics: what a world model must get right before any planner can use it.

* ``probe_r2``: held-out R^2 of a linear probe from frozen embeddings to the agent position
  (``layout_probe_r2``: the same for the wall's x and the door's y).
* ``rollout_px_h{k}``: the probe's position error (pixels) along open-loop predictor rollouts.
* ``wall_violation_rate``: pushed into the middle wall away from the door for 16 steps, the
  fraction of predicted rollouts whose probed position ends on the far side (the real agent
  never crosses).

The true states used here are for evaluation only; no gradient flows from them into the model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jepa_jax import envs
from jepa_jax.data import offline
from jepa_jax.envs import two_rooms
from jepa_jax.world_model import WorldModel

ROLLOUT_HORIZONS = (1, 4, 8, 16)


@struct.dataclass
class LinearProbe:
    """``y = x @ w + b``: w (D, 2), b (2,)."""

    w: jax.Array
    b: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w + self.b


def fit_linear_probe(x: jax.Array, y: jax.Array, ridge: float = 1e-4) -> LinearProbe:
    """Ridge regression in closed form: x (N, D), y (N, K) -> probe (float64 on host)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    scale = np.maximum(xc.std(0), 1e-8)
    xs = xc / scale
    gram = xs.T @ xs + ridge * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xs.T @ yc) / scale[:, None]
    b = my - mx @ w
    return LinearProbe(w=jnp.asarray(w, jnp.float32), b=jnp.asarray(b, jnp.float32))


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination averaged over output dimensions."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - ss_res / np.maximum(ss_tot, 1e-12)))


@struct.dataclass
class DiagnosticData:
    """Fixed data for diagnostics, generated once from its own seed.

    Attributes:
      probe_train: trajectories whose frames fit the probe.
      heldout: trajectories (length >= 17) for R^2 and rollouts.
      wall_start: (M, 2) start positions next to the wall, away from the door.
      wall_layout: (M, 2) their layouts.
      wall_actions: (M, 16, 2) actions pushing into the wall.
    """

    probe_train: offline.Trajectories
    heldout: offline.Trajectories
    wall_start: jax.Array
    wall_layout: jax.Array
    wall_actions: jax.Array


def make_wall_push_problems(key: jax.Array, num: int, env: two_rooms.EnvParams,
                            horizon: int = 16):
    """Start states within 1-6 px of the middle wall and at least 3 px beyond the door's edge
    (so a push never grazes the opening), with ``horizon`` actions of norm 1-``action_bound``
    pointing into the wall (up to 30 degrees off the normal, away from the door)."""
    kl, kside, kd, ky, kmag, kang = jax.random.split(key, 6)
    wall_x, door_y = jax.vmap(lambda k: envs.sample_layout(k, env))(
        jax.random.split(kl, num))
    side = jnp.where(jax.random.bernoulli(kside, shape=(num,)), 1.0, -1.0)  # +1: right room
    dist = jax.random.uniform(kd, (num,), minval=1.0, maxval=6.0)
    x = wall_x + side * (env.wall_half_width + dist)
    # y away from the door: pick above or below, whichever side has room.
    gap = env.door_half_width + 3.0
    if envs.is_stochastic(env):  # Windy Two-Rooms: wall away from the doors and the pits
        reach = env.windy_half_width + env.pit_width + 3.0
        if env.calm_door:  # the stretch between the windy door (above) and the calm one
            lo_band = (jnp.minimum(env.windy_door_y + reach, door_y - gap), door_y - gap)
            hi_band = (door_y + gap, env.high - 1.0)
        else:
            door_y = jnp.full_like(door_y, env.windy_door_y)
            lo_band = (env.low + 1.0, door_y - reach)
            hi_band = (door_y + reach, env.high - 1.0)
    else:
        lo_band = (env.low + 1.0, door_y - gap)
        hi_band = (door_y + gap, env.high - 1.0)
    lo_len = jnp.maximum(lo_band[1] - lo_band[0], 0.0)
    hi_len = jnp.maximum(hi_band[1] - hi_band[0], 0.0)
    u = jax.random.uniform(ky, (num,)) * (lo_len + hi_len)
    y = jnp.where(u < lo_len, lo_band[0] + u, hi_band[0] + (u - lo_len))
    away = jnp.where(y < door_y, -1.0, 1.0)  # direction along y away from the door
    mag = jax.random.uniform(kmag, (num, horizon), minval=1.0, maxval=env.action_bound)
    ang = jax.random.uniform(kang, (num, horizon), minval=0.0, maxval=jnp.pi / 6)
    ax = -side[:, None] * jnp.cos(ang) * mag
    ay = away[:, None] * jnp.sin(ang) * mag
    return (jnp.stack([x, y], -1), jnp.stack([wall_x, door_y], -1),
            jnp.stack([ax, ay], -1))


def make_diagnostic_data(key: jax.Array, env: two_rooms.EnvParams,
                         policy: offline.PolicyParams, num_probe: int = 512,
                         num_heldout: int = 256, num_wall: int = 256) -> DiagnosticData:
    """Generates the probe-fitting, held-out and wall-push sets from ``key``."""
    k1, k2, k3 = jax.random.split(key, 3)
    probe_train = offline.generate(k1, num_probe, 17, env, policy)
    heldout = offline.generate(k2, num_heldout, 17, env, policy)
    start, layout, actions = make_wall_push_problems(k3, num_wall, env)
    return DiagnosticData(probe_train, heldout, start, layout, actions)


def fit_position_probe(wm: WorldModel, params, env: two_rooms.EnvParams,
                       policy: offline.PolicyParams, key: jax.Array,
                       num_trajectories: int = 256) -> LinearProbe:
    """A linear probe latent (D,) -> position (2,), fitted on every frame of the
    probe-fitting set that ``make_diagnostic_data(key, ..., num_probe=num_trajectories)``
    draws (the same trajectories, without the held-out and wall-push sets)."""
    trajs = offline.generate(jax.random.split(key, 3)[0], num_trajectories, 17, env, policy)
    emb = _encode_frames(wm, params, trajs, env)
    return fit_linear_probe(emb.reshape(-1, emb.shape[-1]), trajs.pos.reshape(-1, 2))


def _encode_frames(wm: WorldModel, params, trajs: offline.Trajectories,
                   env: two_rooms.EnvParams, chunk: int = 64) -> jax.Array:
    """Embeddings (N, T, D) of every frame, in chunks of trajectories to bound memory."""
    out = []
    for i in range(0, trajs.num_trajectories, chunk):
        sub = jax.tree.map(lambda x, i=i: x[i:i + chunk], trajs)
        out.append(_encode_chunk(wm, params, sub, env))
    return jnp.concatenate(out, 0)


@jax.jit
def _encode_chunk(wm, params, sub, env):
    # wm carries only static fields, so it is part of the cache key, not a traced value.
    return wm.encode_trajectories(params, offline.render_batch(sub, env))


@jax.jit
def _rollout(wm, params, s0, actions):
    z = None
    if wm.z_dim:  # a latent-variable model: z at the prior's mean, its most typical outcome
        z = jnp.zeros((*actions.shape[:-1], wm.z_dim), actions.dtype)
    return wm.rollout(params, s0, actions, z)


@jax.jit
def _encode(wm, params, obs):
    return wm.encode(params, obs)


def evaluate_world_model(wm: WorldModel, params: Any, data: DiagnosticData,
                         env: two_rooms.EnvParams) -> tuple[dict[str, float], dict[str, Any]]:
    """Computes the diagnostics. Returns (metrics, arrays for plotting)."""
    emb_train = _encode_frames(wm, params, data.probe_train, env)
    probe = fit_linear_probe(emb_train.reshape(-1, emb_train.shape[-1]),
                             data.probe_train.pos.reshape(-1, 2))
    emb = _encode_frames(wm, params, data.heldout, env)
    pos = data.heldout.pos
    probed = np.asarray(probe(emb))
    metrics = {"probe_r2": r2_score(probed.reshape(-1, 2), np.asarray(pos).reshape(-1, 2))}
    # Can the predictor know where the wall and door are? R^2 of a probe to the layout.
    lay_train = np.repeat(np.asarray(data.probe_train.layout), emb_train.shape[1], 0)
    lay_probe = fit_linear_probe(emb_train.reshape(-1, emb_train.shape[-1]), lay_train)
    lay_true = np.repeat(np.asarray(data.heldout.layout), emb.shape[1], 0)
    metrics["layout_probe_r2"] = r2_score(np.asarray(lay_probe(emb.reshape(-1, emb.shape[-1]))),
                                          lay_true)

    pred = _rollout(wm, params, emb[:, 0], data.heldout.actions)  # (N, T-1, D)
    pred_pos = np.asarray(probe(pred))
    err = np.linalg.norm(pred_pos - np.asarray(pos[:, 1:]), axis=-1)  # (N, T-1)
    for h in ROLLOUT_HORIZONS:
        if h <= err.shape[1]:
            metrics[f"rollout_px_h{h}"] = float(err[:, h - 1].mean())

    obs0 = envs.render_positions(data.wall_start, data.wall_layout[:, 0],
                                 data.wall_layout[:, 1], env)
    s0 = _encode(wm, params, obs0)
    wall_pred = _rollout(wm, params, s0, data.wall_actions)
    wall_pos = np.asarray(probe(wall_pred))
    start_side = np.sign(np.asarray(data.wall_start[:, 0] - data.wall_layout[:, 0]))
    end_side = np.sign(wall_pos[:, -1, 0] - np.asarray(data.wall_layout[:, 0]))
    metrics["wall_violation_rate"] = float(np.mean(end_side != start_side))
    arrays = {"probed": probed, "pos": np.asarray(pos), "pred_pos": pred_pos,
              "wall_pos": wall_pos, "wall_start": np.asarray(data.wall_start),
              "wall_layout": np.asarray(data.wall_layout)}
    return metrics, {"probe": probe, **arrays}
