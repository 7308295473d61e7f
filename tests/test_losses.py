"""Tests for jepa_jax.losses against independent NumPy references."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax import losses
from jepa_jax.losses import _epps_pulley, _random_directions

RTOL, ATOL = 1e-5, 1e-6


def _normal(seed, shape, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ----------------------------------------------------------------------- NumPy references


def np_variance(x, eps=1e-4):
    std = np.sqrt(np.var(np.asarray(x, np.float64), axis=-2, ddof=1) + eps)
    return np.mean(np.maximum(0.0, 1.0 - std))


def np_covariance(x):
    x = np.asarray(x, np.float64)
    flat = x.reshape((-1,) + x.shape[-2:])
    values = []
    for sample in flat:
        cov = np.cov(sample, rowvar=False)  # ddof=1
        off = cov - np.diag(np.diag(cov))
        values.append(np.sum(off**2) / x.shape[-1])
    return np.mean(values)


def np_vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    inv = np.mean((np.float64(x) - y) ** 2)
    var = np_variance(x) / 2 + np_variance(y) / 2
    cv = np_covariance(x) + np_covariance(y)
    return sim * inv + std * var + cov * cv, inv, var, cv


def np_epps_pulley(proj, num_points=17, t_max=3.0):
    """Trapezoid rule on the full symmetric grid [-t_max, t_max], complex ECF."""
    proj = np.asarray(proj, np.float64)
    t = np.linspace(-t_max, t_max, 2 * num_points - 1)
    ecf = np.mean(np.exp(1j * proj[:, :, None] * t), axis=0)  # (M, K)
    integrand = np.abs(ecf - np.exp(-(t**2) / 2)) ** 2 * np.exp(-(t**2) / 2)
    integral = np.sum((integrand[:, 1:] + integrand[:, :-1]) / 2 * np.diff(t), axis=-1)
    return proj.shape[0] * integral


# ------------------------------------------------------------------------------- VICReg


class TestVarianceLoss:
    def test_matches_numpy_2d(self):
        x = _normal(0, (8, 5), scale=0.5)
        np.testing.assert_allclose(losses.variance_loss(x), np_variance(x), rtol=RTOL)
        np.testing.assert_allclose(
            jax.jit(losses.variance_loss)(x), np_variance(x), rtol=RTOL, atol=ATOL
        )

    def test_leading_axes_average_per_step(self):
        x = _normal(1, (3, 6, 4), scale=0.7)
        expected = np.mean([np_variance(x[t]) for t in range(3)])
        np.testing.assert_allclose(jax.jit(losses.variance_loss)(x), expected, rtol=RTOL)

    def test_zero_when_std_above_one(self):
        x = _normal(2, (64, 3), scale=10.0)
        assert float(losses.variance_loss(x)) == 0.0

    def test_collapsed_is_maximal(self):
        np.testing.assert_allclose(
            losses.variance_loss(jnp.ones((4, 3))), 1 - np.sqrt(1e-4), rtol=RTOL
        )

    def test_grad_finite_on_collapse(self):
        g = jax.grad(losses.variance_loss)(jnp.ones((4, 3)))
        assert np.all(np.isfinite(g))

    def test_vmap(self):
        x = _normal(3, (2, 5, 3), scale=0.5)
        out = jax.vmap(losses.variance_loss)(x)
        np.testing.assert_allclose(out, [np_variance(x[0]), np_variance(x[1])], rtol=RTOL)

    def test_errors(self):
        with pytest.raises(ValueError, match="shape"):
            losses.variance_loss(jnp.ones(4))
        with pytest.raises(ValueError, match="floating"):
            losses.variance_loss(jnp.ones((4, 3), jnp.int32))
        with pytest.raises(ValueError, match="at least 2 samples"):
            losses.variance_loss(jnp.ones((1, 3)))

    def test_bfloat16_computed_in_float32(self):
        x = _normal(4, (8, 3), scale=0.5)
        out = losses.variance_loss(jnp.asarray(x, jnp.bfloat16))
        assert out.dtype == jnp.float32


class TestCovarianceLoss:
    def test_matches_numpy(self):
        x = _normal(5, (9, 4))
        np.testing.assert_allclose(losses.covariance_loss(x), np_covariance(x), rtol=RTOL)
        np.testing.assert_allclose(jax.jit(losses.covariance_loss)(x), np_covariance(x), rtol=RTOL)

    def test_leading_axes(self):
        x = _normal(6, (2, 3, 7, 4))
        np.testing.assert_allclose(losses.covariance_loss(x), np_covariance(x), rtol=RTOL)

    def test_zero_for_uncorrelated(self):
        # Orthogonal, zero-mean columns have a diagonal covariance.
        x = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
        np.testing.assert_allclose(losses.covariance_loss(x), 0.0, atol=ATOL)

    def test_grad_and_vmap(self):
        x = _normal(7, (2, 6, 3))
        g = jax.grad(lambda a: losses.covariance_loss(a))(x)
        assert g.shape == x.shape and np.all(np.isfinite(g))
        out = jax.vmap(losses.covariance_loss)(x)
        np.testing.assert_allclose(out, [np_covariance(x[0]), np_covariance(x[1])], rtol=RTOL)

    def test_errors(self):
        with pytest.raises(ValueError, match="shape"):
            losses.covariance_loss(jnp.ones(3))
        with pytest.raises(ValueError, match="floating"):
            losses.covariance_loss(np.ones((4, 3), np.int64))
        with pytest.raises(ValueError, match="at least 2 samples"):
            losses.covariance_loss(jnp.ones((1, 3)))


class TestVICReg:
    def test_matches_numpy(self):
        x, y = _normal(8, (10, 4), 0.5), _normal(9, (10, 4), 0.5)
        loss, aux = jax.jit(losses.vicreg)(x, y)
        exp_loss, inv, var, cov = np_vicreg(x, y)
        np.testing.assert_allclose(loss, exp_loss, rtol=RTOL)
        np.testing.assert_allclose(aux["invariance"], inv, rtol=RTOL)
        np.testing.assert_allclose(aux["variance"], var, rtol=RTOL)
        np.testing.assert_allclose(aux["covariance"], cov, rtol=RTOL)

    def test_coefficients(self):
        x, y = _normal(10, (6, 3)), _normal(11, (6, 3))
        loss, _ = losses.vicreg(x, y, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)
        np.testing.assert_allclose(loss, np_vicreg(x, y, 1.0, 2.0, 3.0)[0], rtol=RTOL)

    def test_grad_matches_finite_differences(self):
        x, y = _normal(12, (6, 3), 0.5), _normal(13, (6, 3), 0.5)
        with jax.enable_x64(True):
            x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
            f = lambda a, b: losses.vicreg(a, b)[0]
            gx, gy = jax.jit(jax.grad(f, argnums=(0, 1)))(x64, y64)
            assert gx.dtype == jnp.float64
            h = 1e-6
            for i, j in [(0, 0), (2, 1), (5, 2)]:
                e = jnp.zeros_like(x64).at[i, j].set(h)
                fd_x = (f(x64 + e, y64) - f(x64 - e, y64)) / (2 * h)
                fd_y = (f(x64, y64 + e) - f(x64, y64 - e)) / (2 * h)
                np.testing.assert_allclose(gx[i, j], fd_x, rtol=1e-6, atol=1e-8)
                np.testing.assert_allclose(gy[i, j], fd_y, rtol=1e-6, atol=1e-8)

    def test_vmap(self):
        x, y = _normal(14, (2, 5, 3)), _normal(15, (2, 5, 3))
        out, aux = jax.vmap(losses.vicreg)(x, y)
        assert out.shape == (2,) and aux["variance"].shape == (2,)
        np.testing.assert_allclose(out[1], np_vicreg(x[1], y[1])[0], rtol=RTOL)

    def test_errors(self):
        with pytest.raises(ValueError, match="shapes differ"):
            losses.vicreg(jnp.ones((4, 3)), jnp.ones((4, 2)))
        with pytest.raises(ValueError, match="shape"):
            losses.vicreg(jnp.ones(4), jnp.ones(4))
        with pytest.raises(ValueError, match="floating"):
            losses.vicreg(jnp.ones((4, 3)), jnp.ones((4, 3), jnp.int32))


# -------------------------------------------------------------------------------- SIGReg


class TestSigreg:
    def test_epps_pulley_matches_numpy(self):
        proj = _normal(16, (32, 5))
        proj[:, 1] *= 3.0  # one clearly non-standard column
        out = jax.jit(_epps_pulley, static_argnums=(1, 2))(proj, 17, 3.0)
        np.testing.assert_allclose(out, np_epps_pulley(proj), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            _epps_pulley(proj, 9, 2.0), np_epps_pulley(proj, 9, 2.0), rtol=1e-4, atol=1e-6
        )

    def test_directions_are_unit(self):
        d = _random_directions(jax.random.key(0), 6, 10, jnp.float32)
        assert d.shape == (6, 10)
        np.testing.assert_allclose(np.linalg.norm(d, axis=0), 1.0, rtol=1e-5)

    def test_sigreg_matches_numpy(self):
        x, key = _normal(17, (24, 6)), jax.random.key(3)
        directions = np.asarray(_random_directions(key, 6, 8, jnp.float32))
        expected = np.mean(np_epps_pulley(np.float64(x) @ directions))
        out = jax.jit(losses.sigreg, static_argnums=(2,))(key, x, 8)
        np.testing.assert_allclose(out, expected, rtol=1e-4)

    def test_gaussian_small_collapsed_and_scaled_large(self):
        key = jax.random.key(0)
        gauss = _normal(18, (256, 8))
        uniform = np.random.default_rng(19).uniform(-3, 3, (256, 8)).astype(np.float32)
        g = float(losses.sigreg(key, gauss, 32))
        # Under the null N * statistic is O(1) (mean ~1.06 for t_max=3); otherwise O(N).
        assert g < 3.0
        assert float(losses.sigreg(key, np.zeros((256, 8), np.float32), 32)) > 20 * g
        assert float(losses.sigreg(key, uniform, 32)) > 10 * g
        assert float(losses.sigreg(key, 0.2 * gauss, 32)) > 20 * g

    def test_grad_finite_and_key_matters(self):
        x = _normal(20, (16, 4))
        g = jax.grad(losses.sigreg, argnums=1)(jax.random.key(0), x, 8)
        assert g.shape == x.shape and np.all(np.isfinite(g))
        g0 = jax.grad(losses.sigreg, argnums=1)(jax.random.key(0), np.zeros_like(x), 8)
        assert np.all(np.isfinite(g0))
        a = losses.sigreg(jax.random.key(0), x, 8)
        b = losses.sigreg(jax.random.key(1), x, 8)
        assert not np.allclose(a, b)

    def test_vmap_over_leading_axis(self):
        x, key = _normal(21, (3, 16, 4)), jax.random.key(2)
        out = jax.vmap(losses.sigreg, in_axes=(None, 0, None))(key, x, 8)
        np.testing.assert_allclose(out[2], losses.sigreg(key, x[2], 8), rtol=1e-5)
        # Leading axes passed directly are averaged over.
        np.testing.assert_allclose(losses.sigreg(key, x, 8), np.mean(out), rtol=1e-5)

    def test_errors(self):
        key = jax.random.key(0)
        with pytest.raises(ValueError, match="shape"):
            losses.sigreg(key, jnp.ones(4))
        with pytest.raises(ValueError, match="floating"):
            losses.sigreg(key, jnp.ones((4, 3), jnp.int32))
        with pytest.raises(ValueError, match="num_points"):
            losses.sigreg(key, jnp.ones((4, 3)), num_points=1)


# ------------------------------------------------------------------ prediction and temporal


class TestPrediction:
    def test_error_and_loss(self):
        p, t = _normal(22, (2, 3, 4)), _normal(23, (2, 3, 4))
        err = jax.jit(losses.prediction_error)(p, t)
        assert err.shape == (2, 3)
        np.testing.assert_allclose(err, np.mean((p - t) ** 2, axis=-1), rtol=RTOL)
        np.testing.assert_allclose(
            jax.jit(losses.prediction_loss)(p, t), np.mean((p - t) ** 2), rtol=RTOL
        )
        g = jax.grad(losses.prediction_loss)(p, t)
        np.testing.assert_allclose(g, 2 * (p - t) / p.size, rtol=1e-5)

    def test_vmap(self):
        p, t = _normal(24, (3, 4, 2)), _normal(25, (3, 4, 2))
        out = jax.vmap(losses.prediction_loss)(p, t)
        np.testing.assert_allclose(out, np.mean((p - t) ** 2, axis=(1, 2)), rtol=RTOL)

    def test_errors(self):
        with pytest.raises(ValueError, match="shapes differ"):
            losses.prediction_loss(jnp.ones((2, 3)), jnp.ones((3, 2)))
        with pytest.raises(ValueError, match="shape"):
            losses.prediction_error(jnp.ones(()), jnp.ones(()))
        with pytest.raises(ValueError, match="floating"):
            losses.prediction_error(jnp.ones(3, jnp.int32), jnp.ones(3))


class TestInverseDynamicsLoss:
    def test_matches_numpy(self):
        p, a = _normal(26, (4, 5, 2)), _normal(27, (4, 5, 2))
        np.testing.assert_allclose(
            jax.jit(losses.inverse_dynamics_loss)(p, a), np.mean((p - a) ** 2), rtol=RTOL
        )
        out = jax.vmap(losses.inverse_dynamics_loss)(p, a)
        np.testing.assert_allclose(out, np.mean((p - a) ** 2, axis=(1, 2)), rtol=RTOL)
        assert np.all(np.isfinite(jax.grad(losses.inverse_dynamics_loss)(p, a)))

    def test_errors(self):
        with pytest.raises(ValueError, match="shapes differ"):
            losses.inverse_dynamics_loss(jnp.ones((4, 2)), jnp.ones((4, 3)))
        with pytest.raises(ValueError, match="floating"):
            losses.inverse_dynamics_loss(jnp.ones((4, 2)), jnp.ones((4, 2), jnp.int32))


class TestTemporalSmoothnessLoss:
    def test_matches_numpy(self):
        e = _normal(28, (2, 5, 3))
        expected = np.mean(np.sum(np.diff(e, axis=1) ** 2, axis=-1))
        np.testing.assert_allclose(jax.jit(losses.temporal_smoothness_loss)(e), expected, rtol=RTOL)
        assert np.all(np.isfinite(jax.grad(losses.temporal_smoothness_loss)(e)))

    def test_vmap(self):
        e = _normal(29, (3, 2, 4, 3))
        out = jax.vmap(losses.temporal_smoothness_loss)(e)
        expected = np.mean(np.sum(np.diff(e, axis=2) ** 2, axis=-1), axis=(1, 2))
        np.testing.assert_allclose(out, expected, rtol=RTOL)

    def test_errors(self):
        with pytest.raises(ValueError, match="shape"):
            losses.temporal_smoothness_loss(jnp.ones((4, 3)))
        with pytest.raises(ValueError, match="T >= 2"):
            losses.temporal_smoothness_loss(jnp.ones((4, 1, 3)))
        with pytest.raises(ValueError, match="floating"):
            losses.temporal_smoothness_loss(jnp.ones((4, 2, 3), jnp.int32))


class TestTemporalStraightnessLoss:
    def test_matches_numpy(self):
        e = _normal(30, (2, 5, 3))
        v = np.diff(np.float64(e), axis=1)
        v0, v1 = v[:, :-1], v[:, 1:]
        cos = np.sum(v0 * v1, -1) / (np.linalg.norm(v0, axis=-1) * np.linalg.norm(v1, axis=-1))
        np.testing.assert_allclose(
            jax.jit(losses.temporal_straightness_loss)(e), np.mean(1 - cos), rtol=1e-4
        )

    def test_straight_line_is_zero_and_reversal_is_two(self):
        t = np.arange(4, dtype=np.float32)[None, :, None]
        line = t * np.array([1.0, 2.0, -1.0], np.float32)
        np.testing.assert_allclose(losses.temporal_straightness_loss(line), 0.0, atol=1e-5)
        zigzag = np.array([[[0.0], [1.0], [0.0]]], np.float32)
        np.testing.assert_allclose(losses.temporal_straightness_loss(zigzag), 2.0, rtol=1e-5)

    def test_grad_finite_for_static_trajectory(self):
        g = jax.grad(losses.temporal_straightness_loss)(jnp.ones((2, 4, 3)))
        assert np.all(np.isfinite(g))

    def test_vmap(self):
        e = _normal(31, (2, 2, 4, 3))
        out = jax.vmap(losses.temporal_straightness_loss)(e)
        np.testing.assert_allclose(out[1], losses.temporal_straightness_loss(e[1]), rtol=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match="T >= 3"):
            losses.temporal_straightness_loss(jnp.ones((4, 2, 3)))
        with pytest.raises(ValueError, match="shape"):
            losses.temporal_straightness_loss(jnp.ones((4, 3)))


# -------------------------------------------------------------------------- JEPA objective


class TestJepaMultistepLoss:
    B, T, D = 4, 3, 5

    def _inputs(self, seed=32):
        pred = _normal(seed, (self.B, self.T - 1, self.D))
        emb = _normal(seed + 1, (self.B, self.T, self.D), scale=0.5)
        return pred, emb

    def test_vicreg_matches_numpy(self):
        pred, emb = self._inputs()
        fn = jax.jit(lambda p, e: losses.jepa_multistep_loss(p, e, sim_coeff=2.0))
        loss, aux = fn(pred, emb)
        inv = np.mean((pred - emb[:, 1:]) ** 2)
        var = np.mean([np_variance(emb[:, t]) for t in range(self.T)])
        cov = np.mean([np_covariance(emb[:, t]) for t in range(self.T)])
        np.testing.assert_allclose(aux["invariance"], inv, rtol=RTOL)
        np.testing.assert_allclose(aux["variance"], var, rtol=RTOL)
        np.testing.assert_allclose(aux["covariance"], cov, rtol=RTOL)
        np.testing.assert_allclose(loss, 2.0 * inv + 25.0 * var + cov, rtol=RTOL)

    def test_sigreg(self):
        pred, emb = self._inputs()
        key = jax.random.key(4)
        fn = jax.jit(
            lambda p, e, k: losses.jepa_multistep_loss(
                p, e, regularizer="sigreg", sigreg_key=k, sigreg_coeff=0.5, num_projections=8
            )
        )
        loss, aux = fn(pred, emb, key)
        assert set(aux) == {"invariance", "sigreg"}
        flat = emb.reshape(self.B * self.T, self.D)
        directions = np.asarray(_random_directions(key, self.D, 8, jnp.float32))
        expected_sig = np.mean(np_epps_pulley(np.float64(flat) @ directions))
        np.testing.assert_allclose(aux["sigreg"], expected_sig, rtol=1e-4)
        np.testing.assert_allclose(loss, aux["invariance"] + 0.5 * aux["sigreg"], rtol=RTOL)

    def test_none(self):
        pred, emb = self._inputs()
        loss, aux = losses.jepa_multistep_loss(pred, emb, regularizer="none", sim_coeff=3.0)
        assert set(aux) == {"invariance"}
        np.testing.assert_allclose(loss, 3.0 * np.mean((pred - emb[:, 1:]) ** 2), rtol=RTOL)

    def test_grads_finite(self):
        pred, emb = self._inputs()
        for reg in losses.REGULARIZERS:
            f = lambda p, e, reg=reg: losses.jepa_multistep_loss(
                p, e, regularizer=reg, sigreg_key=jax.random.key(0), num_projections=8
            )[0]
            gp, ge = jax.grad(f, argnums=(0, 1))(pred, emb)
            assert np.all(np.isfinite(gp)) and np.all(np.isfinite(ge))

    def test_vmap(self):
        pred = _normal(34, (2, self.B, self.T - 1, self.D))
        emb = _normal(35, (2, self.B, self.T, self.D))
        out, _ = jax.vmap(losses.jepa_multistep_loss)(pred, emb)
        np.testing.assert_allclose(
            out[1], losses.jepa_multistep_loss(pred[1], emb[1])[0], rtol=RTOL
        )

    def test_errors(self):
        pred, emb = self._inputs()
        with pytest.raises(ValueError, match="vicreg.*sigreg.*none"):
            losses.jepa_multistep_loss(pred, emb, regularizer="barlow")
        with pytest.raises(ValueError, match="sigreg_key"):
            losses.jepa_multistep_loss(pred, emb, regularizer="sigreg")
        with pytest.raises(ValueError, match="T-1"):
            losses.jepa_multistep_loss(emb, emb)
        with pytest.raises(ValueError, match="shape"):
            losses.jepa_multistep_loss(pred[0], emb)
        with pytest.raises(ValueError, match="shape"):
            losses.jepa_multistep_loss(pred, emb[0])
        with pytest.raises(ValueError, match="T >= 2"):
            losses.jepa_multistep_loss(pred[:, :0], emb[:, :1])
        with pytest.raises(ValueError, match="floating"):
            losses.jepa_multistep_loss(pred, emb.astype(np.int32))


# ------------------------------------------------------------------------------ sharding

_SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from jepa_jax import losses

    assert jax.device_count() == 4, jax.devices()
    key = jax.random.key(0)
    x = np.random.default_rng(0).normal(size=(2, 16, 8)).astype(np.float32) * 0.8

    def all_losses(k, a, axis_name=None):
        return (
            losses.sigreg(k, a, 16, axis_name=axis_name),
            losses.variance_loss(a, axis_name=axis_name),
            losses.covariance_loss(a, axis_name=axis_name),
        )

    def total(k, a, axis_name=None):
        return sum(all_losses(k, a, axis_name))

    ref = jax.jit(all_losses)(key, x)
    ref_grad = jax.jit(jax.grad(total, argnums=1))(key, x)
    spec = P(None, "b", None)  # shard the sample axis N
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((4,), ("b",), axis_types=(axis_type,))
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        assert len(xs.addressable_shards) == 4
        # GSPMD: plain jit on a sharded batch gives the global statistics.
        np.testing.assert_allclose(jax.jit(all_losses)(key, xs), ref, rtol=2e-5, atol=1e-6)
        grad = jax.jit(jax.grad(total, argnums=1))(key, xs)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
        # Features sharded instead (contractions over a sharded D).
        xd = jax.device_put(x, NamedSharding(mesh, P(None, None, "b")))
        np.testing.assert_allclose(jax.jit(all_losses)(key, xd), ref, rtol=2e-5, atol=1e-6)

    # shard_map: each device sees N/4 samples; axis_name reduces across devices.
    mesh = jax.make_mesh((4,), ("b",))
    xs = jax.device_put(x, NamedSharding(mesh, spec))

    def smap(f, out_specs=P()):
        return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P(), spec), out_specs=out_specs))

    mapped = smap(lambda k, a: all_losses(k, a, "b"))
    np.testing.assert_allclose(mapped(key, xs), ref, rtol=2e-5, atol=1e-6)
    grad_mapped = smap(jax.grad(lambda k, a: total(k, a, "b"), argnums=1), out_specs=spec)
    np.testing.assert_allclose(grad_mapped(key, xs), ref_grad, rtol=1e-4, atol=1e-6)
    # Without axis_name the per-shard statistics differ (sanity check of the test).
    local = smap(lambda k, a: jax.lax.pmean(total(k, a), "b"))
    assert not np.allclose(local(key, xs), sum(ref), rtol=1e-3)
    print("SHARDING_OK")
    """
)


class TestSharding:
    def test_sharded_matches_unsharded(self):
        env = dict(os.environ)
        # Must be set before jax is imported, hence the subprocess.
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
        result = subprocess.run(
            [sys.executable, "-c", _SHARDING_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "SHARDING_OK" in result.stdout
