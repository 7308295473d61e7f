"""Networks and the world model: NumPy references for the encoder's building blocks, shapes,
the predictor's identity init, rollout semantics, error paths, gradients, jit and vmap."""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax.configs import load_config
from jepa_jax.envs import two_rooms
from jepa_jax.networks.encoders import (
    conv_same_via_s2d,
    depth_to_space,
    space_to_depth,
    spatial_softmax,
)
from jepa_jax.networks.predictors import MLPPredictor
from jepa_jax.world_model import make_world_model

OBS = (16, 16, 2)  # small images keep the tests fast; the encoder is size-agnostic
A = 2


PRESET = Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py"


def tiny_model_config(**overrides):
    """The ``model`` section of experiments/two_rooms.py's tiny preset, smaller still."""
    cfg = load_config(f"{PRESET}:tiny").model.to_dict()
    cfg.update(channels=(8,), num_keypoints=4, global_dim=8, mlp_hidden=(16,),
               predictor_hidden=(32, 32), inverse_dynamics_hidden=(16,))
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


@pytest.fixture(scope="module")
def wm():
    return make_world_model(tiny_model_config(), OBS, A)


@pytest.fixture(scope="module")
def params(wm):
    return jax.jit(wm.init)(jax.random.key(0))


@pytest.fixture(scope="module")
def fns(wm):
    """Jitted methods (eager Flax calls are slow on a small CPU)."""
    return {"encode": jax.jit(wm.encode), "predict": jax.jit(wm.predict),
            "rollout": jax.jit(wm.rollout)}


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _uniform(seed, shape):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _perturbed(params, seed, scale=0.3):
    """Parameters with (NumPy) noise on every leaf, so that the predictor is no longer the
    identity."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (np.asarray(x) + scale * rng.normal(size=x.shape)).astype(np.float32), params)


# ---------------------------------------------------------------------------------------------
# Building blocks against NumPy.
# ---------------------------------------------------------------------------------------------


def test_spatial_softmax_matches_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    temp = 0.7
    out = np.asarray(spatial_softmax(jnp.asarray(feats), temp))
    assert out.shape == (2, 3, 2)
    expected = np.zeros((2, 3, 2))
    for b in range(2):
        for k in range(3):
            logits = feats[b, :, :, k].astype(np.float64) / temp
            p = np.exp(logits - logits.max())
            p /= p.sum()
            rows, cols = np.mgrid[0:5, 0:7]
            expected[b, k] = [(p * cols).sum(), (p * rows).sum()]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_spatial_softmax_one_hot_gives_the_hot_pixel():
    feats = np.zeros((6, 9, 2), np.float32)
    feats[2, 7, 0] = 60.0  # row 2, column 7 -> (x, y) = (7, 2)
    feats[5, 0, 1] = 60.0  # row 5, column 0 -> (0, 5)
    out = np.asarray(spatial_softmax(jnp.asarray(feats)))
    np.testing.assert_allclose(out, [[7.0, 2.0], [0.0, 5.0]], atol=1e-4)
    # A uniform map gives the image centre.
    uniform = spatial_softmax(np.zeros((6, 9, 1), np.float32))
    np.testing.assert_allclose(uniform, [[4.0, 2.5]], atol=1e-5)


def _np_space_to_depth(x, f):
    n, h, w, c = x.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    padded = np.zeros((n, hp, wp, c), x.dtype)
    padded[:, :h, :w] = x
    out = np.zeros((n, hp // f, wp // f, f * f * c), x.dtype)
    for i in range(hp // f):
        for j in range(wp // f):
            for a in range(f):
                for b in range(f):
                    out[:, i, j, (a * f + b) * c:(a * f + b + 1) * c] = padded[:, f * i + a,
                                                                               f * j + b]
    return out


@pytest.mark.parametrize("shape,factor", [((2, 8, 12, 3), 4), ((1, 6, 7, 2), 4), ((1, 5, 5, 1), 2)])
def test_space_to_depth_matches_numpy(shape, factor):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    out = np.asarray(space_to_depth(jnp.asarray(x), factor))
    ref = _np_space_to_depth(x, factor)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
    # Nothing lost, nothing invented: the padded entries are zeros.
    assert np.isclose(out.sum(), x.sum(), rtol=1e-5) and np.count_nonzero(out) == x.size


def test_depth_to_space_inverts_space_to_depth():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 12, 3)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(depth_to_space(space_to_depth(x, 4), 4)), x)


def _np_conv_same(x, w):
    """Direct 'SAME' cross-correlation: x (N, H, W, C), w (k, k, C, O)."""
    n, h, wd, _ = x.shape
    k, r = w.shape[0], w.shape[0] // 2
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[-1]))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + wd], w[dy, dx])
    return out


@pytest.mark.parametrize("k,f,c,o,size", [(5, 4, 1, 2, 13), (11, 4, 1, 2, 17), (3, 2, 2, 3, 7),
                                          (1, 4, 1, 1, 6)])
def test_conv_same_via_s2d_matches_direct_convolution(k, f, c, o, size):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, size, size, c)).astype(np.float32)
    w = rng.normal(size=(k, k, c, o)).astype(np.float32)
    out = np.asarray(jax.jit(conv_same_via_s2d, static_argnums=2)(x, w, f))
    np.testing.assert_allclose(out, _np_conv_same(x, w), rtol=1e-4, atol=1e-4)
    # The gradient reaches the small kernel through the scatter; reference: XLA's conv.
    v = rng.normal(size=(2, size, size, o)).astype(np.float32)
    g = jax.grad(lambda w: (conv_same_via_s2d(x, w, f) * v).sum())(w)
    g_ref = jax.grad(lambda w: (jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) * v).sum())(w)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-4, atol=1e-3)


def test_layout_keypoints_follow_the_wall():
    """A delta kernel on the wall channel with a sharp softmax puts the layout keypoint at
    the softmax-weighted mean of the wall pixels (NumPy reference)."""
    cfg = tiny_model_config(layout_keypoints=1, layout_channels=(1,), layout_kernel=5)
    wm = make_world_model(cfg, (65, 65, 2), 2)
    assert wm.latent_dim == 2 * cfg.num_keypoints + 2 + cfg.global_dim
    p = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                     jax.eval_shape(wm.init, jax.random.key(0)))
    enc = p["encoder"]["params"]
    enc["layout_kernel"][2, 2, 0, 0] = 1.0
    enc["layout_log_temperature"] = np.log(np.float32(0.1))
    env = two_rooms.EnvParams()
    obs = jnp.stack([two_rooms.render_positions(jnp.array([10.0, 10.0]), wx, dy, env)
                     for wx, dy in ((24.0, 20.0), (36.0, 40.0))])
    s = np.asarray(jax.jit(wm.encode)(p, obs))
    lay = s[:, 2 * cfg.num_keypoints:2 * cfg.num_keypoints + 2] * cfg.keypoint_scale
    walls = np.asarray(obs[..., 1], np.float64).reshape(2, -1)
    attn = np.exp(walls / 0.1 - (walls / 0.1).max(1, keepdims=True))
    attn /= attn.sum(1, keepdims=True)
    ys, xs = np.meshgrid(np.arange(65), np.arange(65), indexing="ij")
    ref = np.stack([attn @ xs.reshape(-1), attn @ ys.reshape(-1)], -1)
    np.testing.assert_allclose(lay, ref, atol=1e-3)
    assert lay[1, 0] > lay[0, 0]  # the wall moved right, so did the keypoint


def test_static_layout_encodes_trajectories_like_frames():
    """With a static layout the layout branch runs on the first frame of each trajectory:
    the same latents and parameter gradients as encoding every frame, and a wall that moves
    within a trajectory shows that only the first frame's layout is read."""
    cfg = tiny_model_config(layout_keypoints=2, layout_channels=(1,), layout_kernel=3,
                            layout_static=True)
    wm = make_world_model(cfg, OBS, A)
    assert wm.static_layout
    p = _perturbed(jax.jit(wm.init)(jax.random.key(1)), seed=5, scale=0.1)
    agent = _uniform(0, (3, 4, *OBS[:2], 1))
    wall = np.broadcast_to(_uniform(1, (3, 1, *OBS[:2], 1)), agent.shape)
    obs = jnp.asarray(np.concatenate([agent, wall], -1))  # (B=3, T=4, 16, 16, 2)
    every, first = jax.jit(wm.encode), jax.jit(wm.encode_trajectories)
    np.testing.assert_allclose(np.asarray(first(p, obs)), np.asarray(every(p, obs)),
                               rtol=1e-5, atol=1e-6)
    weights = jnp.asarray(_normal(2, (3, 4, wm.latent_dim)))
    grads = [jax.grad(lambda q, f=f: jnp.sum(jnp.sin(f(q, obs)) * weights))(p)
             for f in (every, first)]
    for g_every, g_first in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(np.asarray(g_first), np.asarray(g_every), rtol=1e-4,
                                   atol=1e-5)
    moved = obs.at[:, 1:, ..., 1].set(jnp.roll(obs[:, 1:, ..., 1], 4, axis=-1))
    lay = slice(2 * cfg.num_keypoints, 2 * cfg.num_keypoints + 4)
    s_moved, s_static = np.asarray(first(p, moved)), np.asarray(first(p, obs))
    np.testing.assert_allclose(s_moved[..., lay], s_static[..., lay], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(every(p, moved))[:, 1:, lay] - s_static[:, 1:, lay]).max() > 1e-3
    with pytest.raises(ValueError, match="expected \\(..., T, 16, 16, 2\\)"):
        wm.encode_trajectories(p, obs[0, 0])
    with pytest.raises(ValueError, match="static_layout_axis=2 is not a batch axis"):
        wm.encoder.apply(p["encoder"], obs, static_layout_axis=2)


