"""The spatial level 2 of H-JEPA (jepa_jax.hierarchy_grid) and its planner."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax import hierarchy_grid as hg
from jepa_jax.envs import mazes
from jepa_jax.planning.hierarchical_grid import (
    abstract_actions,
    make_grid_hierarchical_planner,
)


def _numpy_propagate(occ, kernels, radius):
    g = occ.shape[-1]
    out = np.zeros_like(occ)
    for y in range(g):
        for x in range(g):
            for k, (dy, dx) in enumerate(hg.offsets(radius)):
                if 0 <= y + dy < g and 0 <= x + dx < g:
                    out[y + dy, x + dx] += occ[y, x] * kernels[y, x, k]
    return out


class TestGridOps:
    def test_offsets_row_major(self):
        assert hg.offsets(1) == ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1),
                                 (1, -1), (1, 0), (1, 1))

    def test_propagate_matches_numpy(self):
        rng = np.random.default_rng(0)
        occ = rng.random((5, 5)).astype(np.float32)
        kernels = rng.random((5, 5, 9)).astype(np.float32)
        kernels /= kernels.sum(-1, keepdims=True)
        out = hg.propagate(jnp.asarray(occ), jnp.asarray(kernels), 1)
        np.testing.assert_allclose(out, _numpy_propagate(occ, kernels, 1), rtol=1e-5)
        # Batched, and mass is conserved away from the border.
        inner = np.zeros((2, 5, 5), np.float32)
        inner[:, 2, 2] = 1.0
        out = hg.propagate(jnp.asarray(inner), jnp.asarray(kernels), 1)
        np.testing.assert_allclose(out.sum((-1, -2)), [1.0, 1.0], rtol=1e-5)

    def test_neighbours_matches_numpy(self):
        v = np.arange(16, dtype=np.float32).reshape(4, 4)
        nb = np.asarray(hg.neighbours(jnp.asarray(v), 1, -5.0))
        for y in range(4):
            for x in range(4):
                for k, (dy, dx) in enumerate(hg.offsets(1)):
                    inside = 0 <= y + dy < 4 and 0 <= x + dx < 4
                    assert nb[y, x, k] == (v[y + dy, x + dx] if inside else -5.0)

    def test_occupancy_and_corners(self):
        occ = hg.cell_occupancy(jnp.array([[2.7, 0.2], [9.0, -1.0]]), 4)
        assert occ.shape == (2, 4, 4)
        assert occ[0, 0, 2] == 1 and occ.sum() == 2
        assert occ[1, 0, 3] == 1  # clipped into the grid
        np.testing.assert_allclose(hg.expected_point(occ), [[2.0, 0.0], [3.0, 0.0]])
        walls = jnp.arange(9.0).reshape(3, 3)
        c = hg.corner_features(walls)
        np.testing.assert_array_equal(c[1, 0], [3.0, 4.0, 6.0, 7.0])

    def test_occupancy_loss_matches_numpy(self):
        rng = np.random.default_rng(1)
        pred = rng.random((3, 4, 4)).astype(np.float32)
        pred /= pred.sum((-1, -2), keepdims=True)
        target = np.zeros((3, 4, 4), np.float32)
        target[0, 1, 2] = target[1, 3, 3] = target[2, 0, 0] = 1.0
        loss, aux = hg.occupancy_loss(jnp.asarray(pred), jnp.asarray(target))
        want = np.mean([-np.log(pred[0, 1, 2] + 1e-6), -np.log(pred[1, 3, 3] + 1e-6),
                        -np.log(pred[2, 0, 0] + 1e-6)])
        np.testing.assert_allclose(float(loss), want, rtol=1e-5)
        assert abs(float(aux["target_entropy"])) < 1e-4
        with pytest.raises(ValueError, match="must both be"):
            hg.occupancy_loss(jnp.zeros((3, 4, 4)), jnp.zeros((3, 4, 5)))

    def test_value_iteration_is_shortest_path(self):
        """Deterministic kernels (one square per step in 4 directions, blocked by a wall
        with one gap) give the breadth-first distance of every square to the goal."""
        g = 5
        blocked = np.zeros((g, g), bool)
        blocked[2, :4] = True  # a wall across row 2 with a gap at column 4
        kernels = np.zeros((4, g, g, 9), np.float32)
        moves = [(0, 1), (0, -1), (1, 0), (-1, 0)]
        for a, (dy, dx) in enumerate(moves):
            for y in range(g):
                for x in range(g):
                    ny, nx = y + dy, x + dx
                    ok = 0 <= ny < g and 0 <= nx < g and not blocked[ny, nx]
                    kernels[a, y, x, hg.offsets(1).index((dy, dx) if ok else (0, 0))] = 1
        goal = np.zeros((g, g), np.float32)
        goal[4, 0] = 1.0
        v = np.asarray(hg.value_iteration(jnp.asarray(kernels), jnp.asarray(goal), 1, 30))
        dist = np.full((g, g), np.inf)
        dist[4, 0] = 0
        frontier = [(4, 0)]
        while frontier:
            nxt = []
            for y, x in frontier:
                for dy, dx in moves:
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < g and 0 <= nx < g and not blocked[ny, nx] \
                            and dist[ny, nx] == np.inf:
                        dist[ny, nx] = dist[y, x] + 1
                        nxt.append((ny, nx))
            frontier = nxt
        free = ~blocked
        np.testing.assert_allclose(v[free], dist[free])
        assert v[0, 0] == 12  # around the wall, not through it


@pytest.fixture(scope="module")
def tiny_grid(tiny_maze_models):
    from experiments.mazes import get_config

    assert get_config("tiny").level2.kind == "grid"  # the preset's default
    return tiny_maze_models("grid")


class TestGridLevel2:
    def test_reads_the_level1_embedding(self, tiny_grid):
        config, env, wm, l2, params = tiny_grid
        walls = mazes.make_layout(3, env)
        pos = jnp.array([7.2, 11.9])
        s1 = wm.encode(params["l1"], mazes.render(pos, walls, env))
        # The map samples are the wall image every map_stride pixels.
        img = np.asarray(mazes.render_walls(walls, env))
        s = config.model.map_stride
        np.testing.assert_array_equal(l2.wall_map(s1), img[::s, ::s])
        assert l2.grid == (env.img_size - 1) // s
        # The occupancy is the square of the level-1 keypoint's position.
        kp = np.asarray(l2.positions(s1))
        occ = np.asarray(l2.occupancy(l2.positions(s1)))
        assert occ.sum() == 1 and occ[int(kp[1] // s), int(kp[0] // s)] == 1
        assert l2.encode(params["l2"], s1).shape == (l2.grid ** 2 + (l2.grid + 1) ** 2,)
        with pytest.raises(ValueError, match="level 2 expects"):
            l2.positions(s1[:-1])

    def test_abstract_action_is_the_clipped_mean(self, tiny_grid):
        _, env, _, l2, _ = tiny_grid
        seg = np.zeros((l2.span, 2), np.float32)
        seg[0] = [3.0 * env.action_bound, 0.0]  # clipped to the bound
        seg[1] = [0.0, -0.5]
        u = np.asarray(l2.abstract_action(jnp.asarray(seg)))
        np.testing.assert_allclose(u, [1.0 / l2.span, -0.5 / env.action_bound / l2.span],
                                   rtol=1e-5)
        with pytest.raises(ValueError, match="segment actions"):
            l2.abstract_action(jnp.zeros((l2.span + 1, 2)))

    def test_kernels_objective_and_gradients(self, tiny_grid):
        _, _, wm, l2, params = tiny_grid
        walls = jnp.zeros((3, l2.grid + 1, l2.grid + 1))
        kern = l2.kernels(params["l2"], walls, jnp.zeros((3, 2)))
        assert kern.shape == (3, l2.grid, l2.grid, l2.num_offsets)
        np.testing.assert_allclose(kern.sum(-1), 1.0, rtol=1e-5)
        s1 = jax.random.uniform(jax.random.key(2), (4, wm.latent_dim)) * 3
        seg = jnp.ones((4, l2.span, 2))
        loss, aux = jax.jit(lambda p: hg.grid_level2_objective(l2, p, s1, seg, s1))(
            params["l2"])
        assert np.isfinite(float(loss)) and float(aux["position_error"]) >= 0
        grads = jax.grad(lambda p: hg.grid_level2_objective(l2, p, s1, seg, s1)[0])(
            params["l2"])
        assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
        with pytest.raises(ValueError, match="abstract action has dimension"):
            l2.kernels(params["l2"], walls, jnp.zeros((3, 3)))

    def test_bad_configs(self, tiny_grid):
        config, env, wm, _, _ = tiny_grid
        cfg = ml_collections.ConfigDict(config.level2.to_dict())
        obs = wm.obs_shape
        model = ml_collections.ConfigDict({**config.model.to_dict(), "map_stride": 0})
        with pytest.raises(ValueError, match="map_stride > 0"):
            hg.make_grid_level2(cfg, model, wm, obs, env.action_bound)
        model = ml_collections.ConfigDict({**config.model.to_dict(), "map_stride": 7})
        with pytest.raises(ValueError, match="multiple of map_stride"):
            hg.make_grid_level2(cfg, model, wm, obs, env.action_bound)
        cfg.span = 1
        with pytest.raises(ValueError, match="span k must be an integer >= 2"):
            hg.make_grid_level2(cfg, config.model, wm, obs, env.action_bound)


class TestGridPlanner:
    def test_plan_interface_jit_vmap_and_state(self, tiny_grid):
        config, env, wm, l2, params = tiny_grid
        pc = dict(config.planning.hierarchical_grid.to_dict(),
                  action_bound=env.action_bound, shift=2)
        planner = make_grid_hierarchical_planner(wm, l2, pc)
        walls = mazes.make_layout(0, env)
        obs = mazes.render(jnp.array([2.5, 2.5]), walls, env)
        goal = mazes.render(jnp.array([17.5, 17.5]), walls, env)
        state = planner.init_state(action_dim=2)
        plan = jax.jit(planner.plan)
        actions, info = plan(params, obs, goal, jax.random.key(0), state)
        h, m = pc["horizon"], pc["high_horizon"]
        assert actions.shape == (h, 2)
        assert float(jnp.linalg.norm(actions, axis=-1).max()) <= env.action_bound + 1e-5
        assert info["subgoals"].shape == (m, 2) and info["high_costs"].shape == (m,)
        assert jax.tree.map(jnp.shape, info["state"]) == jax.tree.map(jnp.shape, state)
        actions2, _ = plan(params, obs, goal, jax.random.key(1), info["state"])
        assert actions2.shape == (h, 2) and plan._cache_size() == 1
        batch = jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0))(
            params, jnp.stack([obs, goal]), jnp.stack([goal, obs]),
            jax.random.split(jax.random.key(2), 2), planner.init_state(2, (2,)))
        assert batch[0].shape == (2, h, 2)
        us = np.asarray(abstract_actions(4, (0.5, 0.25)))
        np.testing.assert_allclose(us[:4], [[0.5, 0], [0, 0.5], [-0.5, 0], [0, -0.5]],
                                   atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(us[4:], axis=-1), 0.25, rtol=1e-6)

    def test_bad_config(self, tiny_grid):
        _, _, wm, l2, _ = tiny_grid
        with pytest.raises(ValueError, match="unknown grid hierarchical planner config"):
            make_grid_hierarchical_planner(wm, l2, {"nope": 1})
        with pytest.raises(ValueError, match="vi_sweeps must be an integer >= 1"):
            make_grid_hierarchical_planner(wm, l2, {"vi_sweeps": 0})
        for bad in ((), (0.5, 1.5), "0.5"):
            with pytest.raises(ValueError, match="high_steps must be a non-empty list"):
                make_grid_hierarchical_planner(wm, l2, {"high_steps": bad})


def test_log_keypoint_is_subpixel():
    """keypoint_log_eps: the keypoint is the agent blob's sub-pixel centre; without it (at
    the low temperature the plain branch needs) it snaps to the nearest pixel."""
    from jepa_jax.networks.encoders import ConvEncoder

    env = mazes.MazeParams(grid=4, cell_px=6)
    walls = mazes.make_layout(0, env)
    pos = jnp.array([[7.3, 11.6], [15.45, 3.8], [20.1, 20.9]])
    obs = mazes.render_positions(pos, walls, env)

    def keypoints(eps, temperature):
        enc = ConvEncoder(stem_factor=2, channels=(4,), num_keypoints=1, global_dim=2,
                          keypoint_scale=1.0, keypoint_channels=(0,), keypoint_kernel=1,
                          init_temperature=temperature, keypoint_log_eps=eps)
        return np.asarray(enc.apply(enc.init(jax.random.key(0), obs), obs)[:, :2])

    np.testing.assert_allclose(keypoints(1e-6, 1.0), pos, atol=0.02)
    snapped = keypoints(0.0, 0.02)
    np.testing.assert_allclose(snapped, np.round(np.asarray(pos)), atol=0.15)
    assert np.abs(snapped - np.asarray(pos)).max() > 0.3
