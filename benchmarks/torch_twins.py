"""PyTorch twins of jepa_jax's world model, training loss and gradient-MPC planner.

Used only by the benchmarks in this folder (PyTorch is not a dependency of ``jepa_jax``).
Everything is built from the same config sections as the JAX code, so the twins follow
config changes: ``model`` for the networks, ``loss`` and ``train`` for the training step,
``planning.gradient`` and ``planning.cost`` for the planner.

Layout: observations are channels-last ``(..., H, W, C)`` on both sides; the twin's
convolutions run in PyTorch's channels_last memory format (its fast CPU path). Every layer
has the same shapes and FLOPs, and ``load_jax_params`` copies a JAX parameter pytree into the
twins (transposing the kernels), so both sides compute the same numbers for the same
parameters; the benchmarks check that before timing anything.

    enc, pred, inv, _, kp_dims = build_world_model(config.model, (65, 65, 2), action_dim=2)
    load_jax_params((enc, pred, inv), jax.device_get(params))   # optional
    trainer = Trainer(JEPALoss(enc, pred, inv, config.loss, kp_dims), config.train)
    aux = trainer.step(obs, actions)        # obs (B, T, H, W, C), actions (B, T-1, A)
    planner = GradientPlanner(enc, pred, config.planning, action_bound=2.45)
    actions, info = planner.plan(obs, goal_obs, warm_start)   # batched over problems
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- helpers


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Flax's ``nn.gelu`` (the tanh approximation)."""
    return F.gelu(x, approximate="tanh")


