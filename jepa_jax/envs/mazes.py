"""Mazes: a point agent in procedurally generated grid mazes (for H-JEPA, issue 5).

A maze is an ``n x n`` grid of square cells of ``cell_px`` pixels whose inner walls are cut
by a random spanning tree of the cells (randomised Prim), so every cell is reachable from
every other: a *perfect* maze, with a single corridor between any two cells. ``braid`` > 0
opens that fraction of the remaining inner walls too (loops). The layout is a pure function
of an integer **layout seed**; seeds ``[0, num_train_layouts)`` are the training layouts
and seeds from ``heldout_offset`` on are held out for evaluation.

The agent is a point ``(x, y)`` in pixels inside ``(0, n * cell_px)``; actions are 2-D
displacements clipped to ``action_bound`` (< ``cell_px``) in norm. As in Two-Rooms, a move
whose segment crosses a wall leaves the agent where it was.

A layout is one float32 array ``walls`` of shape ``(2, n + 1, n + 1)``:
``walls[0, r, k]`` is the vertical wall on the line ``x = k * cell_px`` in row ``r``
(``r < n``, ``k <= n``), ``walls[1, k, c]`` the horizontal wall on ``y = k * cell_px`` in
column ``c``; the border walls are always 1; the unused row / column is 0.

Functional, gymnax-style API; every function jits and vmaps::

    params = MazeParams()
    walls = layout(seed, params)                         # (2, n+1, n+1)
    pos = transition(pos, action, walls, params)         # (2,), (2,) -> (2,)
    obs = render(pos, walls, params)                     # (H, W, 2): agent, walls
    dist = cell_distances(walls, goal_cell, params)      # (n*n,) corridor distances

``make_layout`` / ``check_position`` are the validating, Python-level entry points: a layout
seed that cannot give a connected maze, or a goal inside a wall, is a one-line ValueError.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jepa_jax.envs.two_rooms import clip_action

AGENT_CHANNEL = 0
WALL_CHANNEL = 1
MAX_LAYOUT_SEED = 2**31 - 1


@struct.dataclass
class MazeParams:
    """Static description of the maze family.

    Attributes:
      grid: cells per side ``n`` (static: it sets array shapes).
      cell_px: side of a cell in pixels (static); the image is ``n * cell_px + 1`` wide.
      braid: fraction of the inner walls left by the spanning tree that are opened too.
      action_bound: actions are clipped to this norm (must be below ``cell_px``).
      dot_std: std in pixels of the Gaussian blob that draws the agent.
      num_train_layouts: seeds ``[0, num_train_layouts)`` are the training layouts.
      heldout_offset: seeds ``>= heldout_offset`` are held out (never seen in training).
      wall_clearance: a point this close (px) to a wall counts as inside it (goal check).
    """

    grid: int = struct.field(pytree_node=False, default=5)
    cell_px: int = struct.field(pytree_node=False, default=6)
    braid: float = 0.0
    action_bound: float = 1.2
    dot_std: float = 1.0
    num_train_layouts: int = struct.field(pytree_node=False, default=20)
    heldout_offset: int = struct.field(pytree_node=False, default=1_000_000)
    wall_clearance: float = 0.5

    @property
    def img_size(self) -> int:
        return self.grid * self.cell_px + 1

    @property
    def extent(self) -> float:
        """Side of the arena in pixels (positions lie in ``(0, extent)``)."""
        return float(self.grid * self.cell_px)


def validate_params(params: MazeParams) -> None:
    """Raises a one-line ValueError naming the first bad field (call before jit)."""
    if not isinstance(params.grid, int) or params.grid < 2:
        raise ValueError(f"MazeParams.grid must be an integer >= 2, got {params.grid!r}")
    if not isinstance(params.cell_px, int) or params.cell_px < 3:
        raise ValueError(f"MazeParams.cell_px must be an integer >= 3, got {params.cell_px!r}")
    if not 0 < params.action_bound < params.cell_px:
        raise ValueError(f"MazeParams.action_bound must lie in (0, cell_px={params.cell_px}), "
                         f"got {params.action_bound}")
    if not 0.0 <= params.braid <= 1.0:
        raise ValueError(f"MazeParams.braid must lie in [0, 1], got {params.braid}")
    if params.num_train_layouts < 1 or params.heldout_offset < params.num_train_layouts:
        raise ValueError(f"need 1 <= num_train_layouts ({params.num_train_layouts}) <= "
                         f"heldout_offset ({params.heldout_offset})")


# ------------------------------------------------------------------------------ generation


def _edges(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inner edges between neighbouring cells (cell id = r * n + c): endpoints a, b and the
    wall each one crosses as (orientation, i, j) indices into ``walls``."""
    a, b, wi = [], [], []
    for r in range(n):
        for c in range(n - 1):  # (r, c) - (r, c+1): vertical wall x = (c+1) in row r
            a.append(r * n + c)
            b.append(r * n + c + 1)
            wi.append((0, r, c + 1))
    for r in range(n - 1):
        for c in range(n):  # (r, c) - (r+1, c): horizontal wall y = (r+1) in column c
            a.append(r * n + c)
            b.append((r + 1) * n + c)
            wi.append((1, r + 1, c))
    wi = np.array(wi, np.int32)
    return np.array(a, np.int32), np.array(b, np.int32), wi[:, 0], wi[:, 1:]


