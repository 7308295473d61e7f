"""The JEPA world model as pure functions of an explicit parameter pytree.

``params = {"encoder": ..., "predictor": ..., "inverse": ...}`` (the last only when the
inverse-dynamics regulariser is on). Every method is a pure function; all of them jit, vmap
and differentiate::

    wm = make_world_model(config.model, obs_shape=(65, 65, 2), action_dim=2)
    params = wm.init(key)
    s = wm.encode(params, obs)                 # (..., H, W, C) -> (..., D)
    s1 = wm.predict(params, s, a)              # (..., D), (..., A) -> (..., D)
    traj = wm.rollout(params, s, actions)      # (D,), (T, A) -> (T, D)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax.networks.encoders import ConvEncoder, MLPEncoder
from jepa_jax.networks.predictors import InverseDynamics, MLPPredictor

Params = Any
COMPUTE_DTYPES = ("float32", "bfloat16")


@struct.dataclass
class WorldModel:
    """Encoder + predictor (+ optional inverse-dynamics head). Modules are static fields."""

    encoder: nn.Module = struct.field(pytree_node=False)
    predictor: nn.Module = struct.field(pytree_node=False)
    inverse: nn.Module | None = struct.field(pytree_node=False)
    obs_shape: tuple[int, ...] = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    latent_dim: int = struct.field(pytree_node=False)
    z_dim: int = struct.field(pytree_node=False, default=0)
    keypoint_dims: int = struct.field(pytree_node=False, default=0)  # leading latent dims

    def init(self, key: jax.Array) -> Params:
        """Initial parameters (a dict of pytrees)."""
        k_enc, k_pred, k_inv = jax.random.split(key, 3)
        obs = jnp.zeros((1, *self.obs_shape), jnp.float32)
        s = jnp.zeros((1, self.latent_dim), jnp.float32)
        a = jnp.zeros((1, self.action_dim), jnp.float32)
        z = jnp.zeros((1, self.z_dim), jnp.float32) if self.z_dim else None
        params = {"encoder": self.encoder.init(k_enc, obs),
                  "predictor": self.predictor.init(k_pred, s, a, z)}
        if self.inverse is not None:
            params["inverse"] = self.inverse.init(k_inv, s, s)
        return params

    def check_obs(self, obs: jax.Array, name: str = "obs") -> None:
        """Raises ValueError if ``obs`` does not end in ``obs_shape`` or is not floating."""
        if tuple(obs.shape[-len(self.obs_shape):]) != self.obs_shape:
            raise ValueError(f"{name} has shape {tuple(obs.shape)}; expected (..., "
                             f"{', '.join(map(str, self.obs_shape))})")
        if not jnp.issubdtype(obs.dtype, jnp.floating):
            raise ValueError(f"{name} has dtype {obs.dtype}; expected a float dtype")

    def encode(self, params: Params, obs: jax.Array) -> jax.Array:
        """Embeds observations: (..., *obs_shape) -> (..., D)."""
        self.check_obs(obs)
        return self.encoder.apply(params["encoder"], obs)

    def predict(self, params: Params, s: jax.Array, a: jax.Array,
                z: jax.Array | None = None) -> jax.Array:
        """One latent step: s (..., D), a (..., A), z (..., z_dim) or None -> (..., D)."""
        if s.shape[-1] != self.latent_dim:
            raise ValueError(f"latent has dimension {s.shape[-1]}, model has {self.latent_dim}")
        if a.shape[-1] != self.action_dim:
            raise ValueError(f"action has dimension {a.shape[-1]}, model has {self.action_dim}")
        return self.predictor.apply(params["predictor"], s, a, z)

    def rollout(self, params: Params, s0: jax.Array, actions: jax.Array,
                z: jax.Array | None = None) -> jax.Array:
        """Open-loop rollout with ``lax.scan``.

        Args:
          s0: (..., D) initial latent.
          actions: (..., T, A).
          z: None or (..., T, z_dim).

        Returns:
          (..., T, D) predicted latents s_1 .. s_T.
        """
        acts = jnp.moveaxis(actions, -2, 0)
        zs = None if z is None else jnp.moveaxis(z, -2, 0)

        def body(s, inputs):
            a, zt = inputs
            s_next = self.predict(params, s, a, zt)
            return s_next, s_next

        _, traj = jax.lax.scan(body, s0, (acts, zs))
        return jnp.moveaxis(traj, 0, -2)

    def inverse_dynamics(self, params: Params, s: jax.Array, s_next: jax.Array) -> jax.Array:
        """Predicted action (..., A) from consecutive latents (..., D)."""
        if self.inverse is None:
            raise ValueError("this world model has no inverse-dynamics head "
                             "(set model.inverse_dynamics_hidden)")
        return self.inverse.apply(params["inverse"], s, s_next)


def make_world_model(cfg: ml_collections.ConfigDict, obs_shape: tuple[int, ...],
                     action_dim: int) -> WorldModel:
    """Builds a ``WorldModel`` from the ``model`` section of a config.

    Keys: ``encoder`` ("conv" | "mlp"), ``stem_factor``, ``channels``, ``num_keypoints``,
    ``global_dim``, ``keypoint_scale``, ``keypoint_channels`` (empty: shared trunk),
    ``keypoint_kernel``, ``keypoint_init_temperature``, ``layout_keypoints``,
    ``layout_channels`` (empty: layout keypoints from the trunk), ``layout_kernel``, ``latent_dim``
    (0: concatenation of keypoints, layout keypoints and global code),
    ``mlp_hidden`` (MLP encoder), ``predictor_hidden``, ``action_scale``, ``z_dim``,
    ``inverse_dynamics_hidden`` (empty tuple: no inverse-dynamics head), ``compute_dtype``
    ("float32" or "bfloat16": the layers' compute dtype; parameters and latents stay
    float32; absent in older configs: float32).
    """
    dtype_name = cfg.get("compute_dtype", "float32")
    if dtype_name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown model.compute_dtype {dtype_name!r}; expected one of "
                         f"{', '.join(COMPUTE_DTYPES)}")
    dtype = jnp.dtype(dtype_name)
    if cfg.encoder == "conv":
        if len(obs_shape) != 3:
            raise ValueError(f"conv encoder needs (H, W, C) observations, got {obs_shape}")
        enc = ConvEncoder(
            stem_factor=cfg.stem_factor, channels=tuple(cfg.channels),
            num_keypoints=cfg.num_keypoints, global_dim=cfg.global_dim,
            keypoint_scale=cfg.keypoint_scale, latent_dim=cfg.latent_dim or None,
            keypoint_channels=(tuple(cfg.keypoint_channels) or None),
            keypoint_kernel=cfg.keypoint_kernel, init_temperature=cfg.keypoint_init_temperature,
            layout_keypoints=cfg.layout_keypoints,
            layout_channels=tuple(cfg.get("layout_channels", ())) or None,
            layout_kernel=cfg.get("layout_kernel", 5), dtype=dtype)
        latent_dim = cfg.latent_dim or (2 * cfg.num_keypoints + 2 * cfg.layout_keypoints
                                         + cfg.global_dim)
        keypoint_dims = 0 if cfg.latent_dim else 2 * cfg.num_keypoints
    elif cfg.encoder == "mlp":
        if not cfg.latent_dim:
            raise ValueError("model.latent_dim must be > 0 for the mlp encoder")
        enc = MLPEncoder(hidden=tuple(cfg.mlp_hidden), latent_dim=cfg.latent_dim, dtype=dtype)
        latent_dim = cfg.latent_dim
        keypoint_dims = 0
    else:
        raise ValueError(f"unknown model.encoder {cfg.encoder!r}; expected 'conv' or 'mlp'")
    pred = MLPPredictor(hidden=tuple(cfg.predictor_hidden), action_scale=cfg.action_scale,
                        z_dim=cfg.z_dim, dtype=dtype)
    inv = (InverseDynamics(action_dim=action_dim, hidden=tuple(cfg.inverse_dynamics_hidden),
                           dtype=dtype)
           if len(cfg.inverse_dynamics_hidden) else None)
    return WorldModel(encoder=enc, predictor=pred, inverse=inv, obs_shape=tuple(obs_shape),
                      action_dim=action_dim, latent_dim=latent_dim, z_dim=cfg.z_dim,
                      keypoint_dims=keypoint_dims)