# ---------------------------------------------------------------------------------------------
# Construction, shapes.
# ---------------------------------------------------------------------------------------------


def test_build_from_the_tiny_preset():
    cfg = load_config(f"{PRESET}:tiny")
    wm = make_world_model(cfg.model, (65, 65, 2), 2)
    assert wm.latent_dim == (2 * cfg.model.num_keypoints + 2 * cfg.model.layout_keypoints
                             + cfg.model.global_dim)
    assert wm.inverse is not None and wm.z_dim == 0
    shapes = jax.eval_shape(wm.init, jax.random.key(0))  # traces init without compiling
    assert set(shapes) == {"encoder", "predictor", "inverse"}


@pytest.mark.parametrize("keypoint_channels", [(), (0,)], ids=["trunk", "branch"])
def test_keypoints_are_in_input_pixels(keypoint_channels):
    """With hand-set weights that make every keypoint map the agent's brightness, the
    keypoints land on the agent, in input pixels divided by keypoint_scale."""
    cfg = tiny_model_config(keypoint_channels=keypoint_channels)
    wm = make_world_model(cfg, (65, 65, 2), 2)
    p = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                     jax.eval_shape(wm.init, jax.random.key(0)))
    enc = p["encoder"]["params"]
    enc["log_temperature"] = np.log(np.float32(0.01))
    if keypoint_channels:
        # Full-resolution branch: a delta kernel copies the agent channel.
        c = cfg.keypoint_kernel // 2
        enc["Conv_1"]["kernel"][c, c, 0, :] = 1.0
        pos = np.array([20.0, 41.0], np.float32)  # on the pixel grid
    else:
        # Trunk: channel 0 sums the agent channel over each 4x4 cell (space-to-depth puts
        # pixel (a, b) of a cell, channel c at (a * 4 + b) * 2 + c), the 1x1 conv copies it.
        for a in range(4):
            for b in range(4):
                enc["Conv_0"]["kernel"][1, 1, (a * 4 + b) * 2, 0] = 1.0
        enc["Conv_1"]["kernel"][0, 0, 0, :] = 1.0
        pos = np.array([21.5, 41.5], np.float32)  # centre of cell (5, 10): 4 * i + 1.5
    obs = two_rooms.render_positions(pos, 32.0, 32.0, two_rooms.EnvParams())
    s = np.asarray(jax.jit(wm.encode)(p, obs))
    kp = s[: 2 * cfg.num_keypoints].reshape(cfg.num_keypoints, 2)
    np.testing.assert_allclose(kp, np.broadcast_to(pos / cfg.keypoint_scale, kp.shape),
                               atol=1e-4)


