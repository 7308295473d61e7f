"""Reward-free offline trajectories in mazes, across a set of training layouts.

Each trajectory draws one layout from the given seeds, a start near a random cell centre
and a heading; every step the heading drifts by Gaussian noise and the step length is drawn
from ``[step_min, step_max] * action_bound``; after a blocked move (a wall) a new heading is
drawn uniformly (except with probability ``push_prob``, which keeps pushing: data with many
blocked moves teaches the predictor the walls), so the walk explores corridors.
As in :mod:`jepa_jax.data.offline`, only true positions, layouts and actions are stored;
observations are rendered inside jitted code (exact, and far smaller than images).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jepa_jax.data.offline import Batch
from jepa_jax.envs import mazes


@struct.dataclass
class MazeTrajectories:
    """N trajectories of T observations: pos (N, T, 2), walls (N, 2, n+1, n+1) layouts,
    seed (N,) their layout seeds, actions (N, T-1, 2)."""

    pos: jax.Array
    walls: jax.Array
    seed: jax.Array
    actions: jax.Array

    @property
    def num_trajectories(self) -> int:
        return self.pos.shape[0]


@struct.dataclass
class WalkParams:
    """The exploratory policy: step lengths as fractions of the action bound, heading noise."""

    step_min: float = 0.3
    step_max: float = 1.0
    angle_noise: float = 0.3
    push_prob: float = 0.0  # after a blocked move, keep the heading (push on) this often


def _one(key, walls, length: int, env: mazes.MazeParams, wp: WalkParams):
    k_pos, k_head, k_steps = jax.random.split(key, 3)
    pos0 = mazes.sample_free_position(k_pos, walls, env, jitter=0.4)
    heading0 = jax.random.uniform(k_head, (), minval=0.0, maxval=2 * math.pi)

    def body(carry, k):
        pos, heading = carry
        k_noise, k_len, k_new = jax.random.split(k, 3)
        heading = heading + wp.angle_noise * jax.random.normal(k_noise, ())
        size = env.action_bound * jax.random.uniform(k_len, (), minval=wp.step_min,
                                                     maxval=wp.step_max)
        action = size * jnp.stack([jnp.cos(heading), jnp.sin(heading)])
        nxt = mazes.transition(pos, action, walls, env)
        blocked = jnp.all(nxt == pos)
        k_new, k_push = jax.random.split(k_new)
        redraw = blocked & (jax.random.uniform(k_push) >= wp.push_prob)
        heading = jnp.where(redraw, jax.random.uniform(k_new, (), maxval=2 * math.pi), heading)
        return (nxt, heading), (nxt, action)

    _, (rest, actions) = jax.lax.scan(body, (pos0, heading0), jax.random.split(k_steps,
                                                                               length - 1))
    return jnp.concatenate([pos0[None], rest], 0), actions


@functools.partial(jax.jit, static_argnums=(3,))
def _generate(keys, walls, seeds, length, env, wp):
    pos, actions = jax.vmap(lambda k, w: _one(k, w, length, env, wp))(keys, walls)
    return MazeTrajectories(pos=pos, walls=walls, seed=seeds, actions=actions)


def generate(key: jax.Array, num_trajectories: int, length: int, env: mazes.MazeParams,
             layout_seeds, walk: WalkParams | None = None) -> MazeTrajectories:
    """``num_trajectories`` walks of ``length`` observations; the layout of each is drawn
    uniformly from ``layout_seeds``. Deterministic given ``key``."""
    if num_trajectories < 1 or length < 2:
        raise ValueError(f"need num_trajectories >= 1 and length >= 2, got "
                         f"{num_trajectories} and {length}")
    seeds_np = np.asarray(layout_seeds, np.int32).reshape(-1)
    if seeds_np.size == 0:
        raise ValueError("layout_seeds is empty")
    mazes.validate_params(env)
    table = mazes.layouts(jnp.asarray(seeds_np), env)
    k_pick, k_walk = jax.random.split(key)
    pick = jax.random.randint(k_pick, (num_trajectories,), 0, len(seeds_np))
    return _generate(jax.random.split(k_walk, num_trajectories), table[pick],
                     jnp.asarray(seeds_np)[pick], length, env, walk or WalkParams())


def get_batch(trajs: MazeTrajectories, idx: jax.Array, env: mazes.MazeParams,
              start: jax.Array | int = 0, length: int | None = None) -> Batch:
    """Gathers trajectories ``idx`` (B,), frames ``[start, start + length)``, and renders
    them. Jittable (``length`` static). ``Batch.layout`` holds the walls."""
    t = trajs.pos.shape[1]
    length = t if length is None else length
    pos = jax.lax.dynamic_slice_in_dim(trajs.pos[idx], start, length, axis=1)
    act = jax.lax.dynamic_slice_in_dim(trajs.actions[idx], start, length - 1, axis=1)
    walls = trajs.walls[idx]
    obs = mazes.render_positions(pos, walls[:, None], env)
    return Batch(obs=obs, actions=act, pos=pos, layout=walls)
