"""H-JEPA on mazes (issue 5): the maze family, the level-2 model, the hierarchical planner."""

import jax
import jax.numpy as jnp
import ml_collections
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
        start, goal = mazes.sample_start_goal(jax.random.key(1), w, P, 1, max_cells=1)
        d = mazes.cell_distances(w, mazes.cell_of(goal, P), P)
        rc = mazes.cell_of(start, P)
        assert float(d[rc[0] * P.grid + rc[1]]) == 1

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


# ------------------------------------------------------------------------- level 2 and planning

from jepa_jax import hierarchy  # noqa: E402
from jepa_jax.planning.hierarchical import make_hierarchical_planner  # noqa: E402


def _np_level2_loss(pred, emb, mean, log_var, sim, std, cov, kl):
    inv = np.mean((pred - emb[:, 1:]) ** 2)
    var_terms, cov_terms = [], []
    for t in range(emb.shape[1]):
        x = emb[:, t]
        s = np.sqrt(x.var(0, ddof=1) + 1e-4)
        var_terms.append(np.mean(np.maximum(0.0, 1.0 - s)))
        xc = x - x.mean(0)
        c = xc.T @ xc / (x.shape[0] - 1)
        off = c - np.diag(np.diag(c))
        cov_terms.append((off**2).sum() / x.shape[1])
    kl_term = np.mean(0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, -1))
    return sim * inv + std * np.mean(var_terms) + cov * np.mean(cov_terms) + kl * kl_term


class TestLevel2Loss:
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(6, 4, 5)).astype(np.float32) * 0.7
        pred = rng.normal(size=(6, 3, 5)).astype(np.float32)
        mean = rng.normal(size=(6, 3, 2)).astype(np.float32)
        log_var = rng.normal(size=(6, 3, 2)).astype(np.float32) * 0.3
        coeffs = dict(sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5, kl_coeff=0.1)
        loss, aux = jax.jit(lambda *a: hierarchy.level2_loss(*a, **coeffs))(
            pred, emb, mean, log_var)
        expected = _np_level2_loss(pred, emb, mean, log_var, 2.0, 3.0, 0.5, 0.1)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
        assert set(aux) >= {"invariance", "variance", "covariance", "action_kl"}

    def test_shape_errors(self):
        emb = jnp.zeros((4, 3, 5))
        with pytest.raises(ValueError, match="abstract actions must have shape"):
            hierarchy.level2_loss(jnp.zeros((4, 2, 5)), emb, jnp.zeros((4, 3, 2)),
                                  jnp.zeros((4, 3, 2)))
        with pytest.raises(ValueError, match="same shape"):
            hierarchy.level2_loss(jnp.zeros((4, 2, 5)), emb, jnp.zeros((4, 2, 2)),
                                  jnp.zeros((4, 2, 3)))
        with pytest.raises(ValueError, match="predicted must have shape"):
            hierarchy.level2_loss(jnp.zeros((4, 3, 5)), emb, jnp.zeros((4, 3, 2)),
                                  jnp.zeros((4, 3, 2)))


@pytest.fixture(scope="module")
def tiny_models(tiny_maze_models):
    return tiny_maze_models("mlp")  # the MLP level 2 (tests/test_hjepa_grid.py: the grid one)


class TestLevel2Model:
    def test_span_below_two(self, tiny_models):
        config, _, wm, _, _ = tiny_models
        for k in (1, 0, 2.5):
            cfg = ml_collections.ConfigDict({**config.level2.to_dict(), "span": k})
            with pytest.raises(ValueError, match="span k must be an integer >= 2"):
                hierarchy.make_level2(cfg, wm)

    def test_shapes(self, tiny_models):
        config, env, wm, l2, params = tiny_models
        k, d1, d2, u = l2.span, wm.latent_dim, l2.latent_dim, l2.action_dim
        assert l2.keep_dims == d1  # keep_all: the whole level-1 embedding passes through
        assert d2 == d1 + config.level2.latent_dim
        s1 = jax.random.normal(jax.random.key(2), (3, 2 * k + 1, d1))
        acts = jnp.ones((3, 2 * k, 2))
        s2 = l2.encode(params["l2"], s1)
        assert s2.shape == (3, 2 * k + 1, d2)
        np.testing.assert_array_equal(s2[..., :d1], s1)
        # Raw pixel dims (glimpse and map) are marked so that costs can leave them out.
        start, stop = hierarchy.raw_pixel_dims(config.model, wm.obs_shape)
        assert (start, stop) == (2, 2 + 49 + 81)  # 7x7 glimpse, 25x25 image every 3rd px
        mask = np.asarray(l2.cost_weights())
        assert mask.shape == (d2,) and mask[start:stop].sum() == 0
        assert mask[:start].all() and mask[stop:].all()
        uu, mean, log_var = l2.infer_action(params["l2"], jax.random.key(3), s2[:, 0],
                                            acts[:, :k], s2[:, k])
        assert uu.shape == mean.shape == log_var.shape == (3, u)
        assert l2.rollout(params["l2"], s2[:, 0], jnp.zeros((3, 5, u))).shape == (3, 5, d2)
        loss, aux = jax.jit(lambda p: hierarchy.level2_objective(
            l2, p, s1, acts, jax.random.key(4), config.level2))(params["l2"])
        assert np.isfinite(float(loss)) and "action_kl" in aux
        with pytest.raises(ValueError, match="segment actions"):
            l2.posterior(params["l2"], s2[:, 0], acts[:, :k + 1], s2[:, k])
        # Gradients reach the encoder and predictor (the posterior's and the predictor's last
        # layers start at zero, so the posterior's gradient is zero at initialisation).
        grads = jax.grad(lambda p: hierarchy.level2_objective(
            l2, p, s1, acts, jax.random.key(4), config.level2)[0])(params["l2"])
        for name in ("encoder", "predictor"):
            assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads[name]))


