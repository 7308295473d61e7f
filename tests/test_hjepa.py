"""H-JEPA on mazes (issue 5): the maze family, the level-2 model, the hierarchical planner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.data import mazes as maze_data
from jepa_jax.envs import mazes

P = mazes.MazeParams(grid=4, cell_px=5, action_bound=1.0, num_train_layouts=5)


class TestMazeEnv:
    def test_layouts_connected_and_distinct(self):
        walls = mazes.layouts(jnp.arange(20), P)
        assert walls.shape == (20, 2, 5, 5)
        assert all(mazes.is_connected(w, P.grid) for w in walls)
        # A spanning tree of 16 cells opens 15 of the 24 inner walls.
        inner = np.asarray(walls[:, 0, :4, 1:4]).sum((1, 2)) + np.asarray(
            walls[:, 1, 1:4, :4]).sum((1, 2))
        np.testing.assert_array_equal(inner, 24 - 15)
        assert len({np.asarray(w).tobytes() for w in walls}) > 15
        np.testing.assert_array_equal(mazes.make_layout(3, P), walls[3])

    def test_train_and_heldout_seeds_disjoint(self):
        assert not set(mazes.train_seeds(P)) & set(mazes.heldout_seeds(P, 50))

    def test_bad_layout_seed(self):
        with pytest.raises(ValueError, match="cannot form a connected maze"):
            mazes.make_layout(-1, P)
        with pytest.raises(ValueError, match="must be an integer"):
            mazes.make_layout(1.5, P)
        with pytest.raises(ValueError, match="not connected"):
            mazes.check_layout(mazes.full_walls(P.grid), P)

    def test_bad_params(self):
        with pytest.raises(ValueError, match="action_bound"):
            mazes.validate_params(mazes.MazeParams(cell_px=5, action_bound=6.0))
        with pytest.raises(ValueError, match="grid"):
            mazes.validate_params(mazes.MazeParams(grid=1))

    def test_walls_block_and_corridors_open(self):
        w = jnp.asarray(mazes.border_walls(P.grid)).at[0, 0, 1].set(1.0)  # wall x=5, row 0
        p = jnp.array([4.5, 2.5])
        np.testing.assert_allclose(mazes.transition(p, jnp.array([1.0, 0.0]), w, P), p)
        p2 = jnp.array([4.5, 7.5])  # row 1: open
        np.testing.assert_allclose(mazes.transition(p2, jnp.array([1.0, 0.0]), w, P),
                                   [5.5, 7.5])
        edge = jnp.array([0.5, 0.5])  # the border
        np.testing.assert_allclose(mazes.transition(edge, jnp.array([-1.0, 0.0]), w, P), edge)
        # Actions are clipped to the bound.
        out = mazes.transition(p2, jnp.array([0.0, 10.0]), w, P)
        np.testing.assert_allclose(out, [4.5, 8.5], atol=1e-6)

    def test_render_shapes_and_channels(self):
        w = mazes.make_layout(0, P)
        obs = mazes.render(jnp.array([7.0, 8.0]), w, P)
        assert obs.shape == (P.img_size, P.img_size, 2) == (21, 21, 2)
        assert float(obs[8, 7, mazes.AGENT_CHANNEL]) == pytest.approx(1.0)  # row = y
        walls_img = np.asarray(obs[..., mazes.WALL_CHANNEL])
        assert walls_img[0].all() and walls_img[:, 0].all() and walls_img[6:10, 7].sum() == 0
        batch = mazes.render_positions(jnp.zeros((3, 4, 2)) + 7.5, w, P)
        assert batch.shape == (3, 4, 21, 21, 2)

    def test_cell_distances_and_long_pairs(self):
        w = mazes.make_layout(1, P)
        d = np.asarray(mazes.cell_distances(w, jnp.array([0, 0]), P))
        assert d[0] == 0 and np.isfinite(d).all() and d.max() >= 4
        start, goal = mazes.sample_start_goal(jax.random.key(0), w, P, min_cells=4)
        d = mazes.cell_distances(w, mazes.cell_of(goal, P), P)
        rc = mazes.cell_of(start, P)
        assert float(d[rc[0] * P.grid + rc[1]]) >= 4

    def test_goal_in_wall(self):
        w = mazes.make_layout(0, P)
        mazes.check_position(jnp.array([7.5, 7.5]), w, P)
        with pytest.raises(ValueError, match="lies in a wall"):
            mazes.check_position(jnp.array([5.0, 5.2]), w, P)  # a wall post
        with pytest.raises(ValueError, match="lies in a wall"):
            mazes.check_position(jnp.array([-3.0, 7.5]), w, P)


class TestMazeData:
    def test_generate_and_batch(self):
        trajs = maze_data.generate(jax.random.key(0), 8, 9, P, mazes.train_seeds(P))
        assert trajs.pos.shape == (8, 9, 2) and trajs.actions.shape == (8, 8, 2)
        assert set(np.asarray(trajs.seed)) <= set(range(5))
        # Positions follow the dynamics exactly.
        for i in range(2):
            p = trajs.pos[i, 0]
            for t in range(8):
                p = mazes.transition(p, trajs.actions[i, t], trajs.walls[i], P)
                np.testing.assert_allclose(p, trajs.pos[i, t + 1], atol=1e-5)
        batch = maze_data.get_batch(trajs, jnp.arange(4), P, start=2, length=5)
        assert batch.obs.shape == (4, 5, 21, 21, 2) and batch.actions.shape == (4, 4, 2)
        with pytest.raises(ValueError, match="length >= 2"):
            maze_data.generate(jax.random.key(0), 8, 1, P, [0])
