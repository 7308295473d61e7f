"""A spatial level 2 for H-JEPA: where the agent will be k steps ahead, on a coarse grid.

The MLP level 2 (:mod:`jepa_jax.hierarchy`) had to learn, in one dense network, how the
maze's walls gate movement at every position; it did not, and its subgoals ran through
walls (README, "H-JEPA on mazes"). This level 2 keeps the same role (an abstract state, an
abstract action summarising k level-1 steps, a predictor k steps ahead) but gives the state
a spatial form, so that one *local* rule, shared by every position, is learned:

* **abstract state** ``s2 = (occupancy, walls)``: ``walls`` is the level-1 encoder's coarse
  wall map (``(G+1) x (G+1)`` samples, ``map_stride`` px apart) and ``occupancy`` a one-hot
  over the ``G x G`` squares between those samples: the square that holds the agent
  keypoint of the level-1 embedding (first two dims x ``keypoint_scale`` = pixels). Walls
  lie on sample lines, never inside a square, so a square never straddles a wall (an
  occupancy spread bilinearly over the samples themselves leaked through walls in value
  iteration, measured). Both
  are read from the level-1 embedding with no parameters, so this state cannot collapse
  and needs no VICReg terms.
* **abstract action** ``u`` (2 numbers): the mean of the segment's k actions over the action
  bound, the intended displacement per step (inferred from the segment it summarises).
* **predictor**: a conv net reads the wall samples at each square's corners and ``u`` and
  gives, for every square x, a distribution over the ``(2R+1)^2`` offsets of the square
  where an agent in x is k steps later; the next occupancy is the current one moved along
  those kernels (:func:`propagate`). Because
  the net is convolutional, what it learns about walls holds in every layout.

Trained (:func:`grid_level2_objective`) by the cross-entropy of the predicted occupancy
against the occupancy encoded from the embedding k steps later (:func:`occupancy_loss`, a
pure function). Planning (:mod:`jepa_jax.planning.hierarchical_grid`) uses the predictor's
kernels for value iteration over the grid: the cost-to-go in abstract steps, from which the
subgoals follow. ::

    l2 = make_grid_level2(config.level2, config.model, wm, obs_shape, action_bound)
    params2 = l2.init(key)
    occ, walls = l2.occupancy(l2.positions(s1)), l2.wall_map(s1)     # (..., G, G), (G+1, G+1)
    kernels = l2.kernels(params2, walls, u)                           # (..., G, G, K)
    occ_next = propagate(occ, kernels, l2.radius)                     # (..., G, G)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from jepa_jax.hierarchy import check_span, raw_pixel_dims
from jepa_jax.networks.activations import gelu

Params = Any


class KernelNet(nn.Module):
    """Corner features (N, G, G, 4) and abstract action (N, 2) -> transition logits
    (N, G, G, K): 'SAME' 3x3 convolutions over [corners, u broadcast to every square]."""

    hidden: Sequence[int] = (32, 32, 32, 32, 32)
    num_offsets: int = 81

    @nn.compact
    def __call__(self, corners: jax.Array, u: jax.Array) -> jax.Array:
        ub = jnp.broadcast_to(u[..., None, None, :], (*corners.shape[:-1], u.shape[-1]))
        x = jnp.concatenate([corners, ub], -1)
        # The arena's outer walls are on the map's border rows and columns, so zero
        # padding ('SAME') does not hide them.
        for width in self.hidden:
            x = gelu(nn.Conv(width, (3, 3), padding="SAME")(x))
        return nn.Conv(self.num_offsets, (1, 1))(x)


def offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """The (dy, dx) grid offsets of the kernels, row-major over [-R, R]^2."""
    r = range(-radius, radius + 1)
    return tuple((dy, dx) for dy in r for dx in r)


@functools.cache
def _scatter_matrix(grid: int, radius: int) -> np.ndarray:
    """(G*G*K, G*G) one-hot: row (y, x, k) has its 1 at the grid point ``(y, x) + offset_k``
    (an all-zero row if that point is off the grid)."""
    g = grid
    m = np.zeros((g, g, (2 * radius + 1) ** 2, g * g), np.float32)
    for k, (dy, dx) in enumerate(offsets(radius)):
        for y in range(g):
            for x in range(g):
                if 0 <= y + dy < g and 0 <= x + dx < g:
                    m[y, x, k, (y + dy) * g + x + dx] = 1.0
    return m.reshape(g * g * (2 * radius + 1) ** 2, g * g)


def propagate(occupancy: jax.Array, kernels: jax.Array, radius: int) -> jax.Array:
    """Moves probability mass along transition kernels.

    ``out[y + dy, x + dx] = sum occupancy[y, x] * kernels[y, x, k]`` over the offsets
    ``k = (dy, dx)`` of :func:`offsets`; mass moved off the grid is dropped.

    Args:
      occupancy: (..., G, G) probability mass over the grid.
      kernels: (..., G, G, K) with K = (2R+1)^2, each row a distribution over offsets.
      radius: R.

    Returns:
      (..., G, G).
    """
    g = occupancy.shape[-1]
    mass = occupancy[..., None] * kernels
    # One matmul with a constant one-hot matrix: on CPU far faster than K shifted adds
    # (measured: 8x for the training step).
    scatter = jnp.asarray(_scatter_matrix(g, radius), mass.dtype)
    out = mass.reshape(*mass.shape[:-3], -1) @ scatter
    return out.reshape(*mass.shape[:-3], g, g)


def neighbours(values: jax.Array, radius: int, fill: float) -> jax.Array:
    """(..., G, G) -> (..., G, G, K): ``values[y + dy, x + dx]`` for every offset, ``fill``
    off the grid (the gather that :func:`propagate` scatters)."""
    g = values.shape[-1]
    scatter = jnp.asarray(_scatter_matrix(g, radius), values.dtype)
    out = values.reshape(*values.shape[:-2], g * g) @ scatter.T
    out = out + fill * (1.0 - jnp.sum(scatter, -1))
    return out.reshape(*values.shape[:-2], g, g, (2 * radius + 1) ** 2)


def cell_occupancy(points: jax.Array, grid: int) -> jax.Array:
    """One-hot occupancy: (..., 2) points as (x, y) in units of the grid spacing -> (..., G, G)
    with its 1 at the grid square that contains the point (points are clipped in)."""
    idx = jnp.clip(jnp.floor(points), 0, grid - 1).astype(jnp.int32)
    ax = jnp.arange(grid)
    return ((ax[:, None] == idx[..., 1, None, None]) & (ax[None, :] == idx[..., 0, None, None])
            ).astype(jnp.float32)


def corner_features(walls: jax.Array) -> jax.Array:
    """(..., G+1, G+1) map samples -> (..., G, G, 4): the four samples at each square's
    corners (top-left, top-right, bottom-left, bottom-right)."""
    return jnp.stack([walls[..., :-1, :-1], walls[..., :-1, 1:], walls[..., 1:, :-1],
                      walls[..., 1:, 1:]], -1)


def expected_point(occupancy: jax.Array) -> jax.Array:
    """(..., G, G) -> (..., 2) mean (x, y) square indices under the occupancy."""
    g = occupancy.shape[-1]
    idx = jnp.arange(g, dtype=occupancy.dtype)
    total = jnp.sum(occupancy, (-1, -2))
    x = jnp.sum(occupancy * idx[None, :], (-1, -2)) / total
    y = jnp.sum(occupancy * idx[:, None], (-1, -2)) / total
    return jnp.stack([x, y], -1)


def occupancy_loss(predicted: jax.Array, target: jax.Array, eps: float = 1e-6
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of predicted occupancies against target occupancies.

    ``mean_b( -sum_{y,x} target[b, y, x] * log(predicted[b, y, x] + eps) )``.

    Args:
      predicted: (B, G, G) distributions (the predictor's output).
      target: (B, G, G) distributions (encoded from the embedding k steps later).

    Returns:
      ``(loss, aux)``: ``cross_entropy`` (= loss), ``target_entropy`` (the loss's floor),
      ``position_error`` (mean distance between the two distributions' means, grid units).
    """
    predicted, target = jnp.asarray(predicted), jnp.asarray(target)
    if predicted.shape != target.shape or predicted.ndim < 3:
        raise ValueError(f"predicted {predicted.shape} and target {target.shape} must both "
                         f"be (B, G, G)")
    ce = -jnp.sum(target * jnp.log(predicted + eps), (-1, -2))
    ent = -jnp.sum(target * jnp.log(target + eps), (-1, -2))
    err = jnp.linalg.norm(expected_point(predicted) - expected_point(target), axis=-1)
    loss = jnp.mean(ce)
    return loss, {"cross_entropy": loss, "target_entropy": jnp.mean(ent),
                  "position_error": jnp.mean(err)}