def test_glimpse_is_an_egocentric_crop():
    from jepa_jax.networks.encoders import glimpse

    img = jnp.arange(100.0).reshape(1, 10, 10, 1)
    patch = glimpse(img, jnp.array([[4.0, 6.0]]), 1)  # x = 4 (column), y = 6 (row)
    np.testing.assert_allclose(patch[0, :, :, 0], np.asarray(img[0, 5:8, 3:6, 0]))
    half = glimpse(img, jnp.array([[4.5, 6.0]]), 0)  # bilinear between columns 4 and 5
    np.testing.assert_allclose(float(half[0, 0, 0, 0]), 64.5)


class TestHierarchicalPlanner:
    def test_plan_interface_jit_and_state(self, tiny_models):
        config, env, wm, l2, params = tiny_models
        planner = make_hierarchical_planner(wm, l2, dict(
            config.planning.hierarchical.to_dict(), action_bound=env.action_bound, shift=2))
        walls = mazes.make_layout(0, env)
        obs = mazes.render(jnp.array([2.5, 2.5]), walls, env)
        goal = mazes.render(jnp.array([17.5, 17.5]), walls, env)
        state = planner.init_state(action_dim=2)
        plan = jax.jit(planner.plan)
        actions, info = plan(params, obs, goal, jax.random.key(0), state)
        h = config.planning.hierarchical.horizon
        assert actions.shape == (h, 2)
        assert float(jnp.linalg.norm(actions, axis=-1).max()) <= env.action_bound + 1e-5
        assert info["subgoals"].shape == (config.planning.hierarchical.high_horizon,
                                          l2.latent_dim)
        assert jax.tree.map(jnp.shape, info["state"]) == jax.tree.map(jnp.shape, state)
        # A second call with the carried state reuses the compiled function.
        actions2, _ = plan(params, obs, goal, jax.random.key(1), info["state"])
        assert actions2.shape == (h, 2) and plan._cache_size() == 1

    def test_bad_config(self, tiny_models):
        _, _, wm, l2, _ = tiny_models
        with pytest.raises(ValueError, match="unknown hierarchical planner config keys"):
            make_hierarchical_planner(wm, l2, {"nope": 1})
        with pytest.raises(ValueError, match="high_horizon must be an integer >= 1"):
            make_hierarchical_planner(wm, l2, {"high_horizon": 0})
        with pytest.raises(ValueError, match="exceeds the level-1 horizon"):
            make_hierarchical_planner(wm, l2, {"horizon": 4, "shift": 5})


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    """The tiny preset trained once (both stages) through the command-line entry point."""
    from jepa_jax import train

    workdir = tmp_path_factory.mktemp("hjepa") / "run"
    assert train.main(["--config", "experiments/mazes.py:tiny", "--workdir", str(workdir),
                       "--no-progress"]) == 0
    return workdir


def test_tiny_end_to_end(tiny_workdir, capsys):
    """Evaluate both planners of the tiny run on held-out mazes from the command line."""
    import json

    from jepa_jax import evaluate

    for name in ("hierarchical", "gradient"):
        assert evaluate.main(["--workdir", str(tiny_workdir), "--planner", name]) == 0
        out = capsys.readouterr().out
        assert f"{name} (heldout layouts): success_rate=" in out
        assert "episodes 2/2" in out  # progress after the batch
        assert not (tiny_workdir / f"eval_{name}.partial.npz").exists()  # removed when done
        result = json.loads((tiny_workdir / f"eval_{name}.json").read_text())
        assert result["num_episodes"] == 2 and result["ms_per_action"] > 0
        assert (tiny_workdir / f"eval_{name}.png").exists()
    assert evaluate.main(["--workdir", str(tiny_workdir), "--planner", "cem"]) == 1
    assert "supports --planner gradient or hierarchical" in capsys.readouterr().err


def test_hjepa_notebook_runs(tiny_workdir):
    import os
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "hjepa.ipynb", as_version=4)
    os.environ["JEPA_WORKDIR"] = str(tiny_workdir)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(root)}}).execute()
    finally:
        os.environ.pop("JEPA_WORKDIR")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "planned actions (4, 2) subgoals (2," in outputs