def lecun_normal_(w: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Flax's default kernel init: truncated normal (2 std) with variance 1 / fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


def _linear(fan_in: int, fan_out: int, zero: bool = False) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
        else:
            lecun_normal_(layer.weight, fan_in)
        layer.bias.zero_()
    return layer


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, k, padding="same")
    with torch.no_grad():
        lecun_normal_(layer.weight, cin * k * k)
        layer.bias.zero_()
    return layer


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, H, W, C) -> (N, ceil(H/f), ceil(W/f), f*f*C), zero-padding H and W at the end;
    ``jepa_jax.networks.encoders.space_to_depth`` line for line."""
    n, h, w, c = x.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    h, w = (h + ph) // factor, (w + pw) // factor
    x = x.reshape(n, h, factor, w, factor, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, factor * factor * c)


def conv_nhwc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Applies ``conv`` to (N, H, W, C) images: the NCHW view of NHWC memory is PyTorch's
    channels_last format, for which oneDNN's CPU convolutions are the fast ones (measured
    1.7x on the trunk conv against NCHW-contiguous)."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def spatial_softmax(maps: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """(N, H, W, K) -> (N, K, 2) expected ``(x, y)`` pixel coordinates under a softmax."""
    n, h, w, k = maps.shape
    attn = torch.softmax(maps.reshape(n, h * w, k) / temperature, dim=-2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=maps.dtype), torch.arange(w, dtype=maps.dtype),
                            indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # (H*W, 2)
    return attn.transpose(-1, -2) @ grid


# ----------------------------------------------------------------------------- networks


class ConvEncoder(nn.Module):
    """Twin of ``jepa_jax.networks.encoders.ConvEncoder``.

    Input (..., H, W, C) float images (channels-last, as in JAX; the convolutions run in
    PyTorch's channels_last memory format); output (..., 2K + 2L + global_dim) or
    (..., latent_dim).
    """

    def __init__(self, cfg: Any, obs_shape: Sequence[int]):
        super().__init__()
        h, w, c = obs_shape
        f = cfg.stem_factor
        self.stem_factor = f
        self.keypoint_scale = float(cfg.keypoint_scale)
        self.keypoint_channels = tuple(cfg.keypoint_channels) or None
        k = cfg.num_keypoints
        trunk, cin = [], f * f * c
        for ch in cfg.channels:
            trunk.append(_conv(cin, ch, 3))
            cin = ch
        self.trunk = nn.ModuleList(trunk)
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(cfg.keypoint_init_temperature), dtype=torch.float32))
        if self.keypoint_channels is None:
            self.keypoint_conv = _conv(cin, k, 1)
        else:
            kk, nsel = cfg.keypoint_kernel, len(self.keypoint_channels)
            self.keypoint_conv = nn.Conv2d(nsel, k, kk, padding="same")
            with torch.no_grad():  # _blur_init(0.1): a box blur plus noise
                box = 1.0 / (kk * kk * nsel)
                self.keypoint_conv.weight.copy_(
                    box * (1.0 + 0.1 * torch.randn_like(self.keypoint_conv.weight)))
                self.keypoint_conv.bias.zero_()
        self.layout_keypoints = cfg.get("layout_keypoints", 0)
        self.layout_channels = tuple(cfg.get("layout_channels", ())) or None
        # The layout branch on the raw layout channels (full resolution, no bias, its own
        # temperature); with layout_static it runs on the first frame of each trajectory.
        self.layout_static = bool(cfg.get("layout_static", False))
        self.layout_conv = None
        if self.layout_keypoints and self.layout_channels is None:
            self.layout_conv = _conv(cin, self.layout_keypoints, 1)
        elif self.layout_keypoints:
            lk = cfg.get("layout_kernel", 5)
            self.layout_conv = nn.Conv2d(len(self.layout_channels), self.layout_keypoints, lk,
                                         padding="same", bias=False)
            self.layout_log_temperature = nn.Parameter(
                torch.tensor(math.log(0.1), dtype=torch.float32))
        th, tw = -(-h // f), -(-w // f)  # trunk resolution
        gh, gw = -(-th // 2), -(-tw // 2)
        self.global_fc = _linear(gh * gw * 4 * cin, cfg.global_dim)
        width = 2 * k + 2 * self.layout_keypoints + cfg.global_dim
        self.out = _linear(width, cfg.latent_dim) if cfg.latent_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *batch, h, w, c = x.shape
        raw, images = x, x.reshape(-1, h, w, c)
        x = space_to_depth(images, self.stem_factor)
        for conv in self.trunk:
            x = gelu(conv_nhwc(conv, x))
        temperature = torch.exp(self.log_temperature)
        if self.keypoint_channels is None:
            kp = spatial_softmax(conv_nhwc(self.keypoint_conv, x), temperature)
            kp = kp * self.stem_factor + (self.stem_factor - 1) / 2
        else:
            sel = images[..., list(self.keypoint_channels)]
            kp = spatial_softmax(conv_nhwc(self.keypoint_conv, sel), temperature)
        parts = [(kp / self.keypoint_scale).reshape(kp.shape[0], -1)]
        if self.layout_conv is not None and self.layout_channels is None:  # from the trunk
            lay = spatial_softmax(conv_nhwc(self.layout_conv, x), torch.ones(()))
            lay = (lay * self.stem_factor + (self.stem_factor - 1) / 2) / self.keypoint_scale
            parts.append(lay.reshape(lay.shape[0], -1))
        elif self.layout_conv is not None:
            static = self.layout_static and len(batch) >= 2
            sel = raw[..., list(self.layout_channels)]
            if static:  # (B, T, ...): the first frame of each trajectory
                sel = sel[:, 0]
            sel = sel.reshape(-1, h, w, sel.shape[-1])
            lay = spatial_softmax(conv_nhwc(self.layout_conv, sel),
                                  torch.exp(self.layout_log_temperature)) / self.keypoint_scale
            lay = lay.reshape(lay.shape[0], -1)
            if static:
                lay = lay.reshape(batch[0], 1, -1).expand(batch[0], batch[1], lay.shape[-1])
            parts.append(lay.reshape(images.shape[0], -1))
        g = space_to_depth(x, 2)
        parts.append(self.global_fc(g.reshape(g.shape[0], -1)))
        out = torch.cat(parts, -1)
        if self.out is not None:
            out = self.out(out)
        return out.reshape(*batch, out.shape[-1])


class MLPPredictor(nn.Module):
    """Twin of ``MLPPredictor``: ``s' = s + MLP([s, a * action_scale])`` (z_dim == 0)."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: Sequence[int],
                 action_scale: float):
        super().__init__()
        self.action_scale = float(action_scale)
        layers, fan_in = [], latent_dim + action_dim
        for width in hidden:
            layers.append(_linear(fan_in, width))
            fan_in = width
        self.hidden = nn.ModuleList(layers)
        self.out = _linear(fan_in, latent_dim, zero=True)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = torch.cat([s, a * self.action_scale], -1)
        for layer in self.hidden:
            h = gelu(layer(h))
        return s + self.out(h)