@struct.dataclass
class GridLevel2:
    """Geometry and predictor of the spatial level 2 (static); see the module docstring."""

    net: nn.Module = struct.field(pytree_node=False)
    span: int = struct.field(pytree_node=False)  # k level-1 steps per abstract step
    grid: int = struct.field(pytree_node=False)  # G squares per side (G+1 map samples)
    radius: int = struct.field(pytree_node=False)  # R: the farthest move, in squares
    stride: int = struct.field(pytree_node=False)  # px per square (the map's stride)
    keypoint_scale: float = struct.field(pytree_node=False)
    map_start: int = struct.field(pytree_node=False)  # level-1 dims of the wall map
    input_dim: int = struct.field(pytree_node=False)  # D1
    low_action_dim: int = struct.field(pytree_node=False)
    action_bound: float = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False, default=2)
    kind: str = struct.field(pytree_node=False, default="grid")

    @property
    def num_offsets(self) -> int:
        return (2 * self.radius + 1) ** 2

    def init(self, key: jax.Array) -> Params:
        g = self.grid
        return {"kernels": self.net.init(key, jnp.zeros((1, g, g, 4)), jnp.zeros((1, 2)))}

    def _check(self, s1: jax.Array) -> None:
        if s1.shape[-1] != self.input_dim:
            raise ValueError(f"level-1 embedding has dimension {s1.shape[-1]}, level 2 "
                             f"expects {self.input_dim}")

    def positions(self, s1: jax.Array) -> jax.Array:
        """(..., D1) -> (..., 2) the agent keypoint in pixels (x, y)."""
        self._check(s1)
        return s1[..., :2] * self.keypoint_scale

    def wall_map(self, s1: jax.Array) -> jax.Array:
        """(..., D1) -> (..., G+1, G+1) the level-1 embedding's raw wall map."""
        self._check(s1)
        m = self.grid + 1
        return s1[..., self.map_start:self.map_start + m * m].reshape(*s1.shape[:-1], m, m)

    def occupancy(self, positions: jax.Array) -> jax.Array:
        """(..., 2) pixel positions -> (..., G, G) one-hot: the square that holds them."""
        return cell_occupancy(positions / self.stride, self.grid)

    def to_pixels(self, occupancy: jax.Array) -> jax.Array:
        """(..., G, G) -> (..., 2) the occupancy's mean position in pixels (square centres)."""
        return (expected_point(occupancy) + 0.5) * self.stride

    def encode(self, params: Params, s1: jax.Array) -> jax.Array:
        """(..., D1) -> (..., G^2 + (G+1)^2): the abstract state [occupancy, walls]."""
        del params
        occ, walls = self.occupancy(self.positions(s1)), self.wall_map(s1)
        return jnp.concatenate([occ.reshape(*occ.shape[:-2], -1),
                                walls.reshape(*walls.shape[:-2], -1)], -1)

    def abstract_action(self, seg_actions: jax.Array) -> jax.Array:
        """(..., k, A) level-1 actions -> (..., 2): their mean over the action bound."""
        if seg_actions.shape[-2:] != (self.span, self.low_action_dim):
            raise ValueError(f"segment actions have shape {tuple(seg_actions.shape)}; "
                             f"expected (..., k={self.span}, {self.low_action_dim})")
        norm = jnp.linalg.norm(seg_actions, axis=-1, keepdims=True)
        clipped = seg_actions * jnp.minimum(1.0, self.action_bound / jnp.maximum(norm, 1e-9))
        return jnp.mean(clipped, -2) / self.action_bound

    def kernels(self, params: Params, walls: jax.Array, u: jax.Array) -> jax.Array:
        """Transition kernels: walls (..., G+1, G+1), u (..., 2) -> (..., G, G, K)."""
        if u.shape[-1] != self.action_dim:
            raise ValueError(f"abstract action has dimension {u.shape[-1]}, level 2 has "
                             f"{self.action_dim}")
        batch = jnp.broadcast_shapes(walls.shape[:-2], u.shape[:-1])
        g = self.grid
        w = jnp.broadcast_to(walls, (*batch, g + 1, g + 1)).reshape(-1, g + 1, g + 1)
        w = corner_features(w)
        uu = jnp.broadcast_to(u, (*batch, 2)).reshape(-1, 2)
        logits = self.net.apply(params["kernels"], w, uu)
        return jax.nn.softmax(logits, -1).reshape(*batch, g, g, self.num_offsets)

    def predict(self, params: Params, occupancy: jax.Array, walls: jax.Array,
                u: jax.Array) -> jax.Array:
        """One abstract step: occupancy (..., G, G) -> (..., G, G)."""
        return propagate(occupancy, self.kernels(params, walls, u), self.radius)


