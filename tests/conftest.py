"""Shared test setup: a persistent XLA compilation cache so repeated runs compile less, and
the untrained tiny maze models of tests/test_hjepa*.py."""

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JEPA_JAX_CACHE",
                                 str(Path.home() / ".cache" / "jepa_jax" / "xla-tests")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _tiny_maze_models(kind: str):
    from experiments.mazes import get_config
    from jepa_jax.hjepa_training import build

    config = get_config("tiny")
    config.level2.kind = kind
    env, wm, l2 = build(config)
    params = {"l1": wm.init(jax.random.key(0)), "l2": l2.init(jax.random.key(1))}
    return config, env, wm, l2, params


@pytest.fixture(scope="session")
def tiny_maze_models():
    """``(kind) -> (config, env, wm, l2, params)``: the maze ``tiny`` preset with
    ``level2.kind = kind``, initialised, untrained."""
    return _tiny_maze_models
