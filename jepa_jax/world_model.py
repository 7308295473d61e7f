"""The JEPA world model as pure functions of an explicit parameter pytree.

``params = {"encoder": ..., "predictor": ..., "inverse": ..., "posterior": ...}`` (inverse
only when the inverse-dynamics regulariser is on, posterior only when ``z_dim > 0``). Every
method is a pure function; all of them jit, vmap and differentiate::

    wm = make_world_model(config.model, obs_shape=(65, 65, 2), action_dim=2)
    params = wm.init(key)
    s = wm.encode(params, obs)                 # (..., H, W, C) -> (..., D)
    s1 = wm.predict(params, s, a)              # (..., D), (..., A) -> (..., D)
    traj = wm.rollout(params, s, actions)      # (D,), (T, A) -> (T, D)

Latent variable z (``model.z_dim > 0``): the predictor takes ``z`` (..., z_dim), what one
frame and the action cannot tell about the next frame. Training infers it with the
amortised posterior ``wm.posterior(params, s, a, s_next)`` (and ``wm.sample_posterior``),
regularised by its KL to N(0, I). Planning draws it from the prior: N(0, I)
(``model.z_prior="normal"``) or a learned ``p(z | s)`` (``"mixture"``: a mixture density
network fitted to posterior samples, ``params["prior"]``), or ``p(z | s, a)`` with
``model.prior_sees_action`` (what z may do can depend on the action: pushed into a wall, the
agent stays, whatever z says), step by step along the rollout::

    noise = wm.sample_noise(key, (K, T))       # (K, T, noise_dim): the futures' randomness
    futures = jax.vmap(lambda n: wm.rollout_noise(params, s, actions, n))(noise)  # (K, T, D)
    zs = wm.sample_z(key, (K, T))              # (K, T, z_dim) from N(0, I)
    futures = jax.vmap(lambda z: wm.rollout(params, s, actions, z))(zs)

With ``z_dim == 0`` (the default) the model is deterministic, there is no posterior, and
every function computes exactly what it did before z existed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax.networks.encoders import ConvEncoder, MLPEncoder
from jepa_jax.networks.predictors import InverseDynamics, MLPPredictor, ZPosterior, ZPrior

Params = Any
COMPUTE_DTYPES = ("float32", "bfloat16")


@struct.dataclass
class WorldModel:
    """Encoder + predictor (+ optional inverse-dynamics head, + the posterior of z when
    ``z_dim > 0``). Modules are static fields."""

    encoder: nn.Module = struct.field(pytree_node=False)
    predictor: nn.Module = struct.field(pytree_node=False)
    inverse: nn.Module | None = struct.field(pytree_node=False)
    obs_shape: tuple[int, ...] = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    latent_dim: int = struct.field(pytree_node=False)
    z_dim: int = struct.field(pytree_node=False, default=0)
    keypoint_dims: int = struct.field(pytree_node=False, default=0)  # leading latent dims
    posterior_net: nn.Module | None = struct.field(pytree_node=False, default=None)
    prior_net: nn.Module | None = struct.field(pytree_node=False, default=None)  # learned p(z|s)
    # The learned prior sees the action too, p(z | s, a): what z may do can depend on it
    # (pushing into a wall, no z should take the agent through).
    prior_sees_action: bool = struct.field(pytree_node=False, default=False)
    # The layout channels are constant within a trajectory (walls do not move in an episode):
    # encode_trajectories then runs the encoder's layout branch once per trajectory.
    static_layout: bool = struct.field(pytree_node=False, default=False)
    # Predictors trained side by side on the same latents (see ``jepa_jax.planning.ensemble``):
    # member 0 is params["predictor"], used everywhere; members 1.. are
    # params["predictor_ensemble"], stacked on a leading axis, used by planners.
    num_predictors: int = struct.field(pytree_node=False, default=1)

    def __post_init__(self):
        if self.z_dim < 0:
            raise ValueError(f"model.z_dim must be >= 0, got {self.z_dim}")
        if isinstance(self.num_predictors, bool) or not isinstance(self.num_predictors, int) \
                or self.num_predictors < 1:
            raise ValueError(f"model.num_predictors must be an integer >= 1, got "
                             f"{self.num_predictors!r}")
        if self.num_predictors > 1 and self.z_dim:
            raise ValueError("model.num_predictors > 1 needs a deterministic model (z_dim=0)")
        if self.z_dim and self.posterior_net is None:
            raise ValueError(f"a world model with z_dim={self.z_dim} needs a posterior network")
        if self.prior_sees_action and self.prior_net is None:
            raise ValueError("model.prior_sees_action needs a learned prior "
                             "(model.z_prior='mixture')")

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
        if self.z_dim:  # its own key, so that z_dim = 0 draws the other parameters as before
            params["posterior"] = self.posterior_net.init(jax.random.fold_in(key, 3), s, a, s)
        if self.prior_net is not None:
            params["prior"] = self.prior_net.init(jax.random.fold_in(key, 4),
                                                  self._prior_input(s, a))
        if self.num_predictors > 1:  # own keys: member 0 is drawn exactly as without them
            keys = jax.random.split(jax.random.fold_in(key, 5), self.num_predictors - 1)
            params["predictor_ensemble"] = jax.vmap(self.init_predictor)(keys)
        return params

    def init_predictor(self, key: jax.Array) -> Any:
        """Fresh parameters for ``params["predictor"]`` (one member)."""
        s = jnp.zeros((1, self.latent_dim), jnp.float32)
        a = jnp.zeros((1, self.action_dim), jnp.float32)
        z = jnp.zeros((1, self.z_dim), jnp.float32) if self.z_dim else None
        return self.predictor.init(key, s, a, z)

    def predictor_members(self, params: Params) -> Any:
        """Every predictor's parameters stacked on a leading axis of size num_predictors."""
        if self.num_predictors == 1:
            return jax.tree.map(lambda x: x[None], params["predictor"])
        return jax.tree.map(lambda x, y: jnp.concatenate([x[None], y], 0),
                            params["predictor"], params["predictor_ensemble"])

    def with_predictor_members(self, params: Params, members: Any) -> Params:
        """``params`` with the predictors replaced by ``members`` (leading axis K)."""
        out = {**params, "predictor": jax.tree.map(lambda x: x[0], members)}
        if self.num_predictors > 1:
            out["predictor_ensemble"] = jax.tree.map(lambda x: x[1:], members)
        return out

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

    def encode_trajectories(self, params: Params, obs: jax.Array) -> jax.Array:
        """Embeds trajectories: (..., T, *obs_shape) -> (..., T, D).

        Equal to :meth:`encode`; with ``static_layout`` and a conv encoder whose layout
        keypoints have their own branch, that branch runs on the first frame of each
        trajectory only (see ``ConvEncoder``), which makes training several times cheaper.
        """
        self.check_obs(obs)
        if obs.ndim < len(self.obs_shape) + 1:
            raise ValueError(f"obs has shape {tuple(obs.shape)}; expected (..., T, "
                             f"{', '.join(map(str, self.obs_shape))})")
        enc = self.encoder
        if (self.static_layout and isinstance(enc, ConvEncoder) and enc.layout_keypoints
                and enc.layout_channels is not None):
            return enc.apply(params["encoder"], obs, static_layout_axis=-1)
        return enc.apply(params["encoder"], obs)

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

    def check_z(self, z: jax.Array, name: str = "z") -> None:
        """Raises ValueError unless ``z`` ends in this model's ``z_dim`` (> 0)."""
        if not self.z_dim:
            raise ValueError(f"{name} given, but this world model has no latent variable "
                             f"(z_dim=0)")
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"{name} has last dimension {z.shape[-1]}, the world model has "
                             f"z_dim={self.z_dim}")

    def posterior(self, params: Params, s: jax.Array, a: jax.Array,
                  s_next: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``q(z | s, a, s_next)``: (mean, log_var), each (..., z_dim)."""
        if not self.z_dim:
            raise ValueError("this world model has no latent variable (model.z_dim=0)")
        return self.posterior_net.apply(params["posterior"], s, a, s_next)

    def sample_posterior(self, params: Params, key: jax.Array, s: jax.Array, a: jax.Array,
                         s_next: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """A reparametrised draw ``z = mean + exp(log_var / 2) * eps`` from the posterior.

        Returns ``(z, mean, log_var)``, each (..., z_dim).
        """
        mean, log_var = self.posterior(params, s, a, s_next)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return mean + jnp.exp(0.5 * log_var) * eps, mean, log_var

    def sample_z(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Draws z from N(0, I) (the fixed prior, and the KL's reference): (*shape, z_dim)."""
        if not self.z_dim:
            raise ValueError("this world model has no latent variable (model.z_dim=0)")
        return jax.random.normal(key, (*shape, self.z_dim), jnp.float32)

    def _prior_input(self, s: jax.Array, a: jax.Array | None) -> jax.Array:
        if not self.prior_sees_action:
            return s
        if a is None:
            raise ValueError("this world model's prior is p(z | s, a) "
                             "(model.prior_sees_action): pass the action")
        a = jnp.broadcast_to(a, (*s.shape[:-1], a.shape[-1])).astype(s.dtype)
        return jnp.concatenate([s, a], axis=-1)

    def prior(self, params: Params, s: jax.Array,
              a: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The learned prior ``p(z | s)``, or ``p(z | s, a)`` with ``prior_sees_action`` (then
        ``a`` (..., A) is required): (logits (..., M), means and log_stds (..., M, z_dim))."""
        if self.prior_net is None:
            raise ValueError("this world model has no learned prior (model.z_prior='normal')")
        return self.prior_net.apply(params["prior"], self._prior_input(s, a))

    @property
    def noise_dim(self) -> int:
        """Size of the noise that ``z_from_noise`` turns into one z: z_dim standard normals,
        plus one uniform that picks the mixture component of a learned prior."""
        return self.z_dim + (self.prior_net is not None)

    def sample_noise(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """(*shape, noise_dim): standard normals, and a last channel uniform in [0, 1) when
        the prior is learned. Fixed noise makes a sampled future a smooth function of the
        actions (common random numbers)."""
        if not self.z_dim:
            raise ValueError("this world model has no latent variable (model.z_dim=0)")
        k_n, k_u = jax.random.split(key)
        eps = jax.random.normal(k_n, (*shape, self.z_dim), jnp.float32)
        if self.prior_net is None:
            return eps
        return jnp.concatenate([eps, jax.random.uniform(k_u, (*shape, 1), jnp.float32)], -1)

    def z_from_noise(self, params: Params, s: jax.Array, noise: jax.Array,
                     a: jax.Array | None = None) -> jax.Array:
        """A draw from the prior at latent ``s`` (..., D) (and action ``a`` (..., A) for a
        prior that sees it), from ``noise`` (..., noise_dim).

        N(0, I): z is the noise. Learned mixture: the component whose cumulative weight
        interval holds the uniform, then ``mean + std * eps`` (differentiable in s, except
        for the choice of component)."""
        if noise.shape[-1] != self.noise_dim:
            raise ValueError(f"noise has last dimension {noise.shape[-1]}, the world model "
                             f"needs {self.noise_dim}")
        if self.prior_net is None:
            return noise
        logits, means, log_stds = self.prior(params, s, a)
        cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
        comp = jnp.sum(noise[..., -1:] > cdf[..., :-1], axis=-1)  # (...) in [0, M)
        pick = jax.nn.one_hot(comp, logits.shape[-1], dtype=means.dtype)[..., None]
        mean = jnp.sum(pick * means, axis=-2)
        std = jnp.exp(jnp.sum(pick * log_stds, axis=-2))
        return mean + std * noise[..., :-1]

    def rollout_noise(self, params: Params, s0: jax.Array, actions: jax.Array,
                      noise: jax.Array) -> jax.Array:
        """A sampled future: z_t drawn from the prior at s_t with ``noise`` (..., T,
        noise_dim), then s_{t+1} = predict(s_t, a_t, z_t). Returns (..., T, D)."""
        acts = jnp.moveaxis(actions, -2, 0)
        ns = jnp.moveaxis(noise, -2, 0)

        def body(s, inputs):
            a, n = inputs
            s_next = self.predict(params, s, a, self.z_from_noise(params, s, n, a))
            return s_next, s_next

        _, traj = jax.lax.scan(body, s0, (acts, ns))
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
    ``layout_channels`` (empty: layout keypoints from the trunk), ``layout_kernel``,
    ``glimpse_radius`` and ``glimpse_channels`` (an egocentric crop of those channels around
    the first keypoint; absent or 0: none), ``map_stride`` (a coarse raw map of those
    channels; absent or 0: none), ``keypoint_log_eps`` (> 0: the keypoint branch sees
    ``log(x + eps)``, for sub-pixel keypoints; absent or 0: off),
    ``layout_static`` (the layout channels never change within a trajectory, so training
    encodes them once per trajectory; default False), ``latent_dim``
    (0: concatenation of keypoints, layout keypoints and global code),
    ``mlp_hidden`` (MLP encoder), ``predictor_hidden``, ``action_scale``, ``z_dim``,
    ``inverse_dynamics_hidden`` (empty tuple: no inverse-dynamics head), ``compute_dtype``
    ("float32" or "bfloat16": the layers' compute dtype; parameters and latents stay
    float32; absent in older configs: float32), and when ``z_dim > 0`` the posterior's
    ``posterior_hidden`` (default (128, 128)) and the prior ``z_prior`` ("normal": N(0, I),
    the default; "mixture": learned ``p(z | s)`` with ``prior_components`` components and
    ``prior_hidden`` layers), and ``num_predictors`` (an ensemble of predictors trained side
    by side for the planners; absent: 1).
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
            layout_kernel=cfg.get("layout_kernel", 5), dtype=dtype,
            glimpse_radius=cfg.get("glimpse_radius", 0),
            glimpse_channels=tuple(cfg.get("glimpse_channels", (1,))),
            map_stride=cfg.get("map_stride", 0),
            keypoint_log_eps=cfg.get("keypoint_log_eps", 0.0))
        n_sel = len(cfg.get("glimpse_channels", (1,)))
        glimpse_dim = (2 * cfg.get("glimpse_radius", 0) + 1) ** 2 * n_sel if cfg.get(
            "glimpse_radius", 0) else 0
        if cfg.get("map_stride", 0):
            glimpse_dim += (-(-obs_shape[0] // cfg.map_stride) * -(-obs_shape[1] // cfg.map_stride)
                            * n_sel)
        latent_dim = cfg.latent_dim or (2 * cfg.num_keypoints + 2 * cfg.layout_keypoints
                                         + glimpse_dim + cfg.global_dim)
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
    if not isinstance(cfg.z_dim, int) or cfg.z_dim < 0:
        raise ValueError(f"model.z_dim must be an integer >= 0, got {cfg.z_dim!r}")
    post = prior = None
    if cfg.z_dim:
        post = ZPosterior(z_dim=cfg.z_dim, hidden=tuple(cfg.get("posterior_hidden", (128, 128))),
                          action_scale=cfg.action_scale)
        kind = cfg.get("z_prior", "normal")
        if kind == "mixture":
            prior = ZPrior(z_dim=cfg.z_dim, num_components=cfg.get("prior_components", 4),
                           hidden=tuple(cfg.get("prior_hidden", (128, 128))))
        elif kind != "normal":
            raise ValueError(f"unknown model.z_prior {kind!r}; expected 'normal' or 'mixture'")
    return WorldModel(encoder=enc, predictor=pred, inverse=inv, obs_shape=tuple(obs_shape),
                      action_dim=action_dim, latent_dim=latent_dim, z_dim=cfg.z_dim,
                      keypoint_dims=keypoint_dims, posterior_net=post, prior_net=prior,
                      static_layout=bool(cfg.get("layout_static", False)),
                      prior_sees_action=bool(cfg.get("prior_sees_action", False) and cfg.z_dim),
                      num_predictors=cfg.get("num_predictors", 1))
