"""Losses for joint-embedding predictive architectures (JEPAs).

Every loss is a pure function of arrays (plus static Python options) in the style of
``optax.losses``: no module state, safe under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
Shape, rank and dtype problems raise ``ValueError`` from the static shapes, i.e. at trace
time, before anything runs.

Terms:

* :func:`variance_loss`, :func:`covariance_loss`, :func:`vicreg` -- VICReg (Bardes, Ponce &
  LeCun, ICLR 2022).
* :func:`sigreg` -- SIGReg, sketched isotropic-Gaussian regularisation from LeJEPA
  (Balestriero & LeCun, 2025).
* :func:`prediction_error`, :func:`prediction_loss`, :func:`inverse_dynamics_loss`,
  :func:`temporal_smoothness_loss`, :func:`temporal_straightness_loss` -- prediction and
  temporal terms used by JEPA world models (e.g. PLDM, Sobal et al. 2025).
* :func:`jepa_multistep_loss` -- multistep latent-prediction loss of a world model, with a
  regulariser chosen from :data:`REGULARIZERS`.
* :func:`gaussian_kl` -- the regulariser of a latent variable z: KL of the amortised
  posterior ``q(z | s, a, s')`` to the prior N(0, I) (Kingma & Welling, 2014; the
  information cost that keeps z from copying the next state).
* :func:`mixture_nll` -- negative log-likelihood under a Gaussian mixture: fits a learned
  prior ``p(z | s)`` to posterior samples (Bishop's mixture density networks, 1994).

Writing a new loss: write a pure function with the signature of
:func:`jepa_multistep_loss` -- ``(predicted, embeddings, **options) -> (loss, aux)``, where
``aux`` maps names to unweighted scalar terms for logging -- and compose the terms here::

    from jepa_jax import losses

    def smooth_jepa_loss(predicted, embeddings, *, smooth_coeff=0.1, **kwargs):
        loss, aux = losses.jepa_multistep_loss(predicted, embeddings, **kwargs)
        smooth = losses.temporal_smoothness_loss(embeddings)
        return loss + smooth_coeff * smooth, {**aux, "smoothness": smooth}

Sharded batches: under ``jax.jit`` with the batch sharded by a ``NamedSharding``, plain
``jnp.mean`` is already a global mean (XLA inserts the collectives), so nothing is needed;
with ``AxisType.Explicit`` mesh axes the contractions over a sharded axis request a
replicated result explicitly.
Inside ``jax.shard_map`` or ``jax.pmap`` each device only sees its shard; pass the mapped
batch axis as ``axis_name`` to :func:`variance_loss`, :func:`covariance_loss` and
:func:`sigreg` so that batch statistics (moments, empirical characteristic function) are
summed across devices *before* the nonlinearity, giving the same value as the unsharded
batch.
"""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

__all__ = [
    "REGULARIZERS",
    "covariance_loss",
    "gaussian_kl",
    "mixture_nll",
    "inverse_dynamics_loss",
    "jepa_multistep_loss",
    "prediction_error",
    "prediction_loss",
    "sigreg",
    "temporal_smoothness_loss",
    "temporal_straightness_loss",
    "variance_loss",
    "vicreg",
]

#: Names accepted by ``jepa_multistep_loss(..., regularizer=...)``.
REGULARIZERS = ("vicreg", "sigreg", "none")

AxisName = Hashable | None


# ----------------------------------------------------------------------------- validation


def _as_float(name: str, x) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")
    # Batch statistics in bf16/f16 are too coarse; compute in at least float32.
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_min_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    if x.ndim < rank:
        raise ValueError(f"{name} must have shape {layout}, got shape {x.shape}")


def _check_rank(name: str, x: jax.Array, rank: int, layout: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have shape {layout}, got shape {x.shape}")


def _check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} shapes differ: {a.shape} vs {b.shape}")


def _check_batch(name: str, x: jax.Array, axis_name: AxisName) -> None:
    # With axis_name a device may legitimately hold a single sample of a larger batch.
    if axis_name is None and x.shape[-2] < 2:
        raise ValueError(
            f"{name} needs at least 2 samples along axis -2 for an unbiased (co)variance, "
            f"got shape {x.shape}"
        )