class InverseDynamics(nn.Module):
    """Twin of ``InverseDynamics``: action from two consecutive latents."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: Sequence[int]):
        super().__init__()
        layers, fan_in = [], 2 * latent_dim
        for width in hidden:
            layers.append(_linear(fan_in, width))
            fan_in = width
        self.hidden = nn.ModuleList(layers)
        self.out = _linear(fan_in, action_dim)

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        h = torch.cat([s, s_next], -1)
        for layer in self.hidden:
            h = gelu(layer(h))
        return self.out(h)


def build_world_model(cfg: Any, obs_shape: Sequence[int], action_dim: int = 2):
    """``(encoder, predictor, inverse or None, latent_dim, keypoint_dims)`` from ``model``."""
    if cfg.encoder != "conv":
        raise NotImplementedError(f"torch twin has only the conv encoder, not {cfg.encoder!r}")
    if cfg.z_dim:
        raise NotImplementedError("torch twin has no latent variable z (model.z_dim must be 0)")
    enc = ConvEncoder(cfg, obs_shape)
    latent_dim = cfg.latent_dim or (2 * cfg.num_keypoints + 2 * cfg.get("layout_keypoints", 0)
                                    + cfg.global_dim)
    keypoint_dims = 0 if cfg.latent_dim else 2 * cfg.num_keypoints
    pred = MLPPredictor(latent_dim, action_dim, tuple(cfg.predictor_hidden), cfg.action_scale)
    inv = (InverseDynamics(latent_dim, action_dim, tuple(cfg.inverse_dynamics_hidden))
           if len(cfg.inverse_dynamics_hidden) else None)
    return enc, pred, inv, latent_dim, keypoint_dims


# ------------------------------------------------------------------ JAX parameter import


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _load_dense(layer: nn.Linear, p: Mapping[str, Any]) -> None:
    layer.weight.copy_(_t(p["kernel"]).T)
    layer.bias.copy_(_t(p["bias"]))


def _load_conv(layer: nn.Conv2d, p: Mapping[str, Any]) -> None:
    layer.weight.copy_(_t(p["kernel"]).permute(3, 2, 0, 1))  # (kh, kw, in, out) -> (out, in, ..)
    layer.bias.copy_(_t(p["bias"]))


@torch.no_grad()
def load_jax_params(modules, params: Mapping[str, Any]) -> None:
    """Copies a (host) JAX world-model parameter pytree into ``(encoder, predictor, inverse)``."""
    enc, pred, inv = modules
    p = params["encoder"]["params"]
    n = len(enc.trunk)
    for i, conv in enumerate(enc.trunk):
        _load_conv(conv, p[f"Conv_{i}"])
    _load_conv(enc.keypoint_conv, p[f"Conv_{n}"])
    enc.log_temperature.copy_(_t(p["log_temperature"]))
    if enc.layout_conv is not None and enc.layout_channels is None:
        _load_conv(enc.layout_conv, p["layout_keypoints"])
    elif enc.layout_conv is not None:
        enc.layout_conv.weight.copy_(_t(p["layout_kernel"]).permute(3, 2, 0, 1))
        enc.layout_log_temperature.copy_(_t(p["layout_log_temperature"]))
    _load_dense(enc.global_fc, p["Dense_0"])  # both flatten (h, w, c)
    if enc.out is not None:
        _load_dense(enc.out, p["Dense_1"])
    q = params["predictor"]["params"]
    for i, layer in enumerate(pred.hidden):
        _load_dense(layer, q[f"Dense_{i}"])
    _load_dense(pred.out, q[f"Dense_{len(pred.hidden)}"])
    if inv is not None:
        r = params["inverse"]["params"]
        for i, layer in enumerate(inv.hidden):
            _load_dense(layer, r[f"Dense_{i}"])
        _load_dense(inv.out, r[f"Dense_{len(inv.hidden)}"])


# ------------------------------------------------------------------------------- losses


def variance_loss(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg hinge on the (ddof=1) std over axis -2, averaged over dims and leading axes."""
    xc = x - x.mean(-2, keepdim=True)
    var = xc.square().sum(-2) / (x.shape[-2] - 1)
    return F.relu(1.0 - torch.sqrt(var + eps)).mean()


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """VICReg off-diagonal covariance over axis -2, / D, averaged over leading axes."""
    n, d = x.shape[-2:]
    xc = x - x.mean(-2, keepdim=True)
    cov = xc.transpose(-1, -2) @ xc / (n - 1)
    off = cov.square().sum((-2, -1)) - torch.diagonal(cov, dim1=-2, dim2=-1).square().sum(-1)
    return (off / d).mean()


