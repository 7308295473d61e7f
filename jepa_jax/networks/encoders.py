"""Encoders ``s = Enc(x)``: a small conv net for pixels and an MLP for state vectors.

Flax Linen modules; everything outside ``networks/`` sees them only through
``module.apply(params, ...)`` with an explicit parameter pytree. ``dtype`` is the compute
dtype of the convolutions and dense layers (e.g. bfloat16); parameters stay float32 and
the returned latents are float32 (softmaxes and the output in float32 too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax.networks.activations import gelu


def spatial_softmax(features: jax.Array, temperature: jax.Array | float = 1.0) -> jax.Array:
    """Expected image coordinates of each feature map under a softmax over pixels.

    Args:
      features: (..., H, W, K) feature maps.
      temperature: softmax temperature (scalar).

    Returns:
      (..., K, 2) expected ``(x, y)`` in pixel units of the feature map (0 .. W-1, 0 .. H-1).
    """
    *batch, h, w, k = features.shape
    logits = features.reshape(*batch, h * w, k) / temperature
    attn = jax.nn.softmax(logits, axis=-2)
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=features.dtype),
                          jnp.arange(w, dtype=features.dtype), indexing="ij")
    grid = jnp.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # (H*W, 2)
    return jnp.einsum("...pk,pc->...kc", attn, grid)


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
    """(N, H, W, C) -> (N, ceil(H/f), ceil(W/f), f*f*C), zero-padding H and W up to multiples.

    A stride-f patchify that turns a few-channel image into a many-channel one: XLA's CPU
    convolutions are far more efficient on many input channels (measured in benchmarks/).
    """
    n, h, w, c = x.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    h, w = (h + ph) // factor, (w + pw) // factor
    x = x.reshape(n, h, factor, w, factor, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, factor * factor * c)


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
    """(N, H, W, f*f*C) -> (N, f*H, f*W, C): the inverse of :func:`space_to_depth`."""
    n, h, w, c = x.shape
    c //= factor * factor
    x = x.reshape(n, h, w, factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * factor, w * factor, c)


def conv_same_via_s2d(x: jax.Array, kernel: jax.Array, factor: int) -> jax.Array:
    """A stride-1 'SAME' convolution of full-resolution images, computed in space-to-depth
    form; the result equals ``lax.conv`` with the same kernel.

    XLA's CPU convolutions are slow on few-channel, full-resolution inputs (a 5x5 conv of
    the one-channel wall image cost several times the rest of the encoder). Here the kernel
    is scattered into an equivalent (2R+1, 2R+1, f*f*C, f*f*O) kernel over f x f cells, a
    dense many-channel conv at 1/f of the resolution, and the output goes back to full
    resolution with :func:`depth_to_space`. Gradients reach ``kernel`` through the scatter.

    Args:
      x: (N, H, W, C) images.
      kernel: (k, k, C, O) with k odd.
      factor: the cell size f.

    Returns:
      (N, H, W, O).
    """
    n, h, w, c = x.shape
    k, _, _, o = kernel.shape
    r, f = k // 2, factor
    cells = (r + f - 1) // f  # cell radius R: input offsets up to r reach this many cells
    cy = np.arange(-cells, cells + 1)[:, None, None]
    iy = np.arange(f)[None, :, None]
    oy = np.arange(f)[None, None, :]
    d = cy * f + iy - oy  # (2R+1, f, f): pixel offset for (cell, input sub, output sub)
    valid = np.abs(d) <= r
    idx = np.clip(d + r, 0, k - 1)
    big = kernel[idx[:, None, :, None, :, None], idx[None, :, None, :, None, :]]
    mask = valid[:, None, :, None, :, None] & valid[None, :, None, :, None, :]
    big = jnp.where(mask[..., None, None], big, 0.0)  # (cy, cx, iy, ix, oy, ox, C, O)
    big = big.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(2 * cells + 1, 2 * cells + 1,
                                                        f * f * c, f * f * o)
    y = jax.lax.conv_general_dilated(space_to_depth(x, f), big.astype(x.dtype), (1, 1),
                                     "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return depth_to_space(y, f)[:, :h, :w]


def glimpse(images: jax.Array, centre: jax.Array, radius: int) -> jax.Array:
    """Bilinear crop around a point: images (N, H, W, C), centre (N, 2) as (x, y) pixels ->
    (N, 2r+1, 2r+1, C) sampled at ``centre + (dx, dy)`` for integer offsets in [-r, r];
    coordinates outside the image take the nearest border pixel."""
    n, h, w, _ = images.shape
    offs = jnp.arange(-radius, radius + 1, dtype=centre.dtype)
    gx = centre[:, 0, None] + offs  # (N, S)
    gy = centre[:, 1, None] + offs
    x0, y0 = jnp.floor(gx), jnp.floor(gy)
    fx, fy = gx - x0, gy - y0
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    rows = jnp.arange(n)[:, None, None]

    def at(yi, xi):
        yi = jnp.clip(yi, 0, h - 1)[:, :, None]
        xi = jnp.clip(xi, 0, w - 1)[:, None, :]
        return images[rows, yi, xi]  # (N, S, S, C)

    wy, wx = fy[:, :, None, None], fx[:, None, :, None]
    return ((1 - wy) * (1 - wx) * at(y0, x0) + (1 - wy) * wx * at(y0, x0 + 1)
            + wy * (1 - wx) * at(y0 + 1, x0) + wy * wx * at(y0 + 1, x0 + 1))


def _blur_init(noise: float):
    """Kernel init: a box blur (normalised over the window and input channels) plus noise."""
    def init(key, shape, dtype=jnp.float32):
        kh, kw, cin, _ = shape
        box = jnp.full(shape, 1.0 / (kh * kw * cin), dtype)
        return box * (1.0 + noise * jax.random.normal(key, shape, dtype))
    return init


class ConvEncoder(nn.Module):
    """Pixel encoder: a space-to-depth stem and conv trunk, then keypoints and a global code.

    The keypoint half (spatial softmax over learned feature maps) gives coordinates that move
    linearly with objects in the image, which keeps latent distances meaningful for planning;
    the global half (space-to-depth and a dense layer) captures the layout, such as where the
    wall and the door are.

    Attributes:
      stem_factor: space-to-depth factor applied to the input (the trunk's stride).
      channels: output channels of the trunk's 3x3 conv layers (stride 1).
      num_keypoints: K keypoints -> 2K latent dimensions.
      global_dim: dimensions of the global code.
      keypoint_scale: keypoint coordinates are in units of this many input pixels, so that
        their spread across a batch is of order 1 (VICReg's variance hinge is at 1).
      latent_dim: if set, a final linear map to this size; else the concatenation is returned.
      keypoint_channels: if set, the keypoints come from a separate full-resolution branch
        (one ``keypoint_kernel`` conv) that sees only these input channels, e.g. the agent
        channel of a world that renders moving objects and static layout apart; the global
        code still sees every channel. None: keypoints from the shared trunk.
      keypoint_kernel: kernel size of that branch's conv. Its kernels start as a box blur
        (plus noise), so each keypoint starts on the bright blob it is meant to follow.
      init_temperature: initial softmax temperature of the keypoints; low values start them
        sharp, so they move with the object from the first step.
      layout_keypoints: L extra keypoints placed after the keypoints (so the latent is
        [keypoints, layout keypoints, global code]): a linear, precise code for where static
        structure such as a wall or door is.
      layout_channels: if set, the layout keypoints come from a full-resolution branch (one
        ``layout_kernel`` conv, its own softmax temperature) that sees only these input
        channels, e.g. the wall channel; None: from the shared trunk (all channels).
      layout_kernel: kernel size of that branch's conv. Its kernels start as a noisy box
        blur, so each layout keypoint starts near the mean of the structure and the variance
        term pushes them apart onto what differs between episodes (the wall, the door).

      dtype: compute dtype of the conv and dense layers (parameters stay float32).
      glimpse_radius: r > 0 appends the ``(2r+1)^2 * len(glimpse_channels)`` pixels of the
        ``glimpse_channels`` around the first keypoint (bilinear, egocentric; e.g. the walls
        next to the agent in a maze), placed after the layout keypoints: a local view that
        does not depend on where in the image the agent is. 0: none (the default).
      keypoint_log_eps: eps > 0 feeds ``log(x + eps)`` of the keypoint channels to their
        branch. Why: a spatial softmax of a conv of the blob itself is sharp enough to find
        the blob only at a low temperature, where it snaps to the nearest pixel (up to 0.7
        px off; in a maze, across a wall line). Of the log it is ``x^(w/T)``, a Gaussian
        with the blob's centre at any temperature, so at ``T ~ w`` the keypoint is the
        blob's sub-pixel centre (background mass ``eps`` per pixel).
      map_stride: s > 0 appends the ``glimpse_channels`` pixels at every s-th row and column
        (a coarse map of the whole layout, e.g. the maze's wall segments; no parameters),
        after the glimpse. 0: none (the default).

    Latent size: 2K + 2L + G + M + global_dim (G the glimpse, M the map), or latent_dim.

    Input (..., H, W, C) float images; output float32 (..., 2K + global_dim) or
    (..., latent_dim).

    ``static_layout_axis`` (a call argument): the index of a batch axis along which the
    layout channels are constant, e.g. 1 (time) for (B, T, H, W, C) trajectories of a world
    whose walls do not move within an episode. The layout branch then runs on the first
    element of that axis only and its keypoints are broadcast along it: the same output and
    gradients, at 1/T of the branch's cost (it is the most expensive part of the encoder on
    CPU). Only valid when those channels really are constant along the axis.
    """

    stem_factor: int = 4
    channels: Sequence[int] = (32,)
    num_keypoints: int = 16
    global_dim: int = 32
    keypoint_scale: float = 8.0
    latent_dim: int | None = None
    keypoint_channels: tuple[int, ...] | None = None
    keypoint_kernel: int = 5
    init_temperature: float = 1.0
    layout_keypoints: int = 0
    layout_channels: tuple[int, ...] | None = None
    layout_kernel: int = 5
    dtype: Any = jnp.float32
    glimpse_radius: int = 0
    glimpse_channels: tuple[int, ...] = (1,)
    map_stride: int = 0
    keypoint_log_eps: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, static_layout_axis: int | None = None) -> jax.Array:
        *batch, h, w, c = x.shape
        if static_layout_axis is not None and not -len(batch) <= static_layout_axis < len(batch):
            raise ValueError(f"static_layout_axis={static_layout_axis} is not a batch axis of "
                             f"input shape {tuple(x.shape)}")
        raw, images = x, x.reshape(-1, h, w, c)
        x = space_to_depth(images, self.stem_factor)
        f32 = jnp.float32  # keypoint softmaxes and the latent: float32 whatever the dtype
        for ch in self.channels:
            x = gelu(nn.Conv(ch, (3, 3), padding="SAME", dtype=self.dtype)(x))
        temperature = jnp.exp(self.param(
            "log_temperature", nn.initializers.constant(jnp.log(self.init_temperature)), ()))
        if self.keypoint_channels is None:
            kp_maps = nn.Conv(self.num_keypoints, (1, 1), dtype=self.dtype)(x)
            kp = spatial_softmax(kp_maps.astype(f32), temperature)  # (N, K, 2) in trunk cells
            # Cell i covers input pixels [f*i, f*i + f), centre f*i + (f-1)/2.
            kp = kp * self.stem_factor + (self.stem_factor - 1) / 2
        else:
            sel = images[..., list(self.keypoint_channels)]
            if self.keypoint_log_eps:  # see the class docstring
                sel = jnp.log(sel.astype(f32) + self.keypoint_log_eps).astype(sel.dtype)
            k = self.keypoint_kernel
            kp_maps = nn.Conv(self.num_keypoints, (k, k), padding="SAME",
                              kernel_init=_blur_init(0.1), dtype=self.dtype)(sel)
            kp = spatial_softmax(kp_maps.astype(f32), temperature)  # (N, K, 2) in input pixels
        parts = [(kp / self.keypoint_scale).reshape(kp.shape[0], -1)]
        if self.layout_keypoints and self.layout_channels is None:
            lay_maps = nn.Conv(self.layout_keypoints, (1, 1), name="layout_keypoints",
                               dtype=self.dtype)(x)
            lay = spatial_softmax(lay_maps.astype(f32))
            lay = (lay * self.stem_factor + (self.stem_factor - 1) / 2) / self.keypoint_scale
            parts.append(lay.reshape(lay.shape[0], -1))
        elif self.layout_keypoints:
            k, sel = self.layout_kernel, raw[..., list(self.layout_channels)]
            if static_layout_axis is not None:  # one frame per trajectory (see docstring)
                sel = jnp.take(sel, 0, axis=static_layout_axis % len(batch))
            sel = sel.reshape(-1, h, w, sel.shape[-1])
            kernel = self.param("layout_kernel", _blur_init(1.0),
                                (k, k, sel.shape[-1], self.layout_keypoints))
            lay_maps = conv_same_via_s2d(sel.astype(self.dtype), kernel,
                                         self.stem_factor).astype(f32)  # no bias: softmax
            lay_temperature = jnp.exp(self.param(
                "layout_log_temperature", nn.initializers.constant(jnp.log(0.1)), ()))
            lay = spatial_softmax(lay_maps, lay_temperature) / self.keypoint_scale
            if static_layout_axis is not None:
                axis = static_layout_axis % len(batch)
                lay = lay.reshape(*batch[:axis], *batch[axis + 1:], -1)
                lay = jnp.broadcast_to(jnp.expand_dims(lay, axis), (*batch, lay.shape[-1]))
            parts.append(lay.reshape(images.shape[0], -1))
        if self.glimpse_radius:  # the raw pixels around the first keypoint (no parameters)
            centre = jax.lax.stop_gradient(kp[:, 0])
            patch = glimpse(images[..., list(self.glimpse_channels)].astype(f32), centre,
                            self.glimpse_radius)
            parts.append(patch.reshape(patch.shape[0], -1))
        if self.map_stride:  # a coarse, parameter-free map of those channels (the layout)
            coarse = images[:, ::self.map_stride, ::self.map_stride,
                            list(self.glimpse_channels)].astype(f32)
            parts.append(coarse.reshape(coarse.shape[0], -1))
        g = space_to_depth(x, 2)
        parts.append(nn.Dense(self.global_dim, dtype=self.dtype)(
            g.reshape(g.shape[0], -1)).astype(f32))
        out = jnp.concatenate(parts, -1)
        if self.latent_dim is not None:
            out = nn.Dense(self.latent_dim, dtype=self.dtype)(out).astype(f32)
        return out.reshape(*batch, out.shape[-1])


class MLPEncoder(nn.Module):
    """State-vector encoder: an MLP from (..., state_dim) to (..., latent_dim)."""

    hidden: Sequence[int] = (128, 128)
    latent_dim: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = gelu(nn.Dense(width, dtype=self.dtype)(x))
        return nn.Dense(self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)
