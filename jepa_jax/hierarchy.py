"""Level 2 of H-JEPA: an abstract world model over level-1 embeddings, k steps at a time.

LeCun's H-JEPA (2022, section 4.6): the lower level predicts short-term, detailed states
from concrete actions; the higher level predicts further ahead, more abstractly, from
abstract actions. Here level 1 is the Core JEPA (:mod:`jepa_jax.world_model`) and level 2
is, as pure functions of ``params2``::

    l2 = make_level2(config.level2, wm)               # wm: the level-1 WorldModel
    params2 = l2.init(key)
    s2 = l2.encode(params2, s1)                         # (..., D1) -> (..., D2)
    u, mean, log_var = l2.infer_action(params2, key, s2, seg_actions, s2_next)
    s2_next = l2.predict(params2, s2, u)                # (..., D2), (..., U) -> (..., D2)
    traj = l2.rollout(params2, s2, us)                  # (D2,), (M, U) -> (M, D2)

* the **abstract state** ``s2 = [s1's keypoint dims, MLP(s1)]``: the agent's coordinates
  pass through unchanged (so level 2 cannot collapse onto the static layout, which would be
  perfectly predictable), the MLP summarises the rest (the layout);
* the **abstract action** ``u`` (``action_dim`` numbers) is inferred from the level-1
  segment it summarises, ``q(u | s2_t, a_t .. a_{t+k-1}, s2_{t+k})``, and regularised like
  the latent variable z, by its KL to N(0, I); planning chooses it freely;
* the **predictor** is a residual MLP ``s2' = s2 + MLP(s2, u)`` one level-2 step
  (``k`` level-1 steps) ahead.

:func:`level2_loss` is the training objective, a pure function of the embeddings.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax import losses
from jepa_jax.networks.encoders import MLPEncoder
from jepa_jax.networks.predictors import MLPPredictor, ZPosterior

Params = Any


def check_span(k: Any) -> int:
    """The level-2 span ``k`` as an int; one-line ValueError unless it is an integer >= 2."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"level-2 span k must be an integer >= 2 (level 2 predicts k level-1 "
                         f"steps ahead), got {k!r}")
    return k