def sigreg(x: torch.Tensor, num_projections: int, num_points: int = 17,
           t_max: float = 3.0) -> torch.Tensor:
    """SIGReg (sliced Epps-Pulley) of ``x`` (N, D); directions drawn from torch's RNG."""
    directions = torch.randn(x.shape[-1], num_projections, dtype=x.dtype)
    directions = directions / directions.norm(dim=0, keepdim=True)
    proj = x @ directions  # (N, M)
    t = torch.linspace(0.0, t_max, num_points, dtype=x.dtype)
    dt = t_max / (num_points - 1)
    trap = torch.full((num_points,), 2 * dt, dtype=x.dtype)
    trap[0] = trap[-1] = dt
    gauss = torch.exp(-0.5 * t.square())
    xt = proj[..., None] * t  # (N, M, K)
    err = (torch.cos(xt).mean(0) - gauss).square() + torch.sin(xt).mean(0).square()
    return (x.shape[0] * (err @ (trap * gauss))).mean()


def scale_prediction_gradient(emb: torch.Tensor, keypoint_dims: int, kp_scale: float,
                              global_scale: float) -> torch.Tensor:
    """Same values; the gradient into the encoder is scaled per part (see objective.py)."""
    if kp_scale == 1.0 and global_scale == 1.0:
        return emb
    d = emb.shape[-1]
    scale = torch.cat([torch.full((keypoint_dims,), kp_scale, dtype=emb.dtype),
                       torch.full((d - keypoint_dims,), global_scale, dtype=emb.dtype)])
    return scale * emb + (1.0 - scale) * emb.detach()