# ----------------------------------------------------------------------- batch statistics


def _batch_mean(x: jax.Array, axis: int, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
    """Mean over ``axis`` (kept) and the sample count, global over ``axis_name`` shards."""
    if axis_name is None:
        return jnp.mean(x, axis=axis, keepdims=True), jnp.asarray(x.shape[axis], x.dtype)
    # psum(sum) / psum(count) equals pmean of the per-device means (shards are equal-sized).
    count = jax.lax.psum(x.shape[axis], axis_name)
    total = jax.lax.psum(jnp.sum(x, axis=axis, keepdims=True), axis_name)
    return total / count, jnp.asarray(count, x.dtype)


def _centered(x: jax.Array, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
    """``x`` minus its (global) mean over axis -2, and the global sample count."""
    mean, count = _batch_mean(x, -2, axis_name)
    # Centre before the second moment: E[x^2] - E[x]^2 cancels catastrophically.
    return x - mean, count


def _contraction_sharding(x: jax.Array, tail: int) -> NamedSharding | None:
    """Output sharding for a contraction replacing the last ``tail`` axes of ``x``.

    With ``AxisType.Explicit`` mesh axes a contraction over a sharded axis is a type error
    unless the output sharding is given; keep the leading sharding and replicate the new
    trailing axes. ``None`` (JAX decides) when those axes are unsharded or sharding is Auto.
    """
    sharding = jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None or all(p is None for p in spec[-tail:]):
        return None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec[:-tail], *([None] * tail)))


def _psum(x: jax.Array, axis_name: AxisName) -> jax.Array:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


# -------------------------------------------------------------------------------- VICReg


def variance_loss(x, eps: float = 1e-4, axis_name: AxisName = None) -> jax.Array:
    """VICReg variance (hinge-on-std) term.

    ``mean_d relu(1 - sqrt(Var_n[x_nd] + eps))`` with the unbiased (ddof=1) variance over
    the samples. Inputs with leading axes ``(..., N, D)`` -- e.g. ``(T, N, D)`` to apply it
    per time step across the batch as in PLDM -- are reduced per leading index and then
    averaged over the leading axes.

    Args:
      x: embeddings, shape ``(..., N, D)`` with ``N >= 2``.
      eps: added to the variance for a finite gradient of the square root at zero.
      axis_name: mapped axis over which ``N`` is sharded inside ``shard_map``/``pmap``;
        the moments are summed across it so the result equals the unsharded one.

    Returns:
      Scalar loss, 0 when every dimension has standard deviation >= 1.

    References:
      Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning", ICLR 2022.
    """
    x = _as_float("x", x)
    _check_min_rank("x", x, 2, "(..., N, D)")
    _check_batch("x", x, axis_name)
    xc, count = _centered(x, axis_name)
    var = _psum(jnp.sum(jnp.square(xc), axis=-2), axis_name) / (count - 1)
    return jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(var + eps)))


def covariance_loss(x, axis_name: AxisName = None) -> jax.Array:
    """VICReg covariance (decorrelation) term.

    Sum of the squared off-diagonal entries of the unbiased (ddof=1) covariance matrix over
    the samples, divided by ``D``. Leading axes are averaged over as in
    :func:`variance_loss`.

    Args:
      x: embeddings, shape ``(..., N, D)`` with ``N >= 2``.
      axis_name: mapped axis over which ``N`` is sharded inside ``shard_map``/``pmap``.

    Returns:
      Scalar loss, 0 for decorrelated dimensions.

    References:
      Bardes, Ponce & LeCun, "VICReg", ICLR 2022.
    """
    x = _as_float("x", x)
    _check_min_rank("x", x, 2, "(..., N, D)")
    _check_batch("x", x, axis_name)
    dim = x.shape[-1]
    xc, count = _centered(x, axis_name)
    gram = jnp.einsum("...nd,...ne->...de", xc, xc, out_sharding=_contraction_sharding(xc, 2))
    cov = _psum(gram, axis_name) / (count - 1)
    off_diag = jnp.sum(jnp.square(cov), axis=(-2, -1)) - jnp.sum(
        jnp.square(jnp.diagonal(cov, axis1=-2, axis2=-1)), axis=-1
    )
    return jnp.mean(off_diag / dim)


