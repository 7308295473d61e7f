"""Pure-JAX worlds, chosen by name (``config.env.name``).

* ``"two_rooms"`` (:mod:`jepa_jax.envs.two_rooms`): deterministic Two-Rooms.
* ``"windy_rooms"`` (:mod:`jepa_jax.envs.windy_rooms`): Two-Rooms with a second, windy door
  over a chasm; the next observation is random.

Both share the layout format ``(wall_x, door_y)`` and the function signatures of
``two_rooms``, except that a stochastic world's ``transition`` takes a key. The helpers here
dispatch on the type of the ``EnvParams`` (a Python-level choice, made at trace time), so
code written for Two-Rooms runs the very same computation on Two-Rooms as before.
"""

from __future__ import annotations

from typing import Any

import jax

from jepa_jax.envs import two_rooms, windy_rooms

ENVS = {"two_rooms": two_rooms, "windy_rooms": windy_rooms}


def module_of(params: Any):
    """The env module whose ``EnvParams`` ``params`` is."""
    return windy_rooms if isinstance(params, windy_rooms.EnvParams) else two_rooms


def is_stochastic(params: Any) -> bool:
    """True if ``transition`` needs a key (the world is random)."""
    return isinstance(params, windy_rooms.EnvParams)


def get_env(name: str):
    """The env module called ``name``; one-line ValueError listing the known ones."""
    if name not in ENVS:
        raise ValueError(f"unknown env.name {name!r}; known environments: {', '.join(ENVS)}")
    return ENVS[name]


def transition(pos: jax.Array, action: jax.Array, wall_x: jax.Array, door_y: jax.Array,
               params: Any, key: jax.Array | None = None) -> jax.Array:
    """Next position in either world (``key`` is ignored by deterministic ones)."""
    if is_stochastic(params):
        if key is None:
            raise ValueError("a stochastic environment's transition needs a key")
        return windy_rooms.transition(pos, action, wall_x, door_y, params, key)
    return two_rooms.transition(pos, action, wall_x, door_y, params)


def validate_params(params: Any) -> None:
    module_of(params).validate_params(params)


def sample_layout(key: jax.Array, params: Any):
    return module_of(params).sample_layout(key, params)


def sample_free_position(key, wall_x, params, side=None, margin: float = 1.0) -> jax.Array:
    return module_of(params).sample_free_position(key, wall_x, params, side, margin)


def render(state, params: Any) -> jax.Array:
    return module_of(params).render(state, params)


def render_positions(pos, wall_x, door_y, params: Any) -> jax.Array:
    return module_of(params).render_positions(pos, wall_x, door_y, params)
