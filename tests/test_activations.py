"""The custom-derivative GELU against jax.nn.gelu and a NumPy derivative."""

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax.networks.activations import gelu

X = np.linspace(-7.0, 7.0, 2001, dtype=np.float64)


def _numpy_gelu_slope(x):
    """d/dx of the tanh-approximated GELU, written out by hand in float64."""
    c = np.sqrt(2.0 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)


def test_values_equal_jax_gelu():
    x = jnp.asarray(X, jnp.float32)
    np.testing.assert_array_equal(jax.jit(gelu)(x), jax.jit(jax.nn.gelu)(x))
    assert gelu(jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.bfloat16


def test_first_derivative_matches_numpy_both_modes():
    x = jnp.asarray(X, jnp.float32)
    want = _numpy_gelu_slope(X)
    reverse = jax.vmap(jax.grad(gelu))(x)
    forward = jax.jvp(gelu, (x,), (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(reverse, want, atol=1e-5)  # float32 rounding of 1 + t
    np.testing.assert_allclose(forward, want, atol=1e-5)


def test_second_derivative_matches_finite_differences():
    eps = 1e-4
    want = (_numpy_gelu_slope(X + eps) - _numpy_gelu_slope(X - eps)) / (2 * eps)
    with jax.enable_x64(True):
        got = jax.vmap(jax.grad(jax.grad(gelu)))(jnp.asarray(X, jnp.float64))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_gradient_through_an_mlp_matches_jax_gelu():
    k1, k2 = jax.random.split(jax.random.key(0))
    w = jax.random.normal(k1, (5, 7))
    x = jax.random.normal(k2, (3, 5))

    def loss(w, act):
        return jnp.sum(jnp.sin(act(x @ w)))

    np.testing.assert_allclose(jax.grad(loss)(w, gelu), jax.grad(loss)(w, jax.nn.gelu),
                               rtol=1e-5, atol=1e-6)
