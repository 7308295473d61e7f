"""Reward-free offline trajectories from a random exploratory policy, and fixed-shape batches.

The policy follows PLDM's Two-Rooms data generator: each trajectory draws a heading, which
drifts by Gaussian angle noise every step, and step lengths from a normal clipped to
``[step_min, step_max]``. A fraction ``cross_wall_rate`` of the trajectories start near the
door, heading through it, so that the data shows the door being used as well as the wall
blocking (PLDM uses 0.6 for its good-quality data). A fraction ``wall_seek_rate`` start a
few pixels from the middle wall at a random height, heading into it, so that the data holds
many blocked moves (the rule a predictor finds hardest to learn). A fraction
``wall_slide_rate`` start 0-3 px from the middle wall's face, heading along it (up or down,
turned slightly away from the wall),
so that the data also holds free moves next to the wall: without them a predictor learns that
nothing moves near the wall, and a plan that follows the wall to the door looks hopeless to
it (measured: 5.6 px mean error after 5 steps of such a path, against 0.6 px at 4 steps on
the data's own distribution).

The data set stores low-dimensional true states (positions and layouts) and actions;
observations are rendered from them on the fly inside jitted code, which is exact (rendering is
deterministic), costs far less memory than storing images, and is fast on any backend.
True states are for probing and evaluation only; the world model never trains on them.

Any world of :mod:`jepa_jax.envs` works (chosen by the type of its ``EnvParams``). In a
stochastic one each step draws its randomness from keys folded out of the trajectory's key,
and door-crossing starts pick one of the doors at random (Windy Two-Rooms has two).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import struct

from jepa_jax import envs
from jepa_jax.envs import two_rooms


@struct.dataclass
class Trajectories:
    """A data set of N trajectories of T observations (T-1 actions).

    Attributes:
      pos: (N, T, 2) float32 true agent positions.
      layout: (N, 2) float32 ``(wall_x, door_y)`` of each trajectory.
      actions: (N, T-1, 2) float32 actions taken.
    """

    pos: jax.Array
    layout: jax.Array
    actions: jax.Array

    @property
    def num_trajectories(self) -> int:
        return self.pos.shape[0]

    @property
    def length(self) -> int:
        return self.pos.shape[1]


@struct.dataclass
class Batch:
    """A fixed-shape training batch.

    Attributes:
      obs: (B, T, H, W, C) float32 observations.
      actions: (B, T-1, 2) float32.
      pos: (B, T, 2) true positions (probing / evaluation only).
      layout: (B, 2) true ``(wall_x, door_y)`` (probing / evaluation only).
    """

    obs: jax.Array
    actions: jax.Array
    pos: jax.Array
    layout: jax.Array


@struct.dataclass
class PolicyParams:
    """The random exploratory policy (defaults follow PLDM's good-quality data)."""

    step_mean: float = 1.0
    step_std: float = 0.4
    step_min: float = 0.2
    step_max: float = 1.8
    angle_noise: float = 0.45
    cross_wall_rate: float = 0.6
    wall_seek_rate: float = 0.0
    wall_slide_rate: float = 0.0


def _random_walk_actions(key, length, pp: PolicyParams, heading):
    k_noise, k_step = jax.random.split(key)
    noise = pp.angle_noise * jax.random.normal(k_noise, (length,))
    angles = heading + jnp.cumsum(noise.at[0].set(0.0))
    steps = jnp.clip(pp.step_mean + pp.step_std * jax.random.normal(k_step, (length,)),
                     pp.step_min, pp.step_max)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1) * steps[:, None]