def test_encode_shapes(wm, params, fns):
    assert wm.latent_dim == 2 * 4 + 2 * 2 + 8  # keypoints, layout keypoints, global code
    temperature = np.exp(np.asarray(params["encoder"]["params"]["log_temperature"]))
    assert temperature == pytest.approx(tiny_model_config().keypoint_init_temperature, rel=1e-5)
    obs = _uniform(1, (2, 3, *OBS))
    s = np.asarray(fns["encode"](params, obs))
    assert s.shape == (2, 3, wm.latent_dim) and s.dtype == jnp.float32
    assert fns["encode"](params, obs[0, 0]).shape == (wm.latent_dim,)
    # Leading axes are only flattened: frames are encoded independently.
    flat = fns["encode"](params, obs.reshape(6, *OBS))
    np.testing.assert_allclose(s.reshape(6, -1), flat, rtol=1e-5, atol=1e-6)
    # vmap over frames agrees with the batched call.
    vm = jax.jit(jax.vmap(wm.encode, in_axes=(None, 0)))(params, obs.reshape(6, *OBS))
    np.testing.assert_allclose(vm, flat, rtol=1e-5, atol=1e-6)
    # Keypoints (the first 2K dims) lie in the image, in units of keypoint_scale pixels.
    kp = np.asarray(s[..., :8])
    assert np.all(kp >= 0) and np.all(kp <= (OBS[0] - 1) / 8.0 + 1e-5)