def border_walls(n: int) -> np.ndarray:
    """(2, n+1, n+1) float32 with only the border walls."""
    w = np.zeros((2, n + 1, n + 1), np.float32)
    w[0, :n, 0] = w[0, :n, n] = 1.0
    w[1, 0, :n] = w[1, n, :n] = 1.0
    return w


def full_walls(n: int) -> np.ndarray:
    """(2, n+1, n+1): every inner wall closed (no two cells connected)."""
    w = border_walls(n)
    w[0, :n, 1:n] = 1.0
    w[1, 1:n, :n] = 1.0
    return w


def layout(seed: jax.Array | int, params: MazeParams) -> jax.Array:
    """The maze of layout ``seed`` (a traced or Python int): (2, n+1, n+1) float32.

    Randomised Prim: random edge weights; starting from cell 0, ``n*n - 1`` times add the
    lightest edge leaving the tree and open its wall. Jittable; no validation (see
    ``make_layout``).
    """
    n = params.grid
    a, b, orient, idx = _edges(n)
    a, b = jnp.asarray(a), jnp.asarray(b)
    key = jax.random.key(jnp.asarray(seed, jnp.uint32))
    k_w, k_braid = jax.random.split(key)
    weights = jax.random.uniform(k_w, (len(a),))

    def add_edge(_, carry):
        in_tree, opened = carry
        frontier = in_tree[a] != in_tree[b]
        e = jnp.argmin(jnp.where(frontier, weights, jnp.inf))
        in_tree = in_tree.at[a[e]].set(True).at[b[e]].set(True)
        return in_tree, opened.at[e].set(True)

    in_tree = jnp.zeros(n * n, bool).at[0].set(True)
    _, opened = jax.lax.fori_loop(0, n * n - 1, add_edge, (in_tree, jnp.zeros(len(a), bool)))
    opened = opened | (jax.random.uniform(k_braid, (len(a),)) < params.braid)
    walls = jnp.asarray(full_walls(n))
    return walls.at[orient, idx[:, 0], idx[:, 1]].set(jnp.where(opened, 0.0, 1.0))


def layouts(seeds: jax.Array, params: MazeParams) -> jax.Array:
    """(L,) seeds -> (L, 2, n+1, n+1) layouts."""
    return jax.vmap(lambda s: layout(s, params))(jnp.asarray(seeds))


def train_seeds(params: MazeParams, num: int | None = None) -> np.ndarray:
    """The first ``num`` (default all) training layout seeds."""
    num = params.num_train_layouts if num is None else num
    return np.arange(num, dtype=np.int32)