def vicreg(
    x, y, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """VICReg loss between two batches of embeddings, as in the paper's pseudocode.

    ``sim_coeff * MSE(x, y) + std_coeff * (v(x) + v(y)) / 2 + cov_coeff * (c(x) + c(y))``
    with ``v`` = :func:`variance_loss` and ``c`` = :func:`covariance_loss`.

    Args:
      x: embeddings of the first view, shape ``(N, D)`` (or ``(..., N, D)``), ``N >= 2``.
      y: embeddings of the second view, same shape as ``x``.
      sim_coeff: weight of the invariance (MSE) term.
      std_coeff: weight of the variance term.
      cov_coeff: weight of the covariance term.

    Returns:
      ``(loss, aux)``: the scalar weighted loss and a dict with the unweighted scalar
      terms ``invariance``, ``variance`` and ``covariance``.

    References:
      Bardes, Ponce & LeCun, "VICReg", ICLR 2022 (Algorithm 1).
    """
    x = _as_float("x", x)
    y = _as_float("y", y)
    _check_min_rank("x", x, 2, "(N, D)")
    _check_same_shape("x", x, "y", y)
    invariance = jnp.mean(jnp.square(x - y))
    variance = variance_loss(x) / 2 + variance_loss(y) / 2
    covariance = covariance_loss(x) + covariance_loss(y)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


# -------------------------------------------------------------------------------- SIGReg


def _random_directions(key: jax.Array, dim: int, num: int, dtype) -> jax.Array:
    """``num`` directions drawn uniformly on the unit sphere of R^dim, shape ``(dim, num)``."""
    directions = jax.random.normal(key, (dim, num), dtype=dtype)
    return directions / jnp.linalg.norm(directions, axis=0, keepdims=True)


def _epps_pulley(
    projections, num_points: int = 17, t_max: float = 3.0, axis_name: AxisName = None
) -> jax.Array:
    """Epps-Pulley statistic of each column of ``projections`` against N(0, 1).

    ``N * integral |phi_emp(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` over ``[-t_max, t_max]``,
    by the trapezoid rule on ``num_points`` nodes of ``[0, t_max]`` (the integrand is even,
    so the half-line integral is doubled).

    Args:
      projections: shape ``(..., N, M)``, ``N`` samples of ``M`` univariate variables.
      num_points: trapezoid nodes on ``[0, t_max]``, at least 2.
      t_max: upper integration limit.
      axis_name: mapped axis over which ``N`` is sharded inside ``shard_map``/``pmap``.

    Returns:
      Statistics of shape ``(..., M)``.
    """
    t = jnp.linspace(0.0, t_max, num_points, dtype=projections.dtype)
    dt = t_max / (num_points - 1)
    # Trapezoid weights on [0, t_max], doubled for [-t_max, 0]: 2*dt inside, dt at the ends.
    trapezoid = jnp.full((num_points,), 2 * dt, projections.dtype).at[jnp.array([0, -1])].set(dt)
    gauss_cf = jnp.exp(-0.5 * jnp.square(t))  # also the weight function w(t)
    xt = projections[..., None] * t  # (..., N, M, K)
    # The ECF is a batch mean: reduce it globally before squaring.
    ecf_real, count = _batch_mean(jnp.cos(xt), -3, axis_name)
    ecf_imag, _ = _batch_mean(jnp.sin(xt), -3, axis_name)
    err = jnp.square(ecf_real[..., 0, :, :] - gauss_cf) + jnp.square(ecf_imag[..., 0, :, :])
    return count * (err @ (trapezoid * gauss_cf))


def sigreg(
    key: jax.Array,
    x,
    num_projections: int = 256,
    num_points: int = 17,
    t_max: float = 3.0,
    axis_name: AxisName = None,
) -> jax.Array:
    """SIGReg: sliced Epps-Pulley test of ``x`` against an isotropic Gaussian.

    Projects the embeddings onto ``num_projections`` random unit directions and averages
    the Epps-Pulley statistic (see :func:`_epps_pulley`) of each 1-D projection against
    N(0, 1). Minimising it pushes the embedding distribution towards N(0, I), which LeJEPA
    shows prevents collapse and is optimal for downstream linear probes.

    Args:
      key: PRNG key for the directions; draw a fresh one each step. Under
        ``shard_map``/``pmap`` it must be the same on every device.
      x: embeddings, shape ``(..., N, D)``; leading axes are averaged over.
      num_projections: number of random directions ``M``.
      num_points: trapezoid nodes on ``[0, t_max]``, at least 2.
      t_max: upper integration limit of the characteristic-function distance.
      axis_name: mapped axis over which ``N`` is sharded inside ``shard_map``/``pmap``;
        the empirical characteristic function and ``N`` are then reduced over it.

    Returns:
      Scalar statistic, ``O(1)`` for Gaussian samples and ``O(N)`` otherwise.

    References:
      Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
      the Heuristics", 2025.
    """
    x = _as_float("x", x)
    _check_min_rank("x", x, 2, "(..., N, D)")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    if t_max <= 0:
        raise ValueError(f"t_max must be positive, got {t_max}")
    directions = _random_directions(key, x.shape[-1], num_projections, x.dtype)
    projections = jnp.matmul(x, directions, out_sharding=_contraction_sharding(x, 1))
    return jnp.mean(_epps_pulley(projections, num_points, t_max, axis_name))


# ------------------------------------------------------------------ prediction and temporal


def prediction_error(predicted, target) -> jax.Array:
    """Per-example squared prediction error, averaged over the feature axis.

    Args:
      predicted: predictions, shape ``(..., D)``.
      target: targets, same shape as ``predicted``.

    Returns:
      Array of shape ``(...)``; reduce it yourself (e.g. masked or discounted mean).
    """
    predicted = _as_float("predicted", predicted)
    target = _as_float("target", target)
    _check_min_rank("predicted", predicted, 1, "(..., D)")
    _check_same_shape("predicted", predicted, "target", target)
    return jnp.mean(jnp.square(predicted - target), axis=-1)


def prediction_loss(predicted, target) -> jax.Array:
    """Mean squared prediction error over all elements (JEPA invariance term).

    Args:
      predicted: predictions, shape ``(..., D)``.
      target: targets, same shape as ``predicted``.

    Returns:
      Scalar loss.
    """
    return jnp.mean(prediction_error(predicted, target))


def inverse_dynamics_loss(predicted_actions, actions) -> jax.Array:
    """Inverse-dynamics loss: MSE between actions predicted from ``(s_t, s_{t+1})`` and taken.

    Anchors the embedding to the controllable state (PLDM, Sobal et al. 2025).

    Args:
      predicted_actions: shape ``(..., A)``.
      actions: same shape as ``predicted_actions``.

    Returns:
      Scalar loss.
    """
    predicted_actions = _as_float("predicted_actions", predicted_actions)
    actions = _as_float("actions", actions)
    _check_min_rank("predicted_actions", predicted_actions, 1, "(..., A)")
    _check_same_shape("predicted_actions", predicted_actions, "actions", actions)
    return jnp.mean(jnp.square(predicted_actions - actions))


def temporal_smoothness_loss(embeddings) -> jax.Array:
    """Temporal smoothness: mean over batch and time of ``||s_{t+1} - s_t||^2``.

    Args:
      embeddings: shape ``(B, T, D)`` with ``T >= 2``.

    Returns:
      Scalar loss (squared norm summed over ``D``, averaged over ``B`` and ``T - 1``).

    References:
      Sobal et al., "Learning from Reward-Free Offline Data: A Case for Planning with
      Latent Dynamics Models" (PLDM), 2025.
    """
    embeddings = _as_float("embeddings", embeddings)
    _check_rank("embeddings", embeddings, 3, "(B, T, D)")
    if embeddings.shape[1] < 2:
        raise ValueError(f"embeddings needs T >= 2 time steps, got shape {embeddings.shape}")
    velocity = embeddings[:, 1:] - embeddings[:, :-1]
    return jnp.mean(jnp.sum(jnp.square(velocity), axis=-1))


def temporal_straightness_loss(embeddings, eps: float = 1e-8) -> jax.Array:
    """Temporal straightness: mean of ``1 - cos(s_{t+1} - s_t, s_{t+2} - s_{t+1})``.

    Args:
      embeddings: shape ``(B, T, D)`` with ``T >= 3``.
      eps: added to the squared norms so a zero velocity has a finite gradient.

    Returns:
      Scalar in ``[0, 2]``, 0 for trajectories moving along straight lines.

    References:
      Henaff, Goris & Simoncelli, "Perceptual straightening of natural videos", Nature
      Neuroscience 2019.
    """
    embeddings = _as_float("embeddings", embeddings)
    _check_rank("embeddings", embeddings, 3, "(B, T, D)")
    if embeddings.shape[1] < 3:
        raise ValueError(f"embeddings needs T >= 3 time steps, got shape {embeddings.shape}")
    velocity = embeddings[:, 1:] - embeddings[:, :-1]
    v0, v1 = velocity[:, :-1], velocity[:, 1:]
    norm0 = jnp.sqrt(jnp.sum(jnp.square(v0), axis=-1) + eps)
    norm1 = jnp.sqrt(jnp.sum(jnp.square(v1), axis=-1) + eps)
    cos = jnp.sum(v0 * v1, axis=-1) / (norm0 * norm1)
    return jnp.mean(1.0 - cos)


# ---------------------------------------------------------------------- latent variable z


def gaussian_kl(mean, log_var) -> jax.Array:
    """KL divergence of a diagonal Gaussian to the standard normal, per example.

    ``KL(N(mean, diag(exp(log_var))) || N(0, I)) = 0.5 * sum_k (exp(lv_k) + mean_k^2 - 1 -
    lv_k)``, summed over the last axis (the z dimensions): the number of nats the posterior
    of a latent variable spends on one example. In a latent-variable world model it is the
    price of each bit z carries about the next state, so that z only carries what the
    current state and action cannot predict; with the prior N(0, I) it also makes prior
    samples look like the posterior samples the predictor was trained on.

    Args:
      mean: posterior means, shape ``(..., Z)``.
      log_var: posterior log-variances, same shape as ``mean``.

    Returns:
      Array of shape ``(...)`` (>= 0, 0 iff mean = 0 and log_var = 0); reduce it yourself.

    Example::

      >>> float(gaussian_kl(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0])))
      0.5

    References:
      Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (appendix B);
      LeCun, "A Path Towards Autonomous Machine Intelligence", 2022 (section 4.8: latent
      variables and their regularisation).
    """
    mean = _as_float("mean", mean)
    log_var = _as_float("log_var", log_var)
    _check_min_rank("mean", mean, 1, "(..., Z)")
    _check_same_shape("mean", mean, "log_var", log_var)
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def mixture_nll(z, logits, means, log_stds) -> jax.Array:
    """Negative log-likelihood of ``z`` under a mixture of diagonal Gaussians, per example.

    ``-log sum_m softmax(logits)_m N(z; means_m, diag(exp(log_stds_m))^2)``.

    Args:
      z: points, shape ``(..., Z)``.
      logits: unnormalised log mixture weights, shape ``(..., M)``.
      means: component means, shape ``(..., M, Z)``.
      log_stds: component log standard deviations, shape ``(..., M, Z)``.

    Returns:
      Array of shape ``(...)``; reduce it yourself.

    Example::

      >>> round(float(mixture_nll(jnp.zeros(1), jnp.zeros(1), jnp.zeros((1, 1)),
      ...                         jnp.zeros((1, 1)))), 4)   # 0.5 log(2 pi)
      0.9189

    References:
      Bishop, "Mixture Density Networks", Aston University technical report, 1994.
    """
    z = _as_float("z", z)
    logits = _as_float("logits", logits)
    means = _as_float("means", means)
    log_stds = _as_float("log_stds", log_stds)
    _check_min_rank("z", z, 1, "(..., Z)")
    _check_same_shape("means", means, "log_stds", log_stds)
    expected = (*z.shape[:-1], logits.shape[-1], z.shape[-1])
    if means.shape != expected or logits.shape[:-1] != z.shape[:-1]:
        raise ValueError(f"for z of shape {z.shape} and logits of shape {logits.shape}, "
                         f"means and log_stds must have shape {expected}, got {means.shape}")
    scaled = (z[..., None, :] - means) * jnp.exp(-log_stds)
    log_comp = -0.5 * jnp.sum(jnp.square(scaled) + 2.0 * log_stds + jnp.log(2.0 * jnp.pi),
                              axis=-1)
    return -jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + log_comp, axis=-1)