@pytest.mark.parametrize("overrides,obs_shape,match", [
    (dict(encoder="vit"), OBS, "unknown model.encoder"),
    (dict(encoder="mlp", latent_dim=0), (4,), "latent_dim"),
    (dict(), (16, 2), "conv encoder"),
])
def test_make_world_model_errors(overrides, obs_shape, match):
    with pytest.raises(ValueError, match=match):
        make_world_model(tiny_model_config(**overrides), obs_shape, A)


def test_check_obs_errors(wm, params, fns):
    for bad in (np.zeros((2, 15, 16, 2)), np.zeros((2, 16, 16, 3)), np.zeros((16, 2))):
        with pytest.raises(ValueError, match="obs has shape") as info:
            fns["encode"](params, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="dtype") as info:
        wm.check_obs(np.zeros((2, *OBS), np.uint8), name="goal")
    assert "goal" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="dtype"):
        fns["encode"](params, np.zeros(OBS, np.int32))
    wm.check_obs(jnp.zeros(OBS, jnp.bfloat16))  # any float dtype is accepted


# ---------------------------------------------------------------------------------------------
# Predictor and rollout.
# ---------------------------------------------------------------------------------------------


def test_predictor_is_identity_at_init(wm, params, fns):
    s = _normal(2, (4, wm.latent_dim))
    a = _normal(3, (4, A))
    np.testing.assert_array_equal(fns["predict"](params, s, a), s)
    traj = fns["rollout"](params, s[0], a)
    np.testing.assert_array_equal(traj, np.broadcast_to(s[0], (4, wm.latent_dim)))
    moved = fns["predict"](_perturbed(params, 4), s, a)
    assert not np.allclose(moved, s)


def test_rollout_equals_a_loop_of_predict(wm, params, fns):
    p = _perturbed(params, 5, 0.1)
    s0 = _normal(6, (3, wm.latent_dim))
    actions = _normal(7, (3, 5, A))
    traj = np.asarray(fns["rollout"](p, s0, actions))
    assert traj.shape == (3, 5, wm.latent_dim)
    s, ref = s0, []
    for t in range(5):
        s = fns["predict"](p, s, actions[:, t])
        ref.append(s)
    np.testing.assert_allclose(traj, np.stack(ref, 1), rtol=1e-5, atol=1e-5)
    # Unbatched: (D,), (T, A) -> (T, D); vmap over the batch gives the batched result.
    np.testing.assert_allclose(fns["rollout"](p, s0[1], actions[1]), traj[1], rtol=1e-5,
                               atol=1e-5)
    vm = jax.jit(jax.vmap(wm.rollout, in_axes=(None, 0, 0)))(p, s0, actions)
    np.testing.assert_allclose(vm, traj, rtol=1e-5, atol=1e-5)


def test_latent_projection_without_inverse_head():
    wm = make_world_model(tiny_model_config(latent_dim=5, inverse_dynamics_hidden=()), OBS, A)
    shapes = jax.eval_shape(wm.init, jax.random.key(0))  # traced, not compiled
    assert wm.latent_dim == 5 and wm.inverse is None and set(shapes) == {"encoder", "predictor"}
    obs = jax.ShapeDtypeStruct((3, *OBS), jnp.float32)
    assert jax.eval_shape(wm.encode, shapes, obs).shape == (3, 5)
    with pytest.raises(ValueError, match="inverse-dynamics"):
        wm.inverse_dynamics(shapes, np.zeros((5,)), np.zeros((5,)))