def heldout_seeds(params: MazeParams, num: int) -> np.ndarray:
    """``num`` held-out layout seeds (disjoint from every training seed)."""
    return params.heldout_offset + np.arange(num, dtype=np.int32)


def is_connected(walls: np.ndarray | jax.Array, n: int) -> bool:
    """True if every cell can reach cell 0 (breadth-first search on the open walls)."""
    w = np.asarray(walls)
    seen = np.zeros((n, n), bool)
    seen[0, 0] = True
    frontier = [(0, 0)]
    while frontier:
        r, c = frontier.pop()
        moves = ((r, c + 1, w[0, r, c + 1]), (r, c - 1, w[0, r, c]),
                 (r + 1, c, w[1, r + 1, c]), (r - 1, c, w[1, r, c]))
        for rr, cc, wall in moves:
            if 0 <= rr < n and 0 <= cc < n and wall < 0.5 and not seen[rr, cc]:
                seen[rr, cc] = True
                frontier.append((rr, cc))
    return bool(seen.all())


def make_layout(seed, params: MazeParams) -> jax.Array:
    """Validating ``layout``: a one-line ValueError for a seed that cannot give a maze."""
    validate_params(params)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"layout seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_LAYOUT_SEED:
        raise ValueError(f"layout seed {seed} cannot form a connected maze: seeds are "
                         f"integers in [0, {MAX_LAYOUT_SEED}]")
    walls = layout(int(seed), params)
    if not is_connected(walls, params.grid):  # cannot happen for a spanning tree: a guard
        raise ValueError(f"layout seed {seed} does not form a connected maze")
    return walls


def check_layout(walls, params: MazeParams) -> None:
    """One-line ValueError unless ``walls`` has the layout shape and is connected."""
    n = params.grid
    shape = tuple(np.shape(walls))
    if shape != (2, n + 1, n + 1):
        raise ValueError(f"maze layout has shape {shape}; expected (2, {n + 1}, {n + 1})")
    if not is_connected(walls, n):
        raise ValueError("maze layout is not connected: some cells cannot be reached")


# ------------------------------------------------------------------------------ dynamics


def cell_of(pos: jax.Array, params: MazeParams) -> jax.Array:
    """(..., 2) positions -> (..., 2) int32 ``(row, col)`` of their cells."""
    rc = jnp.floor(pos[..., ::-1] / params.cell_px).astype(jnp.int32)
    return jnp.clip(rc, 0, params.grid - 1)


def cell_centre(rc: jax.Array, params: MazeParams) -> jax.Array:
    """(..., 2) ``(row, col)`` -> (..., 2) ``(x, y)`` of the cell centres."""
    return (jnp.asarray(rc, jnp.float32)[..., ::-1] + 0.5) * params.cell_px


def _crosses(p, q, axis: int, walls, params: MazeParams) -> jax.Array:
    """True if p -> q crosses a present wall on a grid line perpendicular to ``axis``."""
    n, cell = params.grid, params.cell_px
    ip = jnp.floor(p[axis] / cell).astype(jnp.int32)
    iq = jnp.floor(q[axis] / cell).astype(jnp.int32)
    k = jnp.clip(jnp.maximum(ip, iq), 0, n)  # the line between the two cells
    d = q[axis] - p[axis]
    t = (k * cell - p[axis]) / jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)
    other = p[1 - axis] + jnp.clip(t, 0.0, 1.0) * (q[1 - axis] - p[1 - axis])
    j = jnp.clip(jnp.floor(other / cell).astype(jnp.int32), 0, n - 1)
    wall = walls[0, j, k] if axis == 0 else walls[1, k, j]
    return (ip != iq) & (wall > 0.5)