def _one_trajectory(key, length: int, env, pp: PolicyParams):
    k_layout, k_pos, k_cross, k_side, k_head, k_door, k_act, k_seek = jax.random.split(key, 8)
    stochastic = envs.is_stochastic(env)  # Python-level: Two-Rooms traces as before
    wall_x, door_y = envs.sample_layout(k_layout, env)
    free_pos = envs.sample_free_position(k_pos, wall_x, env)
    free_heading = jax.random.uniform(k_head, (), minval=0.0, maxval=2 * math.pi)
    # Cross-wall start: a few steps from the door on a random side, heading through it.
    side = jnp.where(jax.random.bernoulli(k_side), 1.0, -1.0)
    kd1, kd2, kd3 = jax.random.split(k_door, 3)
    dist = jax.random.uniform(kd1, (), minval=2.0, maxval=8.0)
    dy = jax.random.uniform(kd2, (), minval=-0.7, maxval=0.7) * env.door_half_width
    cross_door = door_y
    if stochastic:  # either door, at random
        doors = envs.module_of(env).door_centres(door_y, env)
        cross_door = doors[jax.random.randint(jax.random.fold_in(key, 1), (), 0, len(doors))]
    cross_pos = jnp.stack([wall_x - side * (env.wall_half_width + dist), cross_door + dy])
    cross_pos = jnp.clip(cross_pos, env.low + 0.5, env.high - 0.5)
    cross_heading = jnp.where(side > 0, 0.0, math.pi) + 0.3 * jax.random.normal(kd3, ())
    # Wall-seeking start: 1-12 px from the middle wall at any height, heading into it.
    ks1, ks2, ks3, ks4 = jax.random.split(k_seek, 4)
    seek_dist = jax.random.uniform(ks1, (), minval=1.0, maxval=12.0)
    seek_y = jax.random.uniform(ks2, (), minval=env.low + 1.0, maxval=env.high - 1.0)
    seek_pos = jnp.stack([wall_x - side * (env.wall_half_width + seek_dist), seek_y])
    seek_pos = jnp.clip(seek_pos, env.low + 0.5, env.high - 0.5)
    seek_heading = jnp.where(side > 0, 0.0, math.pi) + 0.6 * jax.random.normal(ks3, ())
    # Wall-sliding start: 0-3 px from the middle wall's face, heading along it (up or down),
    # turned slightly away from the wall: at contact any inward component blocks the move.
    kl1, kl2, kl3, kl4 = jax.random.split(ks4, 4)
    slide_dist = jax.random.uniform(kl1, (), minval=0.0, maxval=3.0)
    slide_y = jax.random.uniform(kl2, (), minval=env.low + 1.0, maxval=env.high - 1.0)
    slide_pos = jnp.stack([wall_x - side * (env.wall_half_width + slide_dist), slide_y])
    slide_pos = jnp.clip(slide_pos, env.low + 0.5, env.high - 0.5)
    up = jnp.where(jax.random.bernoulli(kl3), 1.0, -1.0)
    slide_heading = up * (0.5 * math.pi + side * jnp.abs(0.25 * jax.random.normal(kl4, ())))
    u = jax.random.uniform(k_cross)
    is_cross = u < pp.cross_wall_rate
    seek_end = pp.cross_wall_rate + pp.wall_seek_rate
    is_seek = (u >= pp.cross_wall_rate) & (u < seek_end)
    is_slide = (u >= seek_end) & (u < seek_end + pp.wall_slide_rate)
    kinds = [is_cross, is_seek, is_slide]
    pos0 = jnp.select(kinds, [cross_pos, seek_pos, slide_pos], free_pos)
    heading = jnp.select(kinds, [cross_heading, seek_heading, slide_heading], free_heading)
    actions = _random_walk_actions(k_act, length - 1, pp, heading)

    if stochastic:
        def body(pos, inputs):
            a, k = inputs
            nxt = envs.transition(pos, a, wall_x, door_y, env, k)
            return nxt, nxt

        step_keys = jax.random.split(jax.random.fold_in(key, 2), length - 1)
        _, rest = jax.lax.scan(body, pos0, (actions, step_keys))
    else:
        def body(pos, a):
            nxt = two_rooms.transition(pos, a, wall_x, door_y, env)
            return nxt, nxt

        _, rest = jax.lax.scan(body, pos0, actions)
    pos = jnp.concatenate([pos0[None], rest], 0)
    return pos, jnp.stack([wall_x, door_y]), actions


def generate(key: jax.Array, num_trajectories: int, length: int,
             env: two_rooms.EnvParams | None = None,
             policy: PolicyParams | None = None) -> Trajectories:
    """Generates ``num_trajectories`` trajectories of ``length`` observations, jitted and
    vmapped; deterministic given ``key``."""
    if num_trajectories < 1 or length < 2:
        raise ValueError(f"need num_trajectories >= 1 and length >= 2, got "
                         f"{num_trajectories} and {length}")
    env = env or two_rooms.EnvParams()
    policy = policy or PolicyParams()
    envs.validate_params(env)
    keys = jax.random.split(key, num_trajectories)
    pos, layout, actions = _generate(keys, length, env, policy)
    return Trajectories(pos=pos, layout=layout, actions=actions)


@functools.partial(jax.jit, static_argnums=(1,))
def _generate(keys, length, env, policy):
    # Module-level jit: env and policy are pytree arguments, so it compiles once per shape.
    return jax.vmap(lambda k: _one_trajectory(k, length, env, policy))(keys)


def render_batch(trajs: Trajectories, env: two_rooms.EnvParams) -> jax.Array:
    """Renders ``trajs`` to observations (N, T, H, W, 2). Use inside jit."""
    n, t = trajs.pos.shape[:2]
    wall = jnp.broadcast_to(trajs.layout[:, None, 0], (n, t))
    door = jnp.broadcast_to(trajs.layout[:, None, 1], (n, t))
    return envs.render_positions(trajs.pos, wall, door, env)


def get_batch(trajs: Trajectories, idx: jax.Array, env: two_rooms.EnvParams) -> Batch:
    """Gathers trajectories ``idx`` (B,) and renders them. Jittable."""
    sub = jax.tree.map(lambda x: x[idx], trajs)
    return Batch(obs=render_batch(sub, env), actions=sub.actions, pos=sub.pos,
                 layout=sub.layout)


def epoch_permutation(key: jax.Array, num_trajectories: int, epoch: int) -> jax.Array:
    """The data order of ``epoch``: a permutation that depends only on ``key`` and ``epoch``,
    so that a resumed run sees exactly the batches an uninterrupted run would."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_trajectories)


def batch_indices(key: jax.Array, num_trajectories: int, batch_size: int,
                  step: int) -> jax.Array:
    """Indices (B,) of the trajectories in batch number ``step`` (drop-last epochs)."""
    per_epoch = num_trajectories // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the data set size {num_trajectories}")
    epoch, i = divmod(step, per_epoch)
    perm = epoch_permutation(key, num_trajectories, epoch)
    return jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
