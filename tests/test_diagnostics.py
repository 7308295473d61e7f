"""Diagnostics: the linear probe and R^2 against NumPy, the wall-push problems against the true
environment, and ``evaluate_world_model`` on a tiny random model and on hand-built oracle
models whose metrics are known exactly."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax import diagnostics
from jepa_jax.configs import load_config
from jepa_jax.data import offline
from jepa_jax.envs import two_rooms
from jepa_jax.world_model import WorldModel, make_world_model

ENV = two_rooms.EnvParams()
PRESET = Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py"
REQUIRED_METRICS = {"probe_r2", "layout_probe_r2", "rollout_px_h1", "rollout_px_h4",
                    "rollout_px_h8", "rollout_px_h16", "wall_violation_rate"}


# ---------------------------------------------------------------------------------------------
# Probe and R^2.
# ---------------------------------------------------------------------------------------------


def _synthetic_regression(seed=0, n=400, d=6, noise=0.0):
    rng = np.random.default_rng(seed)
    # Features on very different scales and offsets, as embeddings are.
    x = rng.normal(size=(n, d)) * rng.uniform(0.01, 50.0, d) + rng.uniform(-20, 20, d)
    w = rng.normal(size=(d, 2))
    b = np.array([3.0, -7.0])
    y = x @ w + b + noise * rng.normal(size=(n, 2))
    return x, y, w, b


def test_linear_probe_recovers_a_known_map():
    x, y, w, b = _synthetic_regression()
    probe = diagnostics.fit_linear_probe(x, y, ridge=0.0)
    np.testing.assert_allclose(probe.w, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probe.b, b, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(probe(jnp.asarray(x[:5], jnp.float32)), y[:5], rtol=1e-3,
                               atol=1e-2)
    # The default (tiny) ridge barely shrinks it.
    default = diagnostics.fit_linear_probe(x, y)
    np.testing.assert_allclose(default.w, w, rtol=1e-2, atol=1e-3)


def test_linear_probe_matches_ridge_regression_in_numpy():
    x, y, _, _ = _synthetic_regression(seed=1, n=50, d=4, noise=0.5)
    ridge = 0.1
    probe = diagnostics.fit_linear_probe(x, y, ridge=ridge)
    # Independent reference: ridge on standardised features, penalty ridge * n, then mapped
    # back to the raw features.
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / sd
    a = np.vstack([z, np.sqrt(ridge * len(x)) * np.eye(4)])
    t = np.vstack([y - y.mean(0), np.zeros((4, 2))])
    wz = np.linalg.lstsq(a, t, rcond=None)[0]
    w = wz / sd[:, None]
    b = y.mean(0) - mu @ w
    np.testing.assert_allclose(probe.w, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.b, b, rtol=1e-5, atol=1e-5)


def test_linear_probe_tolerates_constant_features():
    x, y, _, _ = _synthetic_regression(seed=2, n=100, d=3)
    x = np.concatenate([x, np.full((100, 1), 5.0)], 1)  # a dead latent dimension
    probe = diagnostics.fit_linear_probe(x, y)
    assert np.all(np.isfinite(probe.w)) and np.all(np.isfinite(probe.b))
    assert diagnostics.r2_score(np.asarray(probe(jnp.asarray(x, jnp.float32))), y) > 0.999


def test_r2_score_matches_numpy_formula():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(30, 2)) * [1.0, 10.0]
    pred = target + rng.normal(size=(30, 2))
    per_dim = [1 - np.sum((target[:, k] - pred[:, k]) ** 2)
               / np.sum((target[:, k] - target[:, k].mean()) ** 2) for k in range(2)]
    assert diagnostics.r2_score(pred, target) == pytest.approx(np.mean(per_dim), rel=1e-12)
    assert diagnostics.r2_score(target, target) == pytest.approx(1.0)
    assert diagnostics.r2_score(np.broadcast_to(target.mean(0), target.shape),
                                target) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Wall-push problems.
# ---------------------------------------------------------------------------------------------


def test_wall_push_problems_geometry_and_true_env_never_crosses():
    num, horizon = 128, 16
    make = jax.jit(lambda k: diagnostics.make_wall_push_problems(k, num, ENV, horizon))
    start, layout, actions = make(jax.random.key(0))
    start, layout, actions = map(np.asarray, (start, layout, actions))
    assert start.shape == (num, 2) and layout.shape == (num, 2)
    assert actions.shape == (num, horizon, 2)
    wx, dy = layout[:, 0], layout[:, 1]
    side = np.sign(start[:, 0] - wx)
    assert 0.25 < (side > 0).mean() < 0.75  # both rooms
    # Start 1-6 px from the wall's face, at least door_half + 3 from the door's centre, inside
    # the interior.
    dist = np.abs(start[:, 0] - wx) - ENV.wall_half_width
    assert np.all((dist >= 1.0 - 1e-4) & (dist <= 6.0 + 1e-4))
    assert np.all(np.abs(start[:, 1] - dy) >= ENV.door_half_width + 3.0 - 1e-4)
    assert np.all((start > ENV.low) & (start < ENV.high))
    assert (start[:, 1] < dy).any() and (start[:, 1] > dy).any()  # above and below the door
    # Actions: norm in [1, bound], pointing into the wall (at most 30 degrees off the normal),
    # their y component away from the door.
    norms = np.linalg.norm(actions, axis=-1)
    assert np.all((norms >= 1.0 - 1e-5) & (norms <= ENV.action_bound + 1e-5))
    into = -side[:, None] * actions[..., 0]
    assert np.all(into >= norms * np.cos(np.pi / 6) - 1e-5)
    away = np.sign(start[:, 1] - dy)[:, None] * actions[..., 1]
    assert np.all(away >= -1e-6)

    # Replay in the true environment: the agent ends up against the wall, never beyond it.
    def episode(p, acts, w, d):
        def body(q, a):
            nxt = two_rooms.transition(q, a, w, d, ENV)
            return nxt, nxt
        return jax.lax.scan(body, p, acts)[1]

    traj = np.asarray(jax.jit(jax.vmap(episode))(start, actions, wx, dy))  # (num, H, 2)
    assert np.all(np.sign(traj[..., 0] - wx[:, None]) == side[:, None])
    assert np.all(np.abs(traj[..., 0] - wx[:, None]) > ENV.wall_half_width)
    # The env blocks the pushes: most agents make (almost) no progress by the end.
    stuck = np.all(traj[:, -4:] == traj[:, -1:], axis=(1, 2))
    assert stuck.mean() > 0.9
    # Hence a perfect model's violation rate, as evaluate_world_model computes it, is 0.
    end_side = np.sign(traj[:, -1, 0] - wx)
    assert np.mean(end_side != side) == 0.0


# ---------------------------------------------------------------------------------------------
# evaluate_world_model.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diag_data():
    return diagnostics.make_diagnostic_data(jax.random.key(1), ENV, offline.PolicyParams(),
                                            num_probe=8, num_heldout=6, num_wall=12)


def test_make_diagnostic_data_shapes(diag_data):
    assert diag_data.probe_train.pos.shape == (8, 17, 2)
    assert diag_data.heldout.pos.shape == (6, 17, 2)
    assert diag_data.wall_start.shape == (12, 2) and diag_data.wall_actions.shape == (12, 16, 2)
    assert not np.allclose(diag_data.probe_train.pos[:6], diag_data.heldout.pos)


def _check_metrics(metrics):
    assert REQUIRED_METRICS <= set(metrics)
    for k, v in metrics.items():
        assert isinstance(v, float) and np.isfinite(v), (k, v)
    assert 0.0 <= metrics["wall_violation_rate"] <= 1.0


def test_evaluate_tiny_random_model(diag_data):
    # The tiny preset's model section, smaller still.
    cfg = load_config(f"{PRESET}:tiny").model.to_dict()
    cfg.update(channels=(4,), num_keypoints=2, global_dim=4, predictor_hidden=(16,),
               inverse_dynamics_hidden=())
    cfg = ml_collections.ConfigDict(cfg)
    wm = make_world_model(cfg, (65, 65, 2), 2)
    params = jax.jit(wm.init)(jax.random.key(0))
    metrics, arrays = diagnostics.evaluate_world_model(wm, params, diag_data, ENV)
    _check_metrics(metrics)
    assert metrics["probe_r2"] <= 1.0
    assert arrays["probed"].shape == (6, 17, 2) and arrays["pred_pos"].shape == (6, 16, 2)
    assert arrays["wall_pos"].shape == (12, 16, 2)
    assert isinstance(arrays["probe"], diagnostics.LinearProbe)


class _OracleEncoder(nn.Module):
    """Reads the true state off the image: (agent x, agent y, wall x, door y)."""

    @nn.compact
    def __call__(self, obs):
        grid = jnp.arange(obs.shape[-2], dtype=jnp.float32)
        agent, walls = obs[..., 0], obs[..., 1]
        mass = agent.sum((-2, -1))
        x = (agent * grid).sum((-2, -1)) / mass
        y = (agent * grid[:, None]).sum((-2, -1)) / mass
        inner = walls[..., 5:60, 5:60]  # the middle wall only (the border is outside)
        wall_x = (inner * grid[5:60]).sum((-2, -1)) / inner.sum((-2, -1))
        door_rows = 1.0 - inner.max(-1)  # rows where the middle wall is absent
        door_y = (door_rows * grid[5:60]).sum(-1) / door_rows.sum(-1)
        return jnp.stack([x, y, wall_x, door_y], -1)


class _OraclePredictor(nn.Module):
    """The true transition on the oracle latent; with ``ignore_walls`` a pure integrator."""

    ignore_walls: bool = False

    @nn.compact
    def __call__(self, s, a, z=None):
        if self.ignore_walls:
            return s + jnp.concatenate([two_rooms.clip_action(a, ENV.action_bound),
                                        jnp.zeros_like(a)], -1)
        flat_s, flat_a = s.reshape(-1, 4), a.reshape(-1, 2)
        pos = jax.vmap(lambda si, ai: two_rooms.transition(si[:2], ai, si[2], si[3], ENV))(
            flat_s, flat_a)
        return jnp.concatenate([pos, flat_s[:, 2:]], -1).reshape(s.shape)


def _oracle_model(ignore_walls):
    return WorldModel(encoder=_OracleEncoder(), predictor=_OraclePredictor(ignore_walls),
                      inverse=None, obs_shape=(65, 65, 2), action_dim=2, latent_dim=4)


def test_oracle_encoder_reads_the_state():
    pos = np.array([[20.3, 40.7], [50.0, 12.25]], np.float32)
    layout = np.array([[26.0, 40.0], [44.0, 10.0]], np.float32)
    obs = two_rooms.render_positions(pos, layout[:, 0], layout[:, 1], ENV)
    s = jax.jit(_OracleEncoder().apply)({}, obs)
    np.testing.assert_allclose(s, np.concatenate([pos, layout], 1), atol=1e-3)


def test_evaluate_perfect_and_wall_ignoring_models(diag_data):
    wm = _oracle_model(ignore_walls=False)
    params = wm.init(jax.random.key(0))
    metrics, arrays = diagnostics.evaluate_world_model(wm, params, diag_data, ENV)
    _check_metrics(metrics)
    assert metrics["probe_r2"] > 0.9999 and metrics["layout_probe_r2"] > 0.9999
    for h in (1, 4, 8, 16):
        assert metrics[f"rollout_px_h{h}"] < 0.05, (h, metrics)
    assert metrics["wall_violation_rate"] == 0.0
    np.testing.assert_allclose(arrays["pred_pos"], np.asarray(diag_data.heldout.pos[:, 1:]),
                               atol=0.05)

    # A model that ignores the wall walks through it on every push problem.
    wm = _oracle_model(ignore_walls=True)
    metrics, _ = diagnostics.evaluate_world_model(wm, params, diag_data, ENV)
    assert metrics["wall_violation_rate"] == 1.0
    assert metrics["probe_r2"] > 0.9999  # same encoder


def test_fit_position_probe_is_the_diagnostics_probe(diag_data):
    """The helper fits on exactly the probe set of make_diagnostic_data (same key)."""
    cfg = load_config(f"{PRESET}:tiny").model.to_dict()
    cfg.update(channels=(4,), num_keypoints=2, global_dim=4, predictor_hidden=(16,),
               inverse_dynamics_hidden=())
    wm = make_world_model(ml_collections.ConfigDict(cfg), (65, 65, 2), 2)
    params = jax.jit(wm.init)(jax.random.key(0))
    probe = diagnostics.fit_position_probe(wm, params, ENV, offline.PolicyParams(),
                                           jax.random.key(1), num_trajectories=8)
    emb = diagnostics._encode_frames(wm, params, diag_data.probe_train, ENV)
    ref = diagnostics.fit_linear_probe(emb.reshape(-1, emb.shape[-1]),
                                       diag_data.probe_train.pos.reshape(-1, 2))
    np.testing.assert_allclose(np.asarray(probe.w), np.asarray(ref.w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(probe.b), np.asarray(ref.b), rtol=1e-5, atol=1e-6)