def make_grid_level2(cfg: ml_collections.ConfigDict, model_cfg: ml_collections.ConfigDict,
                     wm: Any, obs_shape: tuple[int, ...], action_bound: float) -> GridLevel2:
    """Builds the spatial level 2 from ``config.level2`` (``span``, ``grid_hidden``) on a
    level-1 conv encoder with a keypoint and a wall map (``map_stride > 0``)."""
    k = check_span(cfg.span)
    stride = int(model_cfg.get("map_stride", 0))
    if model_cfg.get("encoder") != "conv" or stride < 1 or model_cfg.get("latent_dim", 0):
        raise ValueError("level2.kind='grid' needs a conv level-1 encoder with map_stride > 0 "
                         "and latent_dim = 0 (its wall map is the abstract state's layout)")
    if len(model_cfg.get("glimpse_channels", (1,))) != 1:
        raise ValueError("level2.kind='grid' needs exactly one glimpse_channels entry (the "
                         "wall channel)")
    m = -(-obs_shape[0] // stride)  # map samples per side, at pixels 0, s, 2s, ...
    if (obs_shape[0] - 1) % stride or obs_shape[0] != obs_shape[1]:
        raise ValueError(f"level2.kind='grid' needs a square image whose side - 1 is a "
                         f"multiple of map_stride ({stride}), got {obs_shape[:2]}")
    _, stop = raw_pixel_dims(model_cfg, obs_shape)
    radius = max(1, math.ceil(k * action_bound / stride))
    net = KernelNet(hidden=tuple(cfg.get("grid_hidden", (32,) * 5)),
                    num_offsets=(2 * radius + 1) ** 2)
    return GridLevel2(net=net, span=k, grid=m - 1, radius=radius, stride=stride,
                      keypoint_scale=float(model_cfg.keypoint_scale), map_start=stop - m * m,
                      input_dim=wm.latent_dim, low_action_dim=wm.action_dim,
                      action_bound=float(action_bound))


def grid_level2_objective(l2: GridLevel2, params2: Params, s1: jax.Array,
                          seg_actions: jax.Array, s1_next: jax.Array
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss on level-1 embeddings (held fixed): ``s1`` (B, D1) at t, ``seg_actions``
    (B, k, A) the actions t .. t+k-1, ``s1_next`` (B, D1) at t+k.

    The occupancy at t is moved by the kernels of (walls, u) and scored against the
    occupancy at t+k with :func:`occupancy_loss`; ``position_error`` is in pixels."""
    s1, s1_next = jax.lax.stop_gradient(s1), jax.lax.stop_gradient(s1_next)
    occ = l2.occupancy(l2.positions(s1))
    target = l2.occupancy(l2.positions(s1_next))
    u = l2.abstract_action(seg_actions)
    pred = l2.predict(params2, occ, l2.wall_map(s1), u)
    loss, aux = occupancy_loss(pred, target)
    aux["position_error"] = aux["position_error"] * l2.stride
    aux["loss"] = loss
    return loss, aux


def value_iteration(kernels: jax.Array, goal: jax.Array, radius: int, sweeps: int
                    ) -> jax.Array:
    """Expected number of abstract steps to the goal, by value iteration over the grid.

    ``V(x) = (1 - goal(x)) * min_a sum_k kernels[a, x, k] * (1 + V(x + offset_k))``, from
    ``V = 0``, ``sweeps`` times (exact for paths up to that many abstract steps); mass moved
    off the grid costs ``sweeps``.

    Args:
      kernels: (A, G, G, K) transition kernels of the A candidate abstract actions.
      goal: (G, G) in [0, 1]: 1 where reaching is done.
      radius: R of the kernels.
      sweeps: number of Bellman sweeps.

    Returns:
      (G, G) values.
    """
    def sweep(v, _):
        nb = neighbours(v, radius, float(sweeps))  # (G, G, K)
        q = jnp.sum(kernels * (1.0 + nb[None]), -1)  # (A, G, G)
        return (1.0 - goal) * jnp.min(q, 0), None

    v, _ = jax.lax.scan(sweep, jnp.zeros(goal.shape, kernels.dtype), None, length=sweeps)
    return v