class JEPALoss(nn.Module):
    """Twin of ``jepa_jax.training.objective.jepa_objective`` (multistep, from frame 0)."""

    def __init__(self, encoder: ConvEncoder, predictor: MLPPredictor,
                 inverse: InverseDynamics | None, cfg: Any, keypoint_dims: int):
        super().__init__()
        if cfg.name != "jepa":
            raise NotImplementedError(f"torch twin implements loss.name='jepa', not {cfg.name!r}")
        self.encoder, self.predictor, self.inverse = encoder, predictor, inverse
        self.cfg = {k: cfg[k] for k in cfg.keys()}
        self.keypoint_dims = keypoint_dims
        if self.cfg["idm_coeff"] and inverse is None:
            raise ValueError("loss.idm_coeff > 0 needs model.inverse_dynamics_hidden")

    def forward(self, obs: torch.Tensor, actions: torch.Tensor):
        """obs (B, T, H, W, C), actions (B, T-1, A) -> (loss, aux dict of scalars)."""
        c = self.cfg
        emb = self.encoder(obs)  # (B, T, D)
        emb_pred = scale_prediction_gradient(emb, self.keypoint_dims,
                                             c["pred_grad_scale_keypoints"],
                                             c["pred_grad_scale_global"])
        s, preds = emb_pred[:, 0], []
        for t in range(actions.shape[1]):
            s = self.predictor(s, actions[:, t])
            preds.append(s)
        pred = torch.stack(preds, 1)  # (B, T-1, D)
        aux = {"invariance": (pred - emb_pred[:, 1:]).square().mean()}
        loss = c["sim_coeff"] * aux["invariance"]
        if c["regularizer"] == "vicreg":
            per_step = emb_pred.transpose(0, 1)  # (T, B, D)
            aux["variance"] = variance_loss(per_step)
            aux["covariance"] = covariance_loss(per_step)
            loss = loss + c["std_coeff"] * aux["variance"] + c["cov_coeff"] * aux["covariance"]
        elif c["regularizer"] == "sigreg":
            aux["sigreg"] = sigreg(emb_pred.reshape(-1, emb.shape[-1]), c["num_projections"])
            loss = loss + c["sigreg_coeff"] * aux["sigreg"]
        if c["idm_coeff"]:
            act = self.inverse(emb[:, :-1], emb[:, 1:])
            aux["inverse_dynamics"] = (act - actions).square().mean()
            loss = loss + c["idm_coeff"] * aux["inverse_dynamics"]
        # Moving part (keypoints) and static part (global code); the whole latent for both
        # when the encoder has no keypoint dimensions.
        k = self.keypoint_dims
        moving = emb[..., :k] if k else emb
        static = emb[..., k:] if k else emb
        if c["smoothness_coeff"]:
            aux["smoothness"] = (static[:, 1:] - static[:, :-1]).square().sum(-1).mean()
            loss = loss + c["smoothness_coeff"] * aux["smoothness"]
        if c["straightness_coeff"]:
            v = emb[:, 1:] - emb[:, :-1]
            v0, v1 = v[:, :-1], v[:, 1:]
            cos = (v0 * v1).sum(-1) / torch.sqrt(
                (v0.square().sum(-1) + 1e-8) * (v1.square().sum(-1) + 1e-8))
            aux["straightness"] = (1.0 - cos).mean()
            loss = loss + c["straightness_coeff"] * aux["straightness"]
        if c["temporal_std_coeff"]:
            aux["temporal_variance"] = variance_loss(moving)  # over T, per trajectory
            loss = loss + c["temporal_std_coeff"] * aux["temporal_variance"]
        aux["embedding_std"] = emb.detach().reshape(-1, emb.shape[-1]).std(0, correction=0).mean()
        aux["loss"] = loss
        return loss, aux


# ---------------------------------------------------------------------------- optimizer


def warmup_cosine(cfg: Any):
    """``optax.warmup_cosine_decay_schedule`` as a multiplier of the peak learning rate."""
    warmup = cfg.warmup_steps
    decay = max(cfg.num_steps, warmup + 1) - warmup
    alpha = cfg.final_lr_fraction

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        frac = min(step - warmup, decay) / decay
        return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha

    return factor


