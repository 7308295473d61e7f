"""Windy Two-Rooms: Two-Rooms whose door is a bridge over a chasm, in a gusty wind.

A stochastic variant of :mod:`jepa_jax.envs.two_rooms` (same arena, wall, blob, action bound
and collision rule) where the next observation is *not* a function of the current one and
the action.

* The **windy door** at ``windy_door_y`` (half-height ``windy_half_width``) is a bridge
  across a chasm: the band ``|x - wall_x| <= wind_half_length`` beside the door rows is a
  pit on both sides (``windy_half_width < |y - windy_door_y| <= windy_half_width +
  pit_width``), and on the bridge itself (``|x - wall_x| <= wind_half_length``,
  ``|y - windy_door_y| <= windy_half_width``) a gust may blow at every step: the move is
  displaced by ``-gust`` or ``+gust`` in y with probability ``gust_prob`` each (no gust
  otherwise). An agent blown off the bridge falls into a pit and stays there for the rest
  of the episode (every move leaves it in place).
* Optionally (``calm_door=True``, the params' default) a **calm door** at ``door_y`` (the
  layout's door, as in Two-Rooms) offers a windless way round.

The outcome of a step on the bridge is therefore tri-modal (blown up, blown down, or
carried straight on) and, once in a pit, irreversible. Its mean is "straight on", which never
hurts: a deterministic model trained by regression predicts that, and a planner using it
crosses wherever the way is shortest, typically hugging a corner of the door, one gust from
a pit. A model with a latent variable can sample the gusts, and a planner that scores the
spread of its samples crosses in the middle of the bridge, where one gust is survivable
(``experiments/stochastic_rooms.py``: one 17 px bridge, gusts of 5 px, no calm door). With
a calm door it should go round instead: the ``two_doors`` presets put one 20 px below the
bridge and strengthen the wind (gusts of 6 px, probability 0.3 each), so that every
crossing falls a third to a half of the time and the calm door is the only safe way.

Everything that matters is visible in one frame: the pits are drawn in the wall channel
(value 0.5, walls 1.0), and "stuck" is simply "inside a pit". Only the gust is hidden, which
is the point.

Functional API in the style of gymnax (and of ``two_rooms``)::

    params = EnvParams()
    state = reset(key, params)
    state = step(key, state, action, params)    # the key draws the gust
    obs = render(state, params)                 # (65, 65, 2) float32 in [0, 1]

The functions that Two-Rooms code calls by name (``sample_layout``,
``sample_free_position``, ``render``, ``render_positions``, ``make_state``, ``room_of``)
have Two-Rooms' signatures; ``transition`` takes a key as its last argument.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from jepa_jax.envs import two_rooms
from jepa_jax.envs.two_rooms import (  # noqa: F401 - re-exported: same API as two_rooms
    AGENT_CHANNEL,
    WALL_CHANNEL,
    EnvState,
    clip_action,
    make_state,
    render_agent,
    room_of,
    sample_layout,
)

PIT_VALUE = 0.5  # pits in the wall channel (walls are 1.0)


@struct.dataclass
class EnvParams:
    """Static description of the windy arena; every field may be changed.

    Attributes shared with ``two_rooms.EnvParams`` keep their meaning (``door_y`` and
    ``door_y_range`` describe the calm door). New ones:

      windy_door_y: y of the windy door's centre (fixed across episodes).
      wind_half_length: the bridge and its pits span ``wall_x +- wind_half_length``.
      pit_width: each pit spans ``pit_width`` px in y beyond the door's edge.
      gust: size in px of a gust (in y); larger than ``windy_half_width`` means that any
        gust from the bridge's centre line throws the agent into a pit.
      gust_prob: probability of each gust direction per step on the bridge (so a gust
        blows with probability ``2 * gust_prob``).
      windy_half_width: half-height of the windy door and its bridge (the calm door's is
        ``door_half_width``).
      calm_door: whether the calm door exists; without it the windy door is the only way
        between the rooms (``door_y`` is then unused).
    """

    img_size: int = struct.field(pytree_node=False, default=65)
    border: float = 4.0
    wall_half_width: float = 1.0
    door_half_width: float = 4.0
    wall_x_range: tuple[float, float] = (24.0, 40.0)
    door_y_range: tuple[float, float] = (38.0, 54.0)
    random_layout: bool = struct.field(pytree_node=False, default=False)
    wall_x: float = 32.0
    door_y: float = 48.0
    windy_door_y: float = 16.0
    wind_half_length: float = 6.0
    pit_width: float = 6.0
    gust: float = 6.0
    gust_prob: float = 0.1
    windy_half_width: float = 4.0
    calm_door: bool = struct.field(pytree_node=False, default=True)
    action_bound: float = 2.45
    dot_std: float = 1.3
    max_steps: int = struct.field(pytree_node=False, default=200)

    @property
    def low(self) -> float:
        return self.border

    @property
    def high(self) -> float:
        return self.img_size - 1 - self.border


def validate_params(params: EnvParams) -> None:
    """Raises ValueError naming the first inconsistent field of ``params`` (call before jit)."""
    two_rooms.validate_params(params)  # the shared fields (duck-typed)
    lo, hi = params.low, params.high
    if params.windy_half_width <= 0:
        raise ValueError(f"EnvParams.windy_half_width must be > 0, got "
                         f"{params.windy_half_width}")
    reach = params.windy_half_width + params.pit_width
    if not (lo < params.windy_door_y - reach and params.windy_door_y + reach < hi):
        raise ValueError(f"EnvParams.windy_door_y={params.windy_door_y} puts the pits "
                         f"(+-{reach} px) outside the interior ({lo}, {hi})")
    a, b = params.door_y_range if params.random_layout else (params.door_y, params.door_y)
    w = params.windy_door_y
    gap = 0.0 if a <= w <= b else min(abs(a - w), abs(b - w))
    if params.calm_door and gap <= reach + params.door_half_width:
        raise ValueError(f"EnvParams calm door y {(a, b)} overlaps the windy door at {w} "
                         f"and its pits (need a gap > {reach + params.door_half_width} px)")
    xs = params.wall_x_range if params.random_layout else (params.wall_x, params.wall_x)
    if not (lo < xs[0] - params.wind_half_length and xs[1] + params.wind_half_length < hi):
        raise ValueError(f"EnvParams.wind_half_length={params.wind_half_length} puts the "
                         f"bridge outside the interior for wall x in {xs}")
    if params.wind_half_length <= params.wall_half_width or params.pit_width <= 0:
        raise ValueError("EnvParams wind_half_length must exceed wall_half_width and "
                         "pit_width must be > 0")
    if not 0.0 <= params.gust_prob <= 0.5:
        raise ValueError(f"EnvParams.gust_prob must be in [0, 0.5], got {params.gust_prob}")
    if params.gust < 0:
        raise ValueError(f"EnvParams.gust must be >= 0, got {params.gust}")


def in_wind(pos: jax.Array, wall_x: jax.Array, params: EnvParams) -> jax.Array:
    """True where ``pos`` (..., 2) is on the windy bridge (where gusts blow)."""
    return ((jnp.abs(pos[..., 0] - wall_x) <= params.wind_half_length)
            & (jnp.abs(pos[..., 1] - params.windy_door_y) <= params.windy_half_width))


def in_pit(pos: jax.Array, wall_x: jax.Array, params: EnvParams) -> jax.Array:
    """True where ``pos`` (..., 2) is in a pit (stuck for good)."""
    dy = jnp.abs(pos[..., 1] - params.windy_door_y)
    return ((jnp.abs(pos[..., 0] - wall_x) <= params.wind_half_length)
            & (dy > params.windy_half_width) & (dy <= params.windy_half_width + params.pit_width))


def near_hazard(pos: jax.Array, wall_x: jax.Array, params: EnvParams,
                margin: float) -> jax.Array:
    """True where ``pos`` is within ``margin`` px of the bridge or the pits."""
    dy = jnp.abs(pos[..., 1] - params.windy_door_y)
    return ((jnp.abs(pos[..., 0] - wall_x) <= params.wind_half_length + margin)
            & (dy <= params.windy_half_width + params.pit_width + margin))


def door_centres(door_y: jax.Array, params: EnvParams) -> jax.Array:
    """(2,) the calm and the windy door's y, or (1,) the windy door's without a calm one."""
    windy = jnp.float32(params.windy_door_y)
    if not params.calm_door:
        return windy[None]
    return jnp.stack([jnp.asarray(door_y, jnp.float32), windy])


def _blocked_by_middle_wall(p, q, wall_x, door_y, params: EnvParams) -> jax.Array:
    """True if the segment p -> q crosses the middle wall outside both doors (the rule of
    ``two_rooms.blocked_by_middle_wall`` with two openings)."""
    x0, x1 = wall_x - params.wall_half_width, wall_x + params.wall_half_width
    dx = q[0] - p[0]
    safe_dx = jnp.where(jnp.abs(dx) < 1e-9, 1e-9, dx)
    ta, tb = (x0 - p[0]) / safe_dx, (x1 - p[0]) / safe_dx
    t_lo = jnp.clip(jnp.minimum(ta, tb), 0.0, 1.0)
    t_hi = jnp.clip(jnp.maximum(ta, tb), 0.0, 1.0)
    vertical_inside = (jnp.abs(dx) < 1e-9) & (p[0] >= x0) & (p[0] <= x1)
    t_lo = jnp.where(vertical_inside, 0.0, t_lo)
    t_hi = jnp.where(vertical_inside, 1.0, t_hi)
    touches = jnp.where(jnp.abs(dx) < 1e-9, vertical_inside,
                        (jnp.maximum(p[0], q[0]) >= x0) & (jnp.minimum(p[0], q[0]) <= x1))
    y_lo = p[1] + t_lo * (q[1] - p[1])
    y_hi = p[1] + t_hi * (q[1] - p[1])
    lo, hi = jnp.minimum(y_lo, y_hi), jnp.maximum(y_lo, y_hi)

    def through(centre, half):
        return (lo >= centre - half) & (hi <= centre + half)

    passes = through(params.windy_door_y, params.windy_half_width)
    if params.calm_door:
        passes = passes | through(door_y, params.door_half_width)
    return touches & ~passes


def gust_of(key: jax.Array, params: EnvParams) -> jax.Array:
    """() the y displacement of a gust on the bridge: -gust, 0 or +gust."""
    u = jax.random.uniform(key, ())
    return jnp.where(u < params.gust_prob, -params.gust,
                     jnp.where(u < 2 * params.gust_prob, params.gust, 0.0))


def transition(pos: jax.Array, action: jax.Array, wall_x: jax.Array, door_y: jax.Array,
               params: EnvParams, key: jax.Array) -> jax.Array:
    """Next position for one (2,) position and (2,) action; ``key`` draws the gust.

    In a pit: no move. On the bridge: the clipped action plus the gust in y. Then as in
    Two-Rooms: a move that would leave the interior or cross the wall outside a door
    leaves the agent where it was.
    """
    g = jnp.where(in_wind(pos, wall_x, params), gust_of(key, params), 0.0)
    q = pos + clip_action(action, params.action_bound) + jnp.stack([0.0, g]).astype(pos.dtype)
    outside = jnp.any((q <= params.low) | (q >= params.high))
    blocked = (outside | _blocked_by_middle_wall(pos, q, wall_x, door_y, params)
               | in_pit(pos, wall_x, params))
    return jnp.where(blocked, pos, q)


def sample_free_position(key: jax.Array, wall_x: jax.Array, params: EnvParams,
                         side: jax.Array | None = None, margin: float = 1.0,
                         tries: int = 16) -> jax.Array:
    """A position uniform in one room (``side`` 0 left, 1 right; random if None), at least
    ``margin`` px from the walls and from the bridge and its pits (the first of ``tries``
    uniform draws that qualifies; the hazard covers under a tenth of a room)."""
    ks, kt = jax.random.split(key)
    if side is None:
        side = jax.random.bernoulli(ks).astype(jnp.int32)
    cands = jax.vmap(lambda k: two_rooms.sample_free_position(k, wall_x, params, side, margin))(
        jax.random.split(kt, tries))
    ok = ~near_hazard(cands, wall_x, params, margin)
    return cands[jnp.argmax(ok)]


def reset(key: jax.Array, params: EnvParams) -> EnvState:
    """Starts an episode: draws the layout (if random) and a start away from the hazard."""
    k_layout, k_pos = jax.random.split(key)
    wall_x, door_y = sample_layout(k_layout, params)
    return make_state(sample_free_position(k_pos, wall_x, params), wall_x, door_y)


def step(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams) -> EnvState:
    """One environment step (``key`` draws the gust)."""
    chex.assert_shape(action, (2,))
    pos = transition(state.pos, action.astype(jnp.float32), state.wall_x, state.door_y, params,
                     key)
    return state.replace(pos=pos, t=state.t + 1)


def render_walls(wall_x: jax.Array, door_y: jax.Array, params: EnvParams) -> jax.Array:
    """(img_size, img_size) float32: border and middle wall 1.0 (two door gaps), pits 0.5."""
    g = jnp.arange(params.img_size, dtype=jnp.float32)
    xs, ys = g[None, :], g[:, None]
    border = ((xs <= params.low) | (xs >= params.high) | (ys <= params.low) | (ys >= params.high))
    slab = jnp.abs(xs - wall_x) <= params.wall_half_width
    doors = jnp.abs(ys - params.windy_door_y) <= params.windy_half_width
    if params.calm_door:
        doors = doors | (jnp.abs(ys - door_y) <= params.door_half_width)
    walls = (border | (slab & ~doors)).astype(jnp.float32)
    pits = in_pit(jnp.stack(jnp.broadcast_arrays(xs, ys), -1), wall_x, params)
    return jnp.maximum(walls, PIT_VALUE * pits.astype(jnp.float32))


def render(state: EnvState, params: EnvParams) -> jax.Array:
    """(img_size, img_size, 2) float32 observation: agent in channel 0, walls and pits in 1."""
    return jnp.stack([render_agent(state.pos, params),
                      render_walls(state.wall_x, state.door_y, params)], axis=-1)


def render_positions(pos: jax.Array, wall_x: jax.Array, door_y: jax.Array,
                     params: EnvParams) -> jax.Array:
    """Renders a batch: ``pos`` (..., 2) with layouts broadcastable to (...) -> (..., H, W, 2)."""
    return two_rooms.render_positions_with(render, pos, wall_x, door_y, params)