def transition(pos: jax.Array, action: jax.Array, walls: jax.Array,
               params: MazeParams) -> jax.Array:
    """Next position: ``pos + clip(action)``, or ``pos`` if the move crosses a wall."""
    q = pos + clip_action(action, params.action_bound)
    blocked = _crosses(pos, q, 0, walls, params) | _crosses(pos, q, 1, walls, params)
    return jnp.where(blocked, pos, q)


def step(key: jax.Array, pos: jax.Array, action: jax.Array, walls: jax.Array,
         params: MazeParams) -> jax.Array:
    """Gymnax-style step (``key`` unused: the world is deterministic)."""
    del key
    chex.assert_shape(action, (2,))
    return transition(pos, action.astype(jnp.float32), walls, params)


def cell_distances(walls: jax.Array, goal_cell: jax.Array, params: MazeParams) -> jax.Array:
    """(n*n,) corridor distance in cells from every cell to ``goal_cell`` ((row, col))."""
    n = params.grid
    r, c = np.divmod(np.arange(n * n), n)
    nbr = np.stack([r * n + np.minimum(c + 1, n - 1), r * n + np.maximum(c - 1, 0),
                    np.minimum(r + 1, n - 1) * n + c, np.maximum(r - 1, 0) * n + c], -1)
    inside = np.stack([c + 1 < n, c > 0, r + 1 < n, r > 0], -1)
    open_ = jnp.stack([walls[0, r, c + 1] < 0.5, walls[0, r, c] < 0.5,
                       walls[1, np.minimum(r + 1, n), c] < 0.5, walls[1, r, c] < 0.5], -1)
    open_ = open_ & inside
    goal = goal_cell[0] * n + goal_cell[1]
    d0 = jnp.where(jnp.arange(n * n) == goal, 0.0, jnp.inf)

    def relax(_, d):
        via = jnp.where(open_, d[nbr] + 1.0, jnp.inf)
        return jnp.minimum(d, via.min(-1))

    return jax.lax.fori_loop(0, n * n, relax, d0)


def in_wall(pos: jax.Array, walls: jax.Array, params: MazeParams) -> jax.Array:
    """True where a position is outside the arena or within ``wall_clearance`` of a wall."""
    cell, e, m = params.cell_px, params.extent, params.wall_clearance
    outside = jnp.any((pos <= m) | (pos >= e - m), axis=-1)
    rc = cell_of(pos, params)
    x, y = pos[..., 0], pos[..., 1]
    fx, fy = x - rc[..., 1] * cell, y - rc[..., 0] * cell  # offsets inside the cell
    r, c = rc[..., 0], rc[..., 1]
    near = ((fx <= m) & (walls[0, r, c] > 0.5)) | ((fx >= cell - m) & (walls[0, r, c + 1] > 0.5))
    near |= ((fy <= m) & (walls[1, r, c] > 0.5)) | ((fy >= cell - m) & (walls[1, r + 1, c] > 0.5))
    # Wall posts at the corners of every cell.
    near |= ((fx <= m) | (fx >= cell - m)) & ((fy <= m) | (fy >= cell - m))
    return outside | near


def check_position(pos, walls, params: MazeParams, name: str = "goal") -> None:
    """One-line ValueError if ``pos`` (2,) is outside the arena or inside a wall."""
    p = np.asarray(pos, np.float32)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be a finite (x, y) position, got {pos!r}")
    if bool(in_wall(jnp.asarray(p), jnp.asarray(walls), params)):
        raise ValueError(f"{name} {tuple(float(v) for v in p)} lies in a wall or outside the "
                         f"maze (open interior is (0, {params.extent}) minus walls)")


# ------------------------------------------------------------------------------ rendering