class Trainer:
    """AdamW (warmup-cosine schedule) after global-norm clipping, as ``make_optimizer``.

    ``compile=True`` runs the loss through ``torch.compile`` (forward and, via AOTAutograd,
    backward); the optimizer step (a few ms for ~0.5M parameters) stays eager.
    """

    def __init__(self, loss: JEPALoss, cfg: Any, *, compile: bool = False,
                 compile_mode: str | None = None):
        self.loss = loss
        self.params = [p for p in loss.parameters() if p.requires_grad]
        self.lr_factor = warmup_cosine(cfg)
        self.peak_lr = cfg.learning_rate
        self.grad_clip = cfg.grad_clip
        self.lr = torch.tensor(self.peak_lr * self.lr_factor(0))
        self.opt = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=cfg.weight_decay,
                                     eps=1e-8, betas=(0.9, 0.999))
        self.step_count = 0
        self.loss_fn = torch.compile(loss, mode=compile_mode) if compile else loss

    def _clip_and_step(self):
        grads = [p.grad for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        # optax.clip_by_global_norm: g * max_norm / norm when norm >= max_norm.
        scale = torch.where(norm < self.grad_clip, 1.0, self.grad_clip / norm)
        torch._foreach_mul_(grads, scale)
        self.opt.step()
        return norm

    def step(self, obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on a batch; returns the aux scalars (tensors, no host sync)."""
        self.lr.fill_(self.peak_lr * self.lr_factor(self.step_count))
        self.opt.zero_grad(set_to_none=True)
        loss, aux = self.loss_fn(obs, actions)
        loss.backward()
        aux = dict(aux)
        aux["grad_norm"] = self._clip_and_step()
        self.step_count += 1
        return aux


# ----------------------------------------------------------------------------- planning


def horizon_weights(horizon: int, discount: float) -> torch.Tensor:
    """``jepa_jax.cost.horizon_weights``: ``discount**(H - t)`` normalised to sum 1."""
    w = torch.tensor([discount ** (horizon - 1 - i) for i in range(horizon)], dtype=torch.float64)
    return (w / w.sum()).float()


def clip_by_norm(actions: torch.Tensor, bound: float) -> torch.Tensor:
    """Projects each action (last axis) onto the norm ball of radius ``bound``."""
    if bound is None or math.isinf(bound):
        return actions
    n2 = actions.square().sum(-1, keepdim=True)
    safe = torch.sqrt(torch.where(n2 > 0, n2, 1.0))
    return actions * torch.where(n2 > bound**2, bound / safe, 1.0)


class GradientPlanner:
    """Twin of the gradient MPC planner (``jepa_jax.planning.gradient``: offset or segment
    restarts, Adam, projection to the norm ball), batched over problems and restarts.

    ``plan(obs (P, H, W, C), goal_obs (P, H, W, C), init_actions (P, H, A))`` encodes start
    and goal, optimises ``num_restarts`` action sequences per problem for ``num_iters`` Adam
    steps on the dense goal cost of the predictor's rollout, keeps each restart's best
    iterate and returns the best restart's plan ``(P, H, A)`` and an info dict.

    One iteration (cost, gradient by ``torch.func.grad_and_value``, best-iterate bookkeeping,
    Adam step, projection) is one function; ``compile=True`` wraps it, the encoder and the
    cost in ``torch.compile`` (``fullgraph=True``, static shapes): the iteration is then
    the analogue of the JAX planner's jitted ``lax.scan`` body, and only the loop over
    iterations stays in Python.
    """

    def __init__(self, encoder: ConvEncoder, predictor: MLPPredictor, planning_cfg: Any,
                 action_bound: float, *, shift: int | None = None, compile: bool = False,
                 compile_mode: str | None = None):
        g, cost = planning_cfg.gradient, planning_cfg.cost
        checks = {"optimizer": (g.get("optimizer", "adam"), "adam"),
                  "bound_mode": (g.get("bound_mode", "project"), "project"),
                  "restart_init": (g.get("restart_init", "offset"), ("offset", "segments"))}
        for key, (value, want) in checks.items():
            if value not in (want if isinstance(want, tuple) else (want,)):
                raise NotImplementedError(f"torch twin planner needs {key} in {want!r}, got "
                                          f"{value!r}")
        if g.get("action_noise", 0.0):
            raise NotImplementedError("torch twin planner has no action_noise")
        if cost.get("constraint_weight", 0.0) or cost.get("critic_weight", 0.0):
            raise NotImplementedError("torch twin cost has goal and action terms only")
        # Own frozen copies: planning differentiates with respect to the actions only.
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.predictor = copy.deepcopy(predictor).requires_grad_(False)
        self.horizon, self.num_iters = g.horizon, g.num_iters
        self.num_restarts, self.lr = g.num_restarts, float(g.learning_rate)
        self.restart_std, self.restart_init = float(g.restart_std), g.get("restart_init",
                                                                          "offset")
        self.shift = g.get("shift", 1) if shift is None else shift
        self.shift_fill = g.get("shift_fill", "repeat")
        self.bound = float(action_bound)
        self.goal_weight, self.action_weight = float(cost.goal_weight), float(cost.action_weight)
        if cost.goal_mode == "dense":
            self.weights = horizon_weights(self.horizon, cost.goal_discount)
        else:
            self.weights = torch.zeros(self.horizon)
            self.weights[-1] = 1.0
        self._encode, self._costs, self._iteration = self.encoder, self.costs, self.iteration
        if compile:
            opts = {"fullgraph": True, "dynamic": False, "mode": compile_mode}
            self._encode = torch.compile(self.encoder, **opts)
            self._costs = torch.compile(self.costs, **opts)
            self._iteration = torch.compile(self.iteration, **opts)

    def costs(self, u: torch.Tensor, s0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """u (P, R, H, A), s0 (P, D), goal (P, D) -> per-sequence costs (P, R)."""
        s = s0[:, None].expand(-1, u.shape[1], -1)
        states = []
        for t in range(u.shape[2]):
            s = self.predictor(s, u[:, :, t])
            states.append(s)
        states = torch.stack(states, 2)  # (P, R, H, D)
        d2 = (states - goal[:, None, None]).square().sum(-1)  # (P, R, H)
        c = self.goal_weight * (d2 * self.weights).sum(-1)
        if self.action_weight:
            c = c + self.action_weight * u.square().sum(-1).mean(-1)
        return c

    def iteration(self, u, m, v, best_u, best_c, t, s0, goal):
        """One Adam step of every sequence; ``t`` is the (1-based) step as a float tensor."""
        def total(u):
            c = self.costs(u, s0, goal)
            return c.sum(), c  # sequences are independent: d total / d u_r = d c_r / d u_r

        grad, (_, c) = torch.func.grad_and_value(total, has_aux=True)(u)
        better = c < best_c  # False for NaN
        best_u = torch.where(better[..., None, None], u, best_u)
        best_c = torch.where(better, c, best_c)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad.square()
        m_hat = m / (1 - 0.9**t)
        v_hat = v / (1 - 0.999**t)
        u = clip_by_norm(u - self.lr * m_hat / (torch.sqrt(v_hat) + 1e-8), self.bound)
        return u, m, v, best_u, best_c, c

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, goal_obs: torch.Tensor, init_actions: torch.Tensor,
             generator: torch.Generator | None = None):
        p = obs.shape[0]
        s0 = self._encode(obs)
        goal = self._encode(goal_obs)
        shape = (p, self.num_restarts, 1, init_actions.shape[-1])
        if self.restart_init == "segments":  # full-bound steps along d1 for n steps, then d2
            def unit():
                v = torch.randn(shape, generator=generator)
                return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)

            length = self.restart_std if math.isinf(self.bound) else self.bound
            switch = torch.randint(1, self.horizon + 1, shape[:2] + (1, 1), generator=generator)
            t = torch.arange(self.horizon)[:, None]
            inits = length * torch.where(t < switch, unit(), unit())
        else:  # a random constant offset from the warm start
            inits = init_actions[:, None] + self.restart_std * torch.randn(shape,
                                                                          generator=generator)
        inits[:, 0] = init_actions  # restart 0 is the warm start itself
        u = clip_by_norm(inits, self.bound)  # (P, R, H, A)
        m, v = torch.zeros_like(u), torch.zeros_like(u)
        best_u, best_c = u, torch.full(u.shape[:2], math.inf)
        cost_per_iter = []
        for i in range(self.num_iters):
            t = torch.tensor(float(i + 1))
            u, m, v, best_u, best_c, c = self._iteration(u, m, v, best_u, best_c, t, s0, goal)
            cost_per_iter.append(c)
        c_last = self._costs(u, s0, goal)
        better = c_last < best_c
        best_u = torch.where(better[..., None, None], u, best_u)
        best_c = torch.where(better, c_last, best_c)
        winner = torch.argmin(torch.nan_to_num(best_c, nan=math.inf), dim=1)  # (P,)
        rows = torch.arange(p)
        actions = clip_by_norm(best_u[rows, winner], self.bound)  # (P, H, A)
        final_cost = self._costs(actions[:, None], s0, goal)[:, 0]
        shift = min(self.shift, self.horizon)
        pad = actions[:, -1:] if self.shift_fill == "repeat" else torch.zeros_like(actions[:, -1:])
        warm = torch.cat([actions[:, shift:], pad.expand(-1, shift, -1)], 1)
        info = {"final_cost": final_cost, "restart_costs": best_c,
                "cost_per_iter": torch.stack(cost_per_iter, -1)[rows, winner], "state": warm}
        return actions, info