@struct.dataclass
class Level2Model:
    """Encoder, abstract-action posterior and predictor of level 2 (static modules)."""

    encoder: nn.Module = struct.field(pytree_node=False)
    posterior_net: nn.Module = struct.field(pytree_node=False)
    predictor: nn.Module = struct.field(pytree_node=False)
    span: int = struct.field(pytree_node=False)
    input_dim: int = struct.field(pytree_node=False)  # D1
    keep_dims: int = struct.field(pytree_node=False)  # leading level-1 dims passed through
    latent_dim: int = struct.field(pytree_node=False)  # D2
    action_dim: int = struct.field(pytree_node=False)  # U
    low_action_dim: int = struct.field(pytree_node=False)  # A (level-1 actions)
    # 1 for the dims that planning costs compare, 0 for raw pixels passed through (glimpse,
    # map): they inform the predictor but matching them is not the goal.
    cost_mask: tuple[float, ...] = struct.field(pytree_node=False, default=())
    kind: str = struct.field(pytree_node=False, default="mlp")  # config.level2.kind

    def cost_weights(self) -> jax.Array:
        """(D2,) weights of the abstract-state dims in planning costs."""
        return jnp.asarray(self.cost_mask or (1.0,) * self.latent_dim, jnp.float32)

    def init(self, key: jax.Array) -> Params:
        k_enc, k_post, k_pred = jax.random.split(key, 3)
        s1 = jnp.zeros((1, self.input_dim), jnp.float32)
        s2 = jnp.zeros((1, self.latent_dim), jnp.float32)
        seg = jnp.zeros((1, self.span * self.low_action_dim), jnp.float32)
        u = jnp.zeros((1, self.action_dim), jnp.float32)
        return {"encoder": self.encoder.init(k_enc, s1),
                "posterior": self.posterior_net.init(k_post, s2, seg, s2),
                "predictor": self.predictor.init(k_pred, s2, u)}

    def encode(self, params: Params, s1: jax.Array) -> jax.Array:
        """(..., D1) level-1 embeddings -> (..., D2) abstract states."""
        if s1.shape[-1] != self.input_dim:
            raise ValueError(f"level-1 embedding has dimension {s1.shape[-1]}, level 2 "
                             f"expects {self.input_dim}")
        return jnp.concatenate([s1[..., :self.keep_dims],
                                self.encoder.apply(params["encoder"], s1)], -1)

    def posterior(self, params: Params, s2: jax.Array, seg_actions: jax.Array,
                  s2_next: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``q(u | s2, segment, s2_next)``: seg_actions (..., k, A) -> (mean, log_var)."""
        if seg_actions.shape[-2:] != (self.span, self.low_action_dim):
            raise ValueError(f"segment actions have shape {tuple(seg_actions.shape)}; "
                             f"expected (..., k={self.span}, {self.low_action_dim})")
        flat = seg_actions.reshape(*seg_actions.shape[:-2], -1)
        return self.posterior_net.apply(params["posterior"], s2, flat, s2_next)

    def infer_action(self, params: Params, key: jax.Array, s2: jax.Array,
                     seg_actions: jax.Array, s2_next: jax.Array):
        """A reparametrised draw of u from the posterior: ``(u, mean, log_var)``."""
        mean, log_var = self.posterior(params, s2, seg_actions, s2_next)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return mean + jnp.exp(0.5 * log_var) * eps, mean, log_var

    def predict(self, params: Params, s2: jax.Array, u: jax.Array) -> jax.Array:
        """One level-2 step: (..., D2), (..., U) -> (..., D2)."""
        if u.shape[-1] != self.action_dim:
            raise ValueError(f"abstract action has dimension {u.shape[-1]}, level 2 has "
                             f"{self.action_dim}")
        return self.predictor.apply(params["predictor"], s2, u)

    def rollout(self, params: Params, s2: jax.Array, us: jax.Array) -> jax.Array:
        """(..., D2), (..., M, U) -> (..., M, D2) with ``lax.scan``."""
        def body(s, u):
            s = self.predict(params, s, u)
            return s, s

        _, traj = jax.lax.scan(body, s2, jnp.moveaxis(us, -2, 0))
        return jnp.moveaxis(traj, 0, -2)


def raw_pixel_dims(model_cfg: ml_collections.ConfigDict,
                   obs_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(start, stop)`` of the level-1 latent dims that are raw pixels (the conv encoder's
    glimpse and map, placed after the keypoints and layout keypoints); (0, 0) if none."""
    if model_cfg.get("encoder") != "conv" or model_cfg.get("latent_dim", 0):
        return 0, 0
    n_sel = len(model_cfg.get("glimpse_channels", (1,)))
    r, stride = model_cfg.get("glimpse_radius", 0), model_cfg.get("map_stride", 0)
    size = (2 * r + 1) ** 2 * n_sel if r else 0
    if stride:
        size += -(-obs_shape[0] // stride) * -(-obs_shape[1] // stride) * n_sel
    start = 2 * model_cfg.num_keypoints + 2 * model_cfg.layout_keypoints
    return start, start + size


def level1_cost_weights(latent_dim: int, raw: tuple[int, int]) -> jax.Array:
    """(D1,) weights: 0 on the raw pixel dims ``raw`` = (start, stop), 1 elsewhere."""
    idx = jnp.arange(latent_dim)
    return jnp.where((idx >= raw[0]) & (idx < raw[1]), 0.0, 1.0).astype(jnp.float32)


def make_level2(cfg: ml_collections.ConfigDict, wm: Any,
                raw_dims: tuple[int, int] = (0, 0)) -> Level2Model:
    """Builds level 2 on top of the level-1 ``WorldModel`` ``wm`` from ``config.level2``:
    ``span`` (k >= 2), ``latent_dim`` (the MLP part of D2), ``action_dim``, ``hidden``,
    ``predictor_hidden``, ``posterior_hidden``, ``keep_keypoints`` (pass the level-1
    keypoint dims through), ``keep_all`` (pass all of the level-1 embedding through).
    ``raw_dims`` (from :func:`raw_pixel_dims`) are left out of planning costs."""
    k = check_span(cfg.span)
    if cfg.latent_dim < 1 or cfg.action_dim < 1:
        raise ValueError(f"level2.latent_dim and level2.action_dim must be >= 1, got "
                         f"{cfg.latent_dim} and {cfg.action_dim}")
    keep = wm.keypoint_dims if cfg.keep_keypoints else 0
    if cfg.get("keep_all", False):  # the whole level-1 embedding passes through
        keep = wm.latent_dim
    mask = [0.0 if raw_dims[0] <= i < raw_dims[1] else 1.0 for i in range(keep)]
    return Level2Model(
        encoder=MLPEncoder(hidden=tuple(cfg.hidden), latent_dim=cfg.latent_dim),
        posterior_net=ZPosterior(z_dim=cfg.action_dim, hidden=tuple(cfg.posterior_hidden)),
        predictor=MLPPredictor(hidden=tuple(cfg.predictor_hidden), action_scale=1.0),
        span=k, input_dim=wm.latent_dim, keep_dims=keep, latent_dim=keep + cfg.latent_dim,
        action_dim=cfg.action_dim, low_action_dim=wm.action_dim,
        cost_mask=tuple(mask + [1.0] * cfg.latent_dim))


def level2_loss(predicted, embeddings, action_mean, action_log_var, *, sim_coeff: float = 1.0,
                std_coeff: float = 25.0, cov_coeff: float = 1.0, kl_coeff: float = 0.1
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """H-JEPA level-2 objective: VICReg multistep prediction plus the KL of abstract actions.

    ``sim_coeff * MSE(predicted, embeddings[:, 1:]) + std_coeff * variance +
    cov_coeff * covariance`` (VICReg terms per level-2 step across the batch, as in
    :func:`jepa_jax.losses.jepa_multistep_loss`) ``+ kl_coeff * KL(q(u) || N(0, I))``
    (mean over transitions of the KL summed over the action's dimensions).

    Args:
      predicted: (B, M, D2) level-2 rollout from ``embeddings[:, 0]``.
      embeddings: (B, M+1, D2) abstract states every k level-1 steps.
      action_mean, action_log_var: (B, M, U) posterior of the abstract actions.

    Returns:
      ``(loss, aux)`` with the unweighted terms ``invariance``, ``variance``,
      ``covariance``, ``action_kl``.

    References: LeCun, A Path Towards Autonomous Machine Intelligence, 2022 (H-JEPA);
    Bardes et al., VICReg, ICLR 2022.
    """
    action_mean = jnp.asarray(action_mean, jnp.float32)
    action_log_var = jnp.asarray(action_log_var, jnp.float32)
    if action_mean.shape != action_log_var.shape:
        raise ValueError(f"action_mean {action_mean.shape} and action_log_var "
                         f"{action_log_var.shape} must have the same shape")
    predicted = jnp.asarray(predicted)
    if action_mean.ndim != 3 or action_mean.shape[:2] != predicted.shape[:2]:
        raise ValueError(f"abstract actions must have shape (B, M, U) with (B, M) = "
                         f"{tuple(predicted.shape[:2])}, got {action_mean.shape}")
    loss, aux = losses.jepa_multistep_loss(predicted, embeddings, sim_coeff=sim_coeff,
                                           std_coeff=std_coeff, cov_coeff=cov_coeff)
    aux["action_kl"] = jnp.mean(losses.gaussian_kl(action_mean, action_log_var))
    return loss + kl_coeff * aux["action_kl"], aux


def level2_objective(l2: Level2Model, params2: Params, s1: jax.Array, actions: jax.Array,
                     key: jax.Array, cfg: ml_collections.ConfigDict):
    """Level-2 loss on level-1 embeddings ``s1`` (B, M*k + 1, D1) (held fixed) and their
    actions (B, M*k, A): encode every k-th embedding, infer the M abstract actions from
    their segments, roll level 2 out from the first and score with :func:`level2_loss`."""
    k = l2.span
    b, t, _ = s1.shape
    m = (t - 1) // k
    if m < 1 or actions.shape[:2] != (b, t - 1):
        raise ValueError(f"need (B, M*k+1, D1) embeddings and (B, M*k, A) actions with "
                         f"k={k}, got {tuple(s1.shape)} and {tuple(actions.shape)}")
    s2 = l2.encode(params2, jax.lax.stop_gradient(s1[:, : m * k + 1 : k]))  # (B, M+1, D2)
    seg = actions[:, : m * k].reshape(b, m, k, -1)
    # With posterior_sees_outcome=False, u summarises the segment's actions (the intent)
    # and not where it ended: the predictor then has to learn what the walls do to an
    # intent, instead of reading the outcome off u.
    outcome = s2[:, 1:] if cfg.get("posterior_sees_outcome", True) else s2[:, :-1]
    u, mean, log_var = l2.infer_action(params2, key, s2[:, :-1], seg, outcome)
    pred = l2.rollout(params2, s2[:, 0], u)
    loss, aux = level2_loss(pred, s2, mean, log_var, sim_coeff=cfg.sim_coeff,
                            std_coeff=cfg.std_coeff, cov_coeff=cfg.cov_coeff,
                            kl_coeff=cfg.kl_coeff)
    aux["loss"] = loss
    return loss, aux