# --------------------------------------------------------------------------- JEPA objective


def jepa_multistep_loss(
    predicted,
    embeddings,
    *,
    sim_coeff: float = 1.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    regularizer: str = "vicreg",
    sigreg_key: jax.Array | None = None,
    sigreg_coeff: float = 1.0,
    num_projections: int = 256,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multistep JEPA world-model loss: latent prediction plus anti-collapse regulariser.

    ``sim_coeff * MSE(predicted, embeddings[:, 1:])`` plus, depending on ``regularizer``:

    * ``"vicreg"``: ``std_coeff * variance + cov_coeff * covariance`` of the encoder
      embeddings, computed per time step across the batch and averaged over time (PLDM);
    * ``"sigreg"``: ``sigreg_coeff * sigreg`` of the embeddings flattened to ``(B*T, D)``
      (LeJEPA);
    * ``"none"``: nothing (collapses unless something else prevents it).

    Args:
      predicted: predictor rolled out from the first frame, shape ``(B, T-1, D)``.
      embeddings: encoder embeddings of every frame, shape ``(B, T, D)``, ``T >= 2``.
      sim_coeff: weight of the prediction term.
      std_coeff: weight of the VICReg variance term.
      cov_coeff: weight of the VICReg covariance term.
      regularizer: one of :data:`REGULARIZERS`.
      sigreg_key: PRNG key for the SIGReg directions; required for ``"sigreg"``.
      sigreg_coeff: weight of the SIGReg term.
      num_projections: number of SIGReg directions.

    Returns:
      ``(loss, aux)``: scalar weighted loss and a dict of the unweighted scalar terms
      (``invariance`` and, per regulariser, ``variance``/``covariance`` or ``sigreg``).

    References:
      Sobal et al., PLDM, 2025; Bardes et al., VICReg, ICLR 2022; Balestriero & LeCun,
      LeJEPA, 2025.
    """
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; expected one of {REGULARIZERS}")
    predicted = _as_float("predicted", predicted)
    embeddings = _as_float("embeddings", embeddings)
    _check_rank("embeddings", embeddings, 3, "(B, T, D)")
    _check_rank("predicted", predicted, 3, "(B, T-1, D)")
    batch, steps, dim = embeddings.shape
    if steps < 2:
        raise ValueError(f"embeddings needs T >= 2 time steps, got shape {embeddings.shape}")
    if predicted.shape != (batch, steps - 1, dim):
        raise ValueError(
            f"predicted must have shape (B, T-1, D) = {(batch, steps - 1, dim)} for "
            f"embeddings of shape {embeddings.shape}, got {predicted.shape}"
        )

    invariance = prediction_loss(predicted, embeddings[:, 1:])
    aux = {"invariance": invariance}
    loss = sim_coeff * invariance
    if regularizer == "vicreg":
        per_step = jnp.swapaxes(embeddings, 0, 1)  # (T, B, D): statistics across the batch
        aux["variance"] = variance_loss(per_step)
        aux["covariance"] = covariance_loss(per_step)
        loss = loss + std_coeff * aux["variance"] + cov_coeff * aux["covariance"]
    elif regularizer == "sigreg":
        if sigreg_key is None:
            raise ValueError('regularizer="sigreg" needs sigreg_key')
        flat = embeddings.reshape(batch * steps, dim)
        aux["sigreg"] = sigreg(sigreg_key, flat, num_projections=num_projections)
        loss = loss + sigreg_coeff * aux["sigreg"]
    return loss, aux
