"""Checkpoints of the small heads trained on top of a world model (critic, Mode-1 policy).

A head is saved as ``<dir>/<name>.msgpack`` (its parameters, flax serialization) beside
``<dir>/<name>.json`` (the network config and the latent dimension it was trained on), so it
can be rebuilt from the checkpoint alone. Loading checks the latent dimension against the
world model's and the stored parameter shapes against the stored config, and raises a
one-line ``HeadCheckpointError`` on any mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np


class HeadCheckpointError(ValueError):
    """A head checkpoint is missing or does not fit the world model; one-line message."""


def save_head(directory: str | Path, name: str, params: Any, meta: dict[str, Any]) -> Path:
    """Writes ``name.msgpack`` and ``name.json`` into ``directory``; returns the JSON path.

    ``meta`` must hold ``latent_dim``; values must be JSON-serialisable.
    """
    if "latent_dim" not in meta:
        raise ValueError("head metadata needs latent_dim")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    host = jax.tree.map(np.asarray, jax.device_get(params))
    (directory / f"{name}.msgpack").write_bytes(flax.serialization.msgpack_serialize(host))
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"name": name, **meta}, indent=2))
    return path


def load_head(directory: str | Path, name: str, latent_dim: int, in_dim: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """``(params, meta)`` of the head ``name`` saved in ``directory``.

    ``in_dim``: the input width the head's first Dense layer must have (e.g. ``3 *
    latent_dim`` for a head on ``(s, g, s - g)``); None: not checked.

    Raises:
      HeadCheckpointError: files missing, or trained for another latent dimension.
    """
    directory = Path(directory)
    meta_path, params_path = directory / f"{name}.json", directory / f"{name}.msgpack"
    if not meta_path.exists() or not params_path.exists():
        raise HeadCheckpointError(f"no {name} checkpoint in {directory} "
                                  f"(expected {name}.json and {name}.msgpack)")
    meta = json.loads(meta_path.read_text())
    if meta.get("latent_dim") != latent_dim:
        raise HeadCheckpointError(
            f"{name} checkpoint in {directory} was trained on latents of dimension "
            f"{meta.get('latent_dim')}, but this world model's encoder gives {latent_dim}")
    params = jax.tree.map(np.asarray,
                          flax.serialization.msgpack_restore(params_path.read_bytes()))
    if in_dim is not None and first_kernel_in_dim(params) != in_dim:
        raise HeadCheckpointError(
            f"{name} checkpoint in {directory} has input width {first_kernel_in_dim(params)}, "
            f"expected {in_dim} for latent dimension {latent_dim}")
    return params, meta


def first_kernel_in_dim(params: Any) -> int:
    """Input width of the first Dense layer (``Dense_0``) of a Linen MLP's parameters."""
    return int(params["params"]["Dense_0"]["kernel"].shape[0])
