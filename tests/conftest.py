"""Shared test setup: a persistent XLA compilation cache so repeated runs compile less."""

import os
from pathlib import Path

import jax

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JEPA_JAX_CACHE",
                                 str(Path.home() / ".cache" / "jepa_jax" / "xla-tests")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