def test_mlp_encoder_and_latent_variable():
    wm = make_world_model(tiny_model_config(encoder="mlp", latent_dim=5, z_dim=3), (4,), A)
    params = jax.jit(wm.init)(jax.random.key(0))
    assert jax.jit(wm.encode)(params, np.ones((2, 3, 4), np.float32)).shape == (2, 3, 5)
    p = _perturbed(params, 1, 0.1)
    s0 = _normal(2, (2, 5))
    actions = _normal(3, (2, 4, A))
    z = _normal(4, (2, 4, 3))
    rollout, predict = jax.jit(wm.rollout), jax.jit(wm.predict)
    traj = np.asarray(rollout(p, s0, actions, z))
    s = s0
    for t in range(4):
        s = predict(p, s, actions[:, t], z[:, t])
        np.testing.assert_allclose(traj[:, t], s, rtol=1e-5, atol=1e-5)
    assert not np.allclose(rollout(p, s0, actions, z + 1.0), traj)  # z matters
    with pytest.raises(ValueError, match="z is None"):
        predict(p, s0, actions[:, 0])
    with pytest.raises(ValueError, match="expects 3"):
        predict(p, s0, actions[:, 0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="z is None"):
        rollout(p, s0, actions)


def test_z_errors_without_latent_variable(wm, params, fns):
    s = np.zeros((2, wm.latent_dim))
    a = np.zeros((2, A))
    with pytest.raises(ValueError, match="z_dim=0"):
        fns["predict"](params, s, a, np.zeros((2, 1)))
    with pytest.raises(ValueError, match="z_dim=0"):
        fns["rollout"](params, s, np.zeros((2, 3, A)), np.zeros((2, 3, 2)))
    np.testing.assert_array_equal(fns["predict"](params, s, a, np.zeros((2, 0))), s)
    with pytest.raises(ValueError, match="latent has dimension"):
        fns["predict"](params, np.zeros((2, wm.latent_dim + 1)), a)
    with pytest.raises(ValueError, match="action has dimension"):
        fns["predict"](params, s, np.zeros((2, 3)))


def test_predictor_module_action_scale():
    # s' = s + MLP([s, a * action_scale]): the action enters only through a * action_scale.
    s = np.ones((1, 3), np.float32)
    a = jnp.array([[0.4, -0.2]])
    m1 = MLPPredictor(hidden=(8,), action_scale=1.0)
    m2 = MLPPredictor(hidden=(8,), action_scale=2.0)
    p = _perturbed(jax.jit(m1.init)(jax.random.key(0), s, a), 1)
    np.testing.assert_allclose(jax.jit(m2.apply)(p, s, a / 2), jax.jit(m1.apply)(p, s, a),
                               rtol=1e-6)


def test_inverse_dynamics_shape(wm, params):
    s = np.zeros((2, 3, wm.latent_dim))
    assert jax.jit(wm.inverse_dynamics)(params, s, s).shape == (2, 3, A)


# ---------------------------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------------------------


def test_rollout_loss_gradient_is_finite_and_nonzero(wm, params):
    obs = _uniform(8, (2, 4, *OBS))
    actions = _normal(9, (2, 3, A))

    def loss(p):
        s = wm.encode(p, obs)
        pred = wm.rollout(p, s[:, 0], actions)
        a_hat = wm.inverse_dynamics(p, s[:, :-1], s[:, 1:])
        return jnp.mean((pred - s[:, 1:]) ** 2) + jnp.mean((a_hat - actions) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    for group in ("encoder", "predictor", "inverse"):
        leaves = jax.tree.leaves(grads[group])
        assert all(np.all(np.isfinite(g)) for g in leaves), group
        assert sum(float(jnp.sum(g**2)) for g in leaves) > 0, group
    # The zero-initialised output layer of the predictor receives gradient.
    pred_grads = grads["predictor"]["params"]
    last = sorted(pred_grads, key=lambda k: int(k.split("_")[-1]))[-1]
    assert float(jnp.abs(pred_grads[last]["kernel"]).sum()) > 0
