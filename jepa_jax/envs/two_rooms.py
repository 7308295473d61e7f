"""Two-Rooms: a point agent in a square arena split by a wall with one door.

A pure-JAX port of the geometry of PLDM's ``pldm_envs/wall`` (Sobal et al., 2025): a
65x65-pixel arena whose border walls leave an interior of about 56 px, a 3 px vertical wall
with a 9 px door, and an agent drawn as a Gaussian blob of std 1.3 px. As in PLDM, a move
that would cross a wall (other than through the door) or the border leaves the agent where
it was. Actions are 2-D displacements in pixels, clipped to ``action_bound`` in norm.

Functional API in the style of gymnax: every function is pure, jittable and vmappable::

    params = EnvParams()
    state = reset(key, params)                  # random layout and start
    state = step(key, state, action, params)    # (2,) action
    obs = render(state, params)                 # (65, 65, 2) float32 in [0, 1]

Coordinates are ``(x, y)`` in pixels; ``x`` indexes image columns and ``y`` rows.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

AGENT_CHANNEL = 0
WALL_CHANNEL = 1


@struct.dataclass
class EnvParams:
    """Static description of the arena. Every field may be changed to ask for any layout.

    Attributes:
      img_size: side of the square image in pixels (static: it sets array shapes).
      border: border walls occupy pixel coordinates ``<= border`` and ``>= img_size-1-border``;
        the agent moves in the open interval between them.
      wall_half_width: the middle wall spans ``wall_x +- wall_half_width`` (3 px wide by default).
      door_half_width: the door spans ``door_y +- door_half_width`` (9 px by default).
      wall_x_range: inclusive range that ``reset`` draws the wall's x from when ``random_layout``.
      door_y_range: inclusive range that ``reset`` draws the door's y from when ``random_layout``.
      random_layout: draw wall and door per episode (PLDM's and eb_jepa's "random wall").
      wall_x, door_y: the layout used when ``random_layout`` is False.
      action_bound: actions are clipped to this norm (PLDM's planning ``max_step``).
      dot_std: std in pixels of the Gaussian blob that draws the agent.
      max_steps: episode length used by the evaluation protocol.
    """

    img_size: int = struct.field(pytree_node=False, default=65)
    border: float = 4.0
    wall_half_width: float = 1.0
    door_half_width: float = 4.0
    wall_x_range: tuple[float, float] = (20.0, 44.0)
    door_y_range: tuple[float, float] = (10.0, 54.0)
    random_layout: bool = struct.field(pytree_node=False, default=True)
    wall_x: float = 32.0
    door_y: float = 32.0
    action_bound: float = 2.45
    dot_std: float = 1.3
    max_steps: int = struct.field(pytree_node=False, default=200)

    @property
    def low(self) -> float:
        """Smallest coordinate of the open interior (exclusive)."""
        return self.border

    @property
    def high(self) -> float:
        """Largest coordinate of the open interior (exclusive)."""
        return self.img_size - 1 - self.border


@struct.dataclass
class EnvState:
    """State of one episode.

    Attributes:
      pos: (2,) agent position ``(x, y)`` in pixels.
      wall_x: () x coordinate of the middle wall's centre.
      door_y: () y coordinate of the door's centre.
      t: () int32 step counter.
    """

    pos: jax.Array
    wall_x: jax.Array
    door_y: jax.Array
    t: jax.Array


def validate_params(params: EnvParams) -> None:
    """Raises ValueError naming the first inconsistent field of ``params`` (call before jit)."""
    if params.img_size < 16:
        raise ValueError(f"EnvParams.img_size must be >= 16, got {params.img_size}")
    lo, hi = params.border, params.img_size - 1 - params.border
    if not hi - lo > 4 * (params.wall_half_width + 1):
        raise ValueError(f"EnvParams.border={params.border} leaves no interior")
    for name, (a, b) in (("wall_x_range", params.wall_x_range),
                         ("door_y_range", params.door_y_range)):
        if not lo < a <= b < hi:
            raise ValueError(f"EnvParams.{name}={(a, b)} must lie inside the interior ({lo}, {hi})")
    if params.action_bound <= 0:
        raise ValueError(f"EnvParams.action_bound must be > 0, got {params.action_bound}")
    if params.door_half_width <= 0 or params.wall_half_width < 0:
        raise ValueError("EnvParams door_half_width must be > 0 and wall_half_width >= 0")


def clip_action(action: jax.Array, bound: float | jax.Array) -> jax.Array:
    """Scales ``action`` (..., 2) down so its norm is at most ``bound``."""
    norm = jnp.linalg.norm(action, axis=-1, keepdims=True)
    return action * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-12))


def make_state(pos, wall_x, door_y) -> EnvState:
    """Builds an ``EnvState`` at step 0 from a position and a layout."""
    return EnvState(
        pos=jnp.asarray(pos, jnp.float32),
        wall_x=jnp.asarray(wall_x, jnp.float32),
        door_y=jnp.asarray(door_y, jnp.float32),
        t=jnp.zeros((), jnp.int32),
    )


def sample_layout(key: jax.Array, params: EnvParams) -> tuple[jax.Array, jax.Array]:
    """Draws ``(wall_x, door_y)`` on the integer grid, as PLDM does, or the fixed layout."""
    if not params.random_layout:
        return jnp.float32(params.wall_x), jnp.float32(params.door_y)
    kw, kd = jax.random.split(key)
    wall_x = jax.random.randint(kw, (), params.wall_x_range[0], params.wall_x_range[1] + 1)
    door_y = jax.random.randint(kd, (), params.door_y_range[0], params.door_y_range[1] + 1)
    return wall_x.astype(jnp.float32), door_y.astype(jnp.float32)


def sample_free_position(key: jax.Array, wall_x: jax.Array, params: EnvParams,
                         side: jax.Array | None = None, margin: float = 1.0) -> jax.Array:
    """Draws a position uniformly in one room (``side`` 0 left, 1 right; random if None).

    ``margin`` keeps the point that far from every wall.
    """
    ks, kx, ky = jax.random.split(key, 3)
    if side is None:
        side = jax.random.bernoulli(ks).astype(jnp.int32)
    lo, hi = params.low + margin, params.high - margin
    left_hi = wall_x - params.wall_half_width - margin
    right_lo = wall_x + params.wall_half_width + margin
    x_lo = jnp.where(side == 0, lo, right_lo)
    x_hi = jnp.where(side == 0, left_hi, hi)
    x = jax.random.uniform(kx, (), minval=x_lo, maxval=x_hi)
    y = jax.random.uniform(ky, (), minval=lo, maxval=hi)
    return jnp.stack([x, y])


def sample_positions_or_door(key: jax.Array, wall_x: jax.Array, door_y: jax.Array,
                             params: EnvParams, num: int, door_fraction: float = 0.05
                             ) -> jax.Array:
    """``num`` positions (num, 2), each uniform in a room (up to the walls' faces) or, with
    probability ``door_fraction``, uniform in the door's gap: the states an agent can be in,
    with the rare but decisive door states over-represented at will."""
    def one(k):
        kp, kd, kx, ky = jax.random.split(k, 4)
        room = sample_free_position(kp, wall_x, params, margin=0.02)
        gap = jnp.stack([
            wall_x + params.wall_half_width * jax.random.uniform(kx, (), minval=-1.0),
            door_y + params.door_half_width * jax.random.uniform(ky, (), minval=-1.0)])
        return jnp.where(jax.random.bernoulli(kd, door_fraction), gap, room)

    return jax.vmap(one)(jax.random.split(key, num))


def reset(key: jax.Array, params: EnvParams) -> EnvState:
    """Starts an episode: draws the layout (if random) and a free start position."""
    k_layout, k_pos = jax.random.split(key)
    wall_x, door_y = sample_layout(k_layout, params)
    return make_state(sample_free_position(k_pos, wall_x, params), wall_x, door_y)


def room_of(pos: jax.Array, wall_x: jax.Array) -> jax.Array:
    """0 for the left room, 1 for the right one (positions inside the door count as right)."""
    return (pos[..., 0] > wall_x).astype(jnp.int32)


def blocked_by_middle_wall(p, q, wall_x, door_y, params: EnvParams) -> jax.Array:
    """True if the segment p -> q passes through the middle wall outside the door."""
    x0, x1 = wall_x - params.wall_half_width, wall_x + params.wall_half_width
    dx = q[0] - p[0]
    safe_dx = jnp.where(jnp.abs(dx) < 1e-9, 1e-9, dx)
    # Parameter interval [t_lo, t_hi] of the segment whose x lies inside the wall's slab.
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
    d0, d1 = door_y - params.door_half_width, door_y + params.door_half_width
    in_door = (jnp.minimum(y_lo, y_hi) >= d0) & (jnp.maximum(y_lo, y_hi) <= d1)
    return touches & ~in_door


def transition(pos: jax.Array, action: jax.Array, wall_x: jax.Array, door_y: jax.Array,
               params: EnvParams) -> jax.Array:
    """Next position for one (2,) position and (2,) action (action clipped to the bound)."""
    q = pos + clip_action(action, params.action_bound)
    outside = jnp.any((q <= params.low) | (q >= params.high))
    blocked = outside | blocked_by_middle_wall(pos, q, wall_x, door_y, params)
    return jnp.where(blocked, pos, q)


def step(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams) -> EnvState:
    """One environment step. ``key`` is unused (the world is deterministic) but kept for the
    gymnax-style signature shared with stochastic worlds."""
    del key
    chex.assert_shape(action, (2,))
    pos = transition(state.pos, action.astype(jnp.float32), state.wall_x, state.door_y, params)
    return state.replace(pos=pos, t=state.t + 1)


def _grid(params: EnvParams) -> jax.Array:
    return jnp.arange(params.img_size, dtype=jnp.float32)


def render_walls(wall_x: jax.Array, door_y: jax.Array, params: EnvParams) -> jax.Array:
    """(img_size, img_size) float32 image of the border and middle walls (1 = wall)."""
    g = _grid(params)
    xs, ys = g[None, :], g[:, None]
    border = ((xs <= params.low) | (xs >= params.high) | (ys <= params.low) | (ys >= params.high))
    middle = (jnp.abs(xs - wall_x) <= params.wall_half_width) & (
        jnp.abs(ys - door_y) > params.door_half_width)
    return (border | middle).astype(jnp.float32)


def render_agent(pos: jax.Array, params: EnvParams) -> jax.Array:
    """(img_size, img_size) float32 Gaussian blob of std ``dot_std`` at ``pos`` (peak 1)."""
    g = _grid(params)
    gx = jnp.exp(-((g - pos[0]) ** 2) / (2 * params.dot_std**2))
    gy = jnp.exp(-((g - pos[1]) ** 2) / (2 * params.dot_std**2))
    return gy[:, None] * gx[None, :]


def render(state: EnvState, params: EnvParams) -> jax.Array:
    """(img_size, img_size, 2) float32 observation: agent in channel 0, walls in channel 1."""
    return jnp.stack([render_agent(state.pos, params),
                      render_walls(state.wall_x, state.door_y, params)], axis=-1)


def render_positions(pos: jax.Array, wall_x: jax.Array, door_y: jax.Array,
                     params: EnvParams) -> jax.Array:
    """Renders a batch: ``pos`` (..., 2) with layouts broadcastable to (...) -> (..., H, W, 2)."""
    return render_positions_with(render, pos, wall_x, door_y, params)


def render_positions_with(render_fn, pos: jax.Array, wall_x: jax.Array, door_y: jax.Array,
                          params) -> jax.Array:
    """:func:`render_positions` for any world whose ``render_fn(state, params)`` draws an
    ``EnvState`` of this module (e.g. the windy variant)."""
    pos = jnp.asarray(pos, jnp.float32)
    batch = pos.shape[:-1]
    wall_x = jnp.broadcast_to(jnp.asarray(wall_x, jnp.float32), batch)
    door_y = jnp.broadcast_to(jnp.asarray(door_y, jnp.float32), batch)
    flat = jax.vmap(lambda p, w, d: render_fn(make_state(p, w, d), params))(
        pos.reshape(-1, 2), wall_x.reshape(-1), door_y.reshape(-1))
    return flat.reshape(*batch, params.img_size, params.img_size, 2)