def _wall_pixel_index(params: MazeParams):
    """Static gather indices: for every pixel, which wall entries make it a wall pixel."""
    n, cell, size = params.grid, params.cell_px, params.img_size
    g = np.arange(size)
    on_line = g % cell == 0
    line = np.minimum(g // cell, n)
    seg = np.minimum(g // cell, n - 1)
    return on_line, line, seg


def render_walls(walls: jax.Array, params: MazeParams) -> jax.Array:
    """(H, W) float32 image of the walls (1 = wall), posts at every grid corner."""
    on_line, line, seg = _wall_pixel_index(params)
    ys, xs = np.meshgrid(np.arange(params.img_size), np.arange(params.img_size), indexing="ij")
    vert = on_line[xs] & (walls[0, seg[ys], line[xs]] > 0.5)
    horiz = on_line[ys] & (walls[1, line[ys], seg[xs]] > 0.5)
    posts = on_line[xs] & on_line[ys]
    return (vert | horiz | posts).astype(jnp.float32)


def render_agent(pos: jax.Array, params: MazeParams) -> jax.Array:
    """(H, W) float32 Gaussian blob of std ``dot_std`` at ``pos`` (peak 1)."""
    g = jnp.arange(params.img_size, dtype=jnp.float32)
    gx = jnp.exp(-((g - pos[0]) ** 2) / (2 * params.dot_std**2))
    gy = jnp.exp(-((g - pos[1]) ** 2) / (2 * params.dot_std**2))
    return gy[:, None] * gx[None, :]


def render(pos: jax.Array, walls: jax.Array, params: MazeParams) -> jax.Array:
    """(H, W, 2) float32 observation: agent in channel 0, walls in channel 1."""
    return jnp.stack([render_agent(pos, params), render_walls(walls, params)], -1)


def render_positions(pos: jax.Array, walls: jax.Array, params: MazeParams) -> jax.Array:
    """Renders a batch: ``pos`` (..., 2), ``walls`` (..., 2, n+1, n+1) -> (..., H, W, 2)."""
    batch = pos.shape[:-1]
    walls = jnp.broadcast_to(walls, (*batch, *walls.shape[-3:]))
    flat = jax.vmap(lambda p, w: render(p, w, params))(
        pos.reshape(-1, 2), walls.reshape(-1, *walls.shape[-3:]))
    return flat.reshape(*batch, params.img_size, params.img_size, 2)


# ------------------------------------------------------------------------------ problems


def sample_free_position(key: jax.Array, walls: jax.Array, params: MazeParams,
                         jitter: float = 0.25) -> jax.Array:
    """A position near the centre of a uniformly drawn cell (``jitter`` x cell_px)."""
    del walls  # every cell is open space
    k_cell, k_off = jax.random.split(key)
    rc = jax.random.randint(k_cell, (2,), 0, params.grid)
    off = jax.random.uniform(k_off, (2,), minval=-jitter, maxval=jitter) * params.cell_px
    return cell_centre(rc, params) + off


def sample_start_goal(key: jax.Array, walls: jax.Array, params: MazeParams,
                      min_cells: int, jitter: float = 0.25,
                      max_cells: int = 0) -> tuple[jax.Array, jax.Array]:
    """Start and goal positions whose cells are at least ``min_cells`` (and, if
    ``max_cells`` > 0, at most ``max_cells``) apart along the corridors (if no cell
    qualifies: the farthest cell from the goal)."""
    n = params.grid
    k_goal, k_start, k_j1, k_j2 = jax.random.split(key, 4)
    goal_cell = jax.random.randint(k_goal, (2,), 0, n)
    dist = cell_distances(walls, goal_cell, params)
    ok = dist >= min_cells
    if max_cells:
        ok &= dist <= max_cells
    prio = jax.random.uniform(k_start, (n * n,)) + jnp.where(ok, 2.0, 0.0) + dist / (4 * n * n)
    start_id = jnp.argmax(prio)
    start_cell = jnp.stack([start_id // n, start_id % n])
    j1 = jax.random.uniform(k_j1, (2,), minval=-jitter, maxval=jitter) * params.cell_px
    j2 = jax.random.uniform(k_j2, (2,), minval=-jitter, maxval=jitter) * params.cell_px
    return cell_centre(start_cell, params) + j1, cell_centre(goal_cell, params) + j2
